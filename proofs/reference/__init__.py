"""Conventional layers written straight from their published formulas, in plain NumPy.

This package is the independent side of every equivalence test in itnet-np: it imports only numpy (and
nothing from itnet_np), prefers explicit loops where they mirror the formula, and quotes the formula and
its source in each docstring. Inputs are converted to float64 (complex128 where an SSM is complex);
outputs are float64. Weights use PyTorch's parameter layouts. Errors are plain ValueError.

Modules:
- conv:             conv1d_ref, conv2d_ref (torch Conv1d/Conv2d incl. stride, dilation, groups, 'same')
- attention:        sdpa_ref (torch SDPA), mha_ref (nn.MultiheadAttention, batch_first), alibi_slopes,
                    alibi_bias, t5_relative_bucket, t5_bias
- recurrent:        rnn_ref, gru_ref, lstm_ref (torch nn.RNN/GRU/LSTM, batch_first, one layer)
- mamba:            selective_scan_ref, selective_scan_kernel_ref (Mamba S6), segsum_ref, ssd_ref,
                    ssd_recurrent_ref (Mamba-2 SSD)
- ssm:              s4d_discretize, s4d_recurrent_ref, s4d_kernel_ref, fft_causal_conv_ref (S4D)
- linear_attention: causal_linear_attention_ref (parallel), causal_linear_attention_recurrent_ref,
                    linear_attention_layer_ref (projections, heads and output map around them)

Cross-checks: tests/proofs/test_reference.py (against torch when installed, and torch-free identities).
"""
from .attention import alibi_bias, alibi_slopes, mha_ref, sdpa_ref, t5_bias, t5_relative_bucket
from .conv import conv1d_ref, conv2d_ref, conv_output_size
from .linear_attention import (
    causal_linear_attention_recurrent_ref,
    causal_linear_attention_ref,
    elu_plus_one,
    linear_attention_layer_ref,
)
from .mamba import (
    segsum_ref,
    selective_scan_kernel_ref,
    selective_scan_ref,
    softplus_torch,
    ssd_recurrent_ref,
    ssd_ref,
)
from .recurrent import gru_ref, lstm_ref, rnn_ref, sigmoid
from .ssm import fft_causal_conv_ref, s4d_discretize, s4d_kernel_ref, s4d_recurrent_ref

__all__ = [
    "alibi_bias", "alibi_slopes", "causal_linear_attention_recurrent_ref", "causal_linear_attention_ref",
    "conv1d_ref", "conv2d_ref", "conv_output_size", "elu_plus_one", "fft_causal_conv_ref", "gru_ref",
    "linear_attention_layer_ref", "lstm_ref", "mha_ref", "rnn_ref", "s4d_discretize", "s4d_kernel_ref",
    "s4d_recurrent_ref", "sdpa_ref", "segsum_ref", "selective_scan_kernel_ref", "selective_scan_ref",
    "sigmoid", "softplus_torch", "ssd_recurrent_ref", "ssd_ref", "t5_bias", "t5_relative_bucket",
]
