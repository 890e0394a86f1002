"""Pooling with torch's conventions: max_pool1d/2d, avg_pool1d/2d, adaptive_avg_pool1d/2d.

Layout (N, C, L) / (N, C, H, W), or the same without N. With kernel k, stride s (default k) and
padding p on each side (p <= k / 2, as torch), each spatial axis has

    L_out = floor((L + 2 p - k) / s) + 1   windows  W_i = {s i - p, ..., s i - p + k - 1}

    max_pool:  out[n, c, i] = max_{j in W_i} x[n, c, j]                 (padding is -inf)
    avg_pool:  out[n, c, i] = sum_{j in W_i} x[n, c, j] / |W_i|          (padding is 0; |W_i| = k
               with count_include_pad, else the number of positions of W_i inside [0, L))

(products of such windows in 2-D). avg_pool is unfold (im2col, from conv) plus a mean: linear,
differentiable to any order. max_pool finds each window's first maximum on raw arrays (torch's
tie rule: the gradient goes to one element) and is then the gather x[index]: its gradient is
getitem's scatter-add (windows may overlap) and, being linear in x for a fixed index, exact to
any order. No -inf ever enters a recorded op, so detect_anomaly() passes on finite input.

adaptive_avg_pool averages bins [floor(i L / out), ceil((i + 1) L / out)) (torch's formula): a
fixed averaging matrix P (out, L) applied to the last axis, out = x P^T, once per spatial axis.
"""
import math

import numpy as np

from ...autograd.backend import xp_of
from ...autograd.ops import getitem, matmul, mean, pad, reshape, swapaxes
from ...autograd.ops import sum as _sum
from ...errors import ConfigError, DTypeError, ShapeError
from ._args import array_of, ints
from .conv import unfold

_SPATIAL = {1: "L", 2: "H, W"}


def _input(name, nd, x):
    d = array_of(name, x)
    if d.ndim not in (nd + 1, nd + 2):
        raise ShapeError(f"{name}: input must be (N, C, {_SPATIAL[nd]}) or (C, {_SPATIAL[nd]}), "
                         f"got shape {tuple(d.shape)}")
    if d.dtype.kind != "f":
        raise DTypeError(f"{name}: input must be floating, got {d.dtype}")
    if d.ndim == nd + 1:
        return reshape(x, (1,) + tuple(d.shape)), True
    return x, False


def _windows(name, nd, shape, kernel_size, stride, padding):
    """Checked (kernel, stride, padding, output sizes) for spatial ``shape``."""
    kernel = ints(name, "kernel_size", kernel_size, nd, 1)
    stride = kernel if stride is None else ints(name, "stride", stride, nd, 1)
    padding = ints(name, "padding", padding, nd, 0)
    if any(2 * p > k for p, k in zip(padding, kernel)):
        raise ConfigError(f"{name}: padding {padding} must be at most half of kernel_size {kernel} "
                          "(torch's rule: a window must hold at least one input element)")
    out = tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(shape, kernel, stride, padding))
    if any(o < 1 for o in out):
        raise ShapeError(f"{name}: kernel_size {kernel} is larger than the input's spatial shape {shape} "
                         f"padded by {padding} on each side; every window must fit")
    return kernel, stride, padding, out


def _padded(x, padding, value):
    if not any(padding):
        return x
    return pad(x, ((0, 0), (0, 0)) + tuple((p, p) for p in padding), constant_values=value)


def _max_pool(name, nd, x, kernel_size, stride, padding):
    x, unbatched = _input(name, nd, x)
    d = array_of(name, x)
    shape = tuple(d.shape)
    kernel, stride, padding, out = _windows(name, nd, shape[2:], kernel_size, stride, padding)
    xp = xp_of(d)
    # The search runs on a raw -inf-padded copy; only the gather below is recorded, so no
    # non-finite value passes through an op (anomaly mode stays quiet on finite input).
    cols = unfold(_padded(d, padding, -math.inf), kernel=kernel, stride=stride, dilation=(1,) * nd)
    first = cols.reshape(shape[:2] + (math.prod(kernel),) + out).argmax(axis=2)   # (N, C, *out)
    taps = xp.unravel_index(first, kernel)
    ndim = 2 + nd

    def grid(n, axis):
        return xp.arange(n).reshape([n if a == axis else 1 for a in range(ndim)])
    # A padding position wins only when every input element of its window is -inf; clipping it to
    # the border (which lies in every window that reaches past it, as p <= k / 2) picks one of those.
    index = (grid(shape[0], 0), grid(shape[1], 1)) + tuple(
        xp.clip(grid(out[i], 2 + i) * stride[i] + taps[i] - padding[i], 0, shape[2 + i] - 1) for i in range(nd))
    y = getitem(x, index)
    return reshape(y, tuple(array_of(name, y).shape)[1:]) if unbatched else y


