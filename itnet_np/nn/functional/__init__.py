"""Stateless neural-network functions (``import itnet_np.nn.functional as F``), torch names and semantics.

Each lives in a module of its own idea: activations, softmax, losses, normalization, dropout,
embedding, linear, conv. All accept Tensors (recording the graph) or raw arrays (returning raw
arrays), and all are differentiable twice or more.
"""
from .activations import erf, gelu, relu, sigmoid, silu, softplus
from .conv import conv1d, conv2d
from .dropout import dropout
from .embedding import embedding
from .linear import linear
from .losses import cross_entropy, mse_loss
from .normalization import layer_norm
from .softmax import log_softmax, softmax

__all__ = ["conv1d", "conv2d", "cross_entropy", "dropout", "embedding", "erf", "gelu", "layer_norm",
           "linear", "log_softmax", "mse_loss", "relu", "sigmoid", "silu", "softmax", "softplus"]
