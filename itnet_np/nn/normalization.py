"""Normalisation layers over :mod:`itnet_np.nn.functional.normalization`: BatchNorm1d/2d, GroupNorm.

BatchNorm keeps running statistics as buffers (saved by state_dict and itn.save, restored by
load_state_dict): running_mean (zeros), running_var (ones) and num_batches_tracked (an int64
count). In training mode it normalises with the batch statistics and updates the buffers in
place with ``momentum`` (None: a cumulative average, factor 1 / num_batches_tracked); in eval
mode it normalises with the running statistics. weight starts at ones and bias at zeros (torch).
"""
import numbers

import numpy as np

from ..errors import ConfigError, ShapeError
from . import functional as F
from .functional._args import array_of, positive
from .layers import _dtype
from .module import Module, Parameter


def _count(name, arg, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{name}: {arg} must be a positive int, got {value!r}")
    return int(value)


class _BatchNorm(Module):
    ranks = ()

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 dtype=None):
        super().__init__()
        name = type(self).__name__
        self.num_features = _count(name, "num_features", num_features)
        if momentum is not None and (isinstance(momentum, bool) or not isinstance(momentum, numbers.Real)
                                     or not 0 <= momentum <= 1):
            raise ConfigError(f"{name}: momentum must be a number in [0, 1] or None, got {momentum!r}")
        self.eps = positive(name, "eps", eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        dtype, c = _dtype(dtype), self.num_features
        self.weight = Parameter(np.ones(c, dtype)) if affine else None
        self.bias = Parameter(np.zeros(c, dtype)) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(c, dtype))
            self.register_buffer("running_var", np.ones(c, dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))

    def forward(self, x):
        shape = tuple(array_of(type(self).__name__, x).shape)
        if len(shape) not in self.ranks:
            raise ShapeError(f"{type(self).__name__}: expected an input with {' or '.join(map(str, self.ranks))} "
                             f"dimensions (N, C, ...), got shape {shape}")
        track = self.track_running_stats
        batch_stats = self.training or not track
        momentum = 0.0
        if self.training and track:
            self.num_batches_tracked += 1  # in place: the buffer array itself is updated
            momentum = self.momentum if self.momentum is not None else 1.0 / int(self.num_batches_tracked)
        return F.batch_norm(x, self.running_mean if track else None, self.running_var if track else None,
                            self.weight, self.bias, training=batch_stats, momentum=momentum, eps=self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) inputs per channel (see the module docstring)."""
    ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) inputs per channel (see the module docstring)."""
    ranks = (4,)


class GroupNorm(Module):
    """Group normalisation of (N, C, *): C splits into num_groups groups, each (sample, group)
    normalised over its values; per-channel weight (ones) and bias (zeros) when ``affine``."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, dtype=None):
        super().__init__()
        name = "GroupNorm"
        self.num_groups = _count(name, "num_groups", num_groups)
        self.num_channels = _count(name, "num_channels", num_channels)
        if self.num_channels % self.num_groups:
            raise ConfigError(f"{name}: num_channels={num_channels} is not divisible by num_groups={num_groups}")
        self.eps, self.affine = positive(name, "eps", eps), bool(affine)
        dtype = _dtype(dtype)
        self.weight = Parameter(np.ones(self.num_channels, dtype)) if affine else None
        self.bias = Parameter(np.zeros(self.num_channels, dtype)) if affine else None

    def forward(self, x):
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"
