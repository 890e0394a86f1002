"""Stateless neural-network functions (``import itnet_np.nn.functional as F``), torch names and semantics.

Each lives in a module of its own idea: activations, softmax, losses, normalization, dropout,
embedding, linear, conv, pooling. All accept Tensors (recording the graph) or raw arrays (returning
raw arrays), and all are differentiable twice or more.
"""
from .activations import elu, erf, gelu, leaky_relu, relu, sigmoid, silu, softplus
from .conv import conv1d, conv2d
from .dropout import dropout
from .embedding import embedding
from .linear import linear
from .losses import (binary_cross_entropy_with_logits, cross_entropy, huber_loss, l1_loss, mse_loss, nll_loss,
                     relative_l2_loss)
from .normalization import batch_norm, group_norm, layer_norm
from .pooling import adaptive_avg_pool1d, adaptive_avg_pool2d, avg_pool1d, avg_pool2d, max_pool1d, max_pool2d
from .softmax import log_softmax, softmax

__all__ = ["adaptive_avg_pool1d", "adaptive_avg_pool2d", "avg_pool1d", "avg_pool2d", "batch_norm",
           "binary_cross_entropy_with_logits", "conv1d", "conv2d", "cross_entropy", "dropout", "elu",
           "embedding", "erf", "gelu", "group_norm", "huber_loss", "l1_loss", "layer_norm", "leaky_relu",
           "linear", "log_softmax", "max_pool1d", "max_pool2d", "mse_loss", "nll_loss", "relative_l2_loss",
           "relu", "sigmoid", "silu", "softmax", "softplus"]
