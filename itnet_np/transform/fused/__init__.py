"""Fused, tiled CPU kernels (Numba) on raw arrays: the pair matrix is never formed.

- :func:`attention_forward` / :func:`attention_backward`: scaled dot-product kernel with softmax, sum
  or no normalisation, causal / window / per-row source ranges / boolean-mask support, additive bias
  or ALiBi slopes.
- :func:`mlp_forward` / :func:`mlp_backward`: the ITNet MLP kernel
  s_ij^h = W2_h . act(a_i + b_j + W (x_i * y_j)) + b2_h with quadrature weights and the same options.

- :mod:`stencil_numba` / :mod:`stencil_plan`: the StencilKernel (convolution) as a banded
  gather over its taps, O(N·T·d) instead of the dense N x M matrix.
- :mod:`scan_numba` / :mod:`scan_plan`: DecayKernel (diagonal SSM) and SelectiveKernel (Mamba) as
  O(N·state) recurrences, forward and reverse scans (decay factors from clock differences only).
- :mod:`neighbour_attention_numba` / :mod:`neighbour_mlp_numba`: both kernels over CSR neighbour
  lists (:mod:`pair_lists`; radius and D > 1 window supports on point clouds), O(N k) memory.
- :mod:`sorted_plan`: 1-D band supports on unsorted or per-batch positions as row ranges over the
  sources sorted by position.

- :mod:`numba_plans`: the 'numba' backend of IntegralTransform, ``plan(call)`` (planner.py contract),
  mapping a call onto one of the engine ops above (engine_ops.py) or declining it with the reason.

Forward returns (out, stats); backward takes them back and recomputes tiles (FlashAttention-2).
Parity tests against dense NumPy references: tests/transform/test_fused_*_raw.py.
"""
from .attention_numba import attention_backward, attention_forward
from .mlp_numba import mlp_backward, mlp_forward

__all__ = ["attention_backward", "attention_forward", "mlp_backward", "mlp_forward"]
