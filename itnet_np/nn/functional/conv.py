"""conv1d / conv2d with torch's conventions, built from two adjoint primitives and one matmul.

torch's formula (cross-correlation, no kernel flip), written for any number of spatial axes,
zero padding P_lo / P_hi, stride s, dilation d, G groups of C_in/G input channels each:

    out[n, o, i] = b[o] + sum_{c < C_in/G} sum_a W[o, c, a] x[n, g(o) C_in/G + c, s i + d a - P_lo],
    g(o) = floor(o / (C_out/G)),   x = 0 outside [0, L),
    L_out = floor((L + P_lo + P_hi - d (k - 1) - 1) / s) + 1.

Pipeline: zero-pad (the index_put op; its VJP slices the gradient back) -> ``unfold`` (im2col:
one strided view copied once, (N, C, L...) -> (N, C, k..., L_out...)) -> a batched matmul of
(G, C_out/G, C_in/G * K) with (N, G, C_in/G * K, L_out) -> reshape and add the bias.

``fold`` (col2im) is the adjoint of ``unfold``: it scatter-adds columns back onto the input grid
with a loop over the K kernel taps (never over pixels). Each is the other's VJP, both are
linear, so conv is differentiable to any order.
"""
import itertools
import math
import numbers

import numpy as np

from ...autograd.backend import is_cupy, xp_of
from ...autograd.ops import index_put, matmul, reshape
from ...autograd.ops._util import raw
from ...autograd.primitive import primitive
from ...errors import ConfigError, ShapeError
from ._args import array_of, check_dtypes, ints

# ----- the two adjoint primitives -----------------------------------------------------------------


def _out_size(length, k, s, d):
    return (length - d * (k - 1) - 1) // s + 1


def _unfold(x, kernel, stride, dilation):
    nd = len(kernel)
    lengths = x.shape[2:]
    out = tuple(_out_size(lengths[i], kernel[i], stride[i], dilation[i]) for i in range(nd))
    st = x.strides
    shape = tuple(x.shape[:2]) + tuple(kernel) + out
    strides = (st[0], st[1]) + tuple(st[2 + i] * dilation[i] for i in range(nd)) \
        + tuple(st[2 + i] * stride[i] for i in range(nd))
    if is_cupy(x):
        import cupy
        view = cupy.lib.stride_tricks.as_strided(x, shape, strides)
    else:
        view = np.lib.stride_tricks.as_strided(x, shape, strides, writeable=False)
    # Copy: the columns must not alias x (x could be modified in place after the forward).
    return xp_of(x).ascontiguousarray(view)


def _fold(cols, shape, kernel, stride, dilation):
    nd = len(kernel)
    out_sizes = cols.shape[2 + nd:]
    x = xp_of(cols).zeros(shape, dtype=cols.dtype)
    for tap in itertools.product(*(range(k) for k in kernel)):
        # Tap a touches positions d a + s i, i < L_out: a strided slice with no repeats, so
        # a plain += adds correctly; different taps may overlap and are added one after another.
        window = tuple(slice(tap[i] * dilation[i], tap[i] * dilation[i] + stride[i] * (out_sizes[i] - 1) + 1,
                             stride[i]) for i in range(nd))
        x[(slice(None), slice(None)) + window] += cols[(slice(None), slice(None)) + tap]
    return x


# unfold (im2col): (N, C, *L) -> (N, C, *kernel, *L_out), cols[n, c, a, i] = x[n, c, s i + d a].
unfold = primitive(_unfold, "unfold").defvjp(
    lambda g, out, x, kernel, stride, dilation:
        fold(g, shape=tuple(x.shape), kernel=kernel, stride=stride, dilation=dilation))
# fold (col2im), the adjoint: x[n, c, s i + d a] += cols[n, c, a, i] onto zeros of ``shape``.
fold = primitive(_fold, "fold").defvjp(
    lambda g, out, cols, shape, kernel, stride, dilation:
        unfold(g, kernel=kernel, stride=stride, dilation=dilation))

# ----- argument checks ----------------------------------------------------------------------------


