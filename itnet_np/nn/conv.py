"""Convolution layers: thin Modules over :func:`itnet_np.nn.functional.conv1d` / ``conv2d``.

    y[n, o, i] = b[o] + sum_{c in group(o)} sum_a W[o, c, a] x_pad[n, c, s i + d a]      (Conv1d)

and its two-axis analogue (Conv2d): cross-correlation, as torch.nn.Conv1d / Conv2d. Weight in torch's
layout (C_out, C_in / groups, k[, k]); initialised as torch does: W ~ kaiming_uniform(a = sqrt(5)),
i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in =
(C_in / groups) * prod(k). Input (N, C_in, L) / (N, C_in, H, W), or the same without N.
"""
import math

import numpy as np

from ..errors import ConfigError
from . import functional as F
from . import init
from .functional._args import ints
from .layers import _dtype
from .module import Module, Parameter


class _ConvNd(Module):
    nd, function = 1, None

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, rng=None, dtype=None):
        super().__init__()
        name = type(self).__name__
        dtype, rng = _dtype(dtype), init._generator(rng)
        self.in_channels = ints(name, "in_channels", in_channels, 1, 1)[0]
        self.out_channels = ints(name, "out_channels", out_channels, 1, 1)[0]
        self.kernel_size = ints(name, "kernel_size", kernel_size, self.nd, 1)
        self.stride = ints(name, "stride", stride, self.nd, 1)
        self.dilation = ints(name, "dilation", dilation, self.nd, 1)
        self.groups = ints(name, "groups", groups, 1, 1)[0]
        self.padding = padding
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ConfigError(f"{name}: in_channels={self.in_channels} and out_channels={self.out_channels} "
                              f"must both be divisible by groups={self.groups}")
        shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self.weight = Parameter(np.empty(shape, dtype))
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), rng=rng)
        self.bias = None
        if bias:
            bound = 1.0 / math.sqrt(shape[1] * math.prod(self.kernel_size))
            self.bias = Parameter(rng.uniform(-bound, bound, size=(self.out_channels,)).astype(dtype))

    def forward(self, x):
        return type(self).function(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding!r}, dilation={self.dilation}, groups={self.groups}, "
                f"bias={self.bias is not None}")


class Conv1d(_ConvNd):
    """``Conv1d(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
    bias=True, rng=None, dtype=None)``; padding: an int, 'valid' or 'same' (stride 1)."""
    nd, function = 1, staticmethod(F.conv1d)


class Conv2d(_ConvNd):
    """``Conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
    bias=True, rng=None, dtype=None)``; ints or pairs; padding also 'valid' or 'same' (stride 1)."""
    nd, function = 2, staticmethod(F.conv2d)