def _avg_pool(name, nd, x, kernel_size, stride, padding, count_include_pad):
    x, unbatched = _input(name, nd, x)
    shape = tuple(array_of(name, x).shape)
    kernel, stride, padding, out = _windows(name, nd, shape[2:], kernel_size, stride, padding)
    taps = math.prod(kernel)
    cols = unfold(_padded(x, padding, 0), kernel=kernel, stride=stride, dilation=(1,) * nd)
    cols = reshape(cols, shape[:2] + (taps,) + out)
    if count_include_pad or not any(padding):
        y = mean(cols, axis=2)
    else:
        d = array_of(name, x)
        inside = _padded(xp_of(d).ones((1, 1) + shape[2:], d.dtype), padding, 0)
        counts = unfold(inside, kernel=kernel, stride=stride, dilation=(1,) * nd).reshape((1, 1, taps) + out)
        y = _sum(cols, axis=2) / counts.sum(axis=2)
    return reshape(y, tuple(array_of(name, y).shape)[1:]) if unbatched else y


def max_pool1d(x, kernel_size, stride=None, padding=0):
    """Max over windows of ``kernel_size`` along L: (N, C, L) or (C, L) -> (..., L_out)."""
    return _max_pool("max_pool1d", 1, x, kernel_size, stride, padding)


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max over kH x kW windows: (N, C, H, W) or (C, H, W) -> (..., H_out, W_out)."""
    return _max_pool("max_pool2d", 2, x, kernel_size, stride, padding)


def avg_pool1d(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    """Mean over windows of ``kernel_size`` along L: (N, C, L) or (C, L) -> (..., L_out)."""
    return _avg_pool("avg_pool1d", 1, x, kernel_size, stride, padding, count_include_pad)


def avg_pool2d(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    """Mean over kH x kW windows: (N, C, H, W) or (C, H, W) -> (..., H_out, W_out)."""
    return _avg_pool("avg_pool2d", 2, x, kernel_size, stride, padding, count_include_pad)


def _bins(length, size, dtype, xp=np):
    """P (size, length): row i averages x[floor(i L / size) : ceil((i + 1) L / size)]; built by
    ``xp`` (on the data's device: no host/device copy)."""
    i = xp.arange(size)
    start = (i * length) // size
    end = -((-(i + 1) * length) // size)
    j = xp.arange(length)
    inside = (j >= start[:, None]) & (j < end[:, None])
    return (inside / (end - start)[:, None]).astype(dtype)


def _adaptive_avg_pool(name, nd, x, output_size):
    x, unbatched = _input(name, nd, x)
    d = array_of(name, x)
    sizes = ints(name, "output_size", output_size, nd, 1)
    if any(n < 1 for n in d.shape[2:]):
        raise ShapeError(f"{name}: input of shape {tuple(d.shape)} has an empty spatial axis")
    xp = xp_of(d)
    y = x
    for axis in range(nd):  # one small matrix per spatial axis, never a loop over positions
        a = -1 - axis
        p = _bins(d.shape[a], sizes[a], d.dtype, xp).T
        y = swapaxes(matmul(swapaxes(y, a, -1), p), a, -1) if a != -1 else matmul(y, p)
    return reshape(y, tuple(array_of(name, y).shape)[1:]) if unbatched else y


def adaptive_avg_pool1d(x, output_size):
    """Average over output_size bins along L (torch's bin formula): (N, C, L) -> (N, C, output_size)."""
    return _adaptive_avg_pool("adaptive_avg_pool1d", 1, x, output_size)


def adaptive_avg_pool2d(x, output_size):
    """Average over output_size (an int or (oH, oW)) bins: (N, C, H, W) -> (N, C, oH, oW)."""
    return _adaptive_avg_pool("adaptive_avg_pool2d", 2, x, output_size)