def _paddings(name, padding, nd, kernel, stride, dilation):
    """Per-axis (low, high) zero padding from an int, a tuple, 'valid' or 'same'."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * nd
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ConfigError(f"{name}: padding='same' needs stride 1, got stride={stride} "
                                  "(torch does not support 'same' for strided convolutions)")
            # Total d (k - 1); when it is odd the extra zero goes on the right (high) side, as torch.
            totals = [dilation[i] * (kernel[i] - 1) for i in range(nd)]
            return tuple((t // 2, t - t // 2) for t in totals)
        raise ConfigError(f"{name}: padding must be an int, a tuple of {nd} ints, 'same' or 'valid', "
                          f"got {padding!r}")
    return tuple((p, p) for p in ints(name, "padding", padding, nd, 0))


def _check_shapes(name, nd, xs, ws, bias, groups):
    spatial = ("L",) if nd == 1 else ("H", "W")
    if len(xs) not in (nd + 1, nd + 2):
        raise ShapeError(f"{name}: input must be (N, C_in, {', '.join(spatial)}) or (C_in, "
                         f"{', '.join(spatial)}), got shape {xs}")
    if len(ws) != nd + 2:
        raise ShapeError(f"{name}: weight must be (C_out, C_in/groups, {', '.join('k' + s for s in spatial)}), "
                         f"got shape {ws}")
    if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
        raise ConfigError(f"{name}: groups must be a positive int, got {groups!r}")
    c_in = xs[-nd - 1]
    if c_in % groups:
        raise ConfigError(f"{name}: in_channels={c_in} (input shape {xs}) is not divisible by groups={groups}")
    if ws[0] % groups:
        raise ConfigError(f"{name}: out_channels={ws[0]} (weight shape {ws}) is not divisible by groups={groups}")
    if ws[1] * groups != c_in:
        raise ShapeError(
            f"{name}: weight of shape {ws} with groups={groups} expects {ws[1] * groups} input channels "
            f"(weight is (C_out, C_in/groups, k...)), but the input of shape {xs} has C_in={c_in}")
    if bias is not None and tuple(raw(bias).shape) != (ws[0],):
        raise ShapeError(f"{name}: bias has shape {tuple(raw(bias).shape)}, expected ({ws[0]},)")
    if any(k < 1 for k in ws[2:]):
        raise ShapeError(f"{name}: weight of shape {ws} has an empty kernel")


# ----- the convolution ----------------------------------------------------------------------------


def _conv(name, nd, x, weight, bias, stride, padding, dilation, groups):
    xs, ws = tuple(array_of(name, x).shape), tuple(array_of(name, weight, "weight").shape)
    _check_shapes(name, nd, xs, ws, bias, groups)
    check_dtypes(name, input=x, weight=weight, bias=bias)
    kernel = ws[2:]
    stride = ints(name, "stride", stride, nd, 1)
    dilation = ints(name, "dilation", dilation, nd, 1)
    pads = _paddings(name, padding, nd, kernel, stride, dilation)
    unbatched = len(xs) == nd + 1
    if unbatched:
        x = reshape(x, (1,) + xs)
        xs = (1,) + xs
    n, c_in, lengths = xs[0], xs[1], xs[2:]
    padded = tuple(lengths[i] + pads[i][0] + pads[i][1] for i in range(nd))
    out = tuple(_out_size(padded[i], kernel[i], stride[i], dilation[i]) for i in range(nd))
    if any(o < 1 for o in out):
        raise ShapeError(
            f"{name}: output size would be {out} for input shape {xs[2:]} (zero-padded to {padded}), "
            f"kernel {kernel}, dilation {dilation}, stride {stride}; every output size must be >= 1")
    if any(lo or hi for lo, hi in pads):
        inner = tuple(slice(lo, lo + length) for (lo, _), length in zip(pads, lengths))
        x = index_put(x, (n, c_in) + padded, (slice(None), slice(None)) + inner)
    cols = unfold(x, kernel=kernel, stride=stride, dilation=dilation)
    c_out, per_group = ws[0], ws[1] * math.prod(kernel)
    cols = reshape(cols, (n, groups, per_group, math.prod(out)))
    y = matmul(reshape(weight, (groups, c_out // groups, per_group)), cols)
    y = reshape(y, (n, c_out) + out)
    if bias is not None:
        y = y + reshape(bias, (c_out,) + (1,) * nd)
    return reshape(y, (c_out,) + out) if unbatched else y


def conv1d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D cross-correlation, torch layout: x (N, C_in, L) or (C_in, L), weight (C_out, C_in/groups, k),
    bias (C_out,) -> (N, C_out, L_out). padding: an int, (p,), 'valid' or 'same' (stride 1)."""
    return _conv("conv1d", 1, x, weight, bias, stride, padding, dilation, groups)


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D cross-correlation, torch layout: x (N, C_in, H, W) or (C_in, H, W), weight
    (C_out, C_in/groups, kH, kW), bias (C_out,) -> (N, C_out, H_out, W_out). stride, dilation:
    an int or a pair; padding: an int, a pair, 'valid' or 'same' (stride 1)."""
    return _conv("conv2d", 2, x, weight, bias, stride, padding, dilation, groups)
