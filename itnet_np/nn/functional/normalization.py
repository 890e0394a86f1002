"""layer_norm, batch_norm, group_norm: one normalising primitive plus an elementwise affine map.

The three differ only in the axes they normalise over: layer_norm the trailing normalized_shape,
batch_norm every axis but the channels, group_norm each group of channels within a sample.

Over the last k = len(normalized_shape) axes (n elements), with mu and v the mean and the biased
variance there,

    y = (x - mu) r,   r = 1 / sqrt(v + eps),     out = y * weight + bias.

VJP of the normalisation (g = dL/dy, means over the same axes):

    dx = r (g - mean(g) - y mean(g y)),

which holds exactly with eps > 0. It is written with ops on the saved output y and on r
recomputed from x with ops, so it differentiates again. layer_norm with both weight and bias is one
primitive (normalisation and affine map in one pass; dweight = sum g y, dbias = sum g over the
leading axes). Over the trailing axes of a large C-contiguous float array the raw forwards and VJPs
run as fused, multi-threaded passes per row (_cpu_kernels.layer_norm*, gated by _fast.kernels);
the NumPy code beside each call is their reference.
"""
import math
import numbers

from ...autograd.backend import xp_of
from ...autograd.ops import mean, reshape, sqrt
from ...autograd.ops._util import raw
from ...autograd.primitive import primitive
from ...autograd.tensor import Tensor
from ...errors import ConfigError, DTypeError, ShapeError
from ._args import array_of, positive
from ._fast import kernels
from .linear import sum_rows


def _row_kernels(axis, *arrays):
    """(kernels, n) when the fused kernels apply (``axis`` the trailing axes of arrays[0], n the
    number of elements they span), else (None, 0)."""
    k = kernels(*arrays)
    nd = arrays[0].ndim
    if k is None or axis != tuple(range(nd - len(axis), nd)):
        return None, 0
    return k, math.prod(arrays[0].shape[nd - len(axis):])


def _normalize(x, axis, eps):
    k, n = _row_kernels(axis, x)
    if k is not None:
        return k.layer_norm(x, n, eps)
    mu = x.mean(axis=axis, keepdims=True)
    c = x - mu
    return c / xp_of(x).sqrt((c * c).mean(axis=axis, keepdims=True) + eps)


def _normalize_vjp(g, out, x, axis, eps):
    if not isinstance(g, Tensor):
        k, n = _row_kernels(axis, x, g)
        if k is not None:
            return k.layer_norm_grad_x(g, x, n, eps)
    c = x - mean(x, axis=axis, keepdims=True)
    r = 1 / sqrt(mean(c * c, axis=axis, keepdims=True) + eps)
    return r * (g - mean(g, axis=axis, keepdims=True) - out * mean(g * out, axis=axis, keepdims=True))


normalize_p = primitive(_normalize, "layer_normalize", save_output=True).defvjp(_normalize_vjp)


def _layer_norm(x, weight, bias, axis, eps):
    """normalize(x) * weight + bias, weight and bias of the normalised (trailing) shape."""
    k, n = _row_kernels(axis, x, weight, bias)
    if k is not None:
        return k.layer_norm(x, n, eps, weight.reshape(-1), bias.reshape(-1))
    y = _normalize(x, axis, eps)
    y *= weight
    y += bias
    return y


def _layer_norm_dx(g, out, x, weight, bias, axis, eps):
    """The normalisation's VJP applied to g * weight."""
    if not isinstance(g, Tensor):
        k, n = _row_kernels(axis, x, g, weight)
        if k is not None:
            return k.layer_norm_grad_x(g, x, n, eps, weight.reshape(-1))
    return _normalize_vjp(g * weight, normalize_p(x, axis=axis, eps=eps), x, axis, eps)


def _layer_norm_dweight(g, out, x, weight, bias, axis, eps):
    """sum of g * normalize(x) over the leading axes (the engine sums a Tensor result)."""
    if not isinstance(g, Tensor):
        k, n = _row_kernels(axis, x, g)
        if k is not None:
            return k.layer_norm_grad_w(g, x, n, eps).reshape(weight.shape)
    return g * normalize_p(x, axis=axis, eps=eps)


layer_norm_p = primitive(_layer_norm, "layer_norm").defvjp(
    _layer_norm_dx, _layer_norm_dweight,
    lambda g, out, x, weight, bias, axis, eps: sum_rows(g, bias.shape))


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise x over its trailing ``normalized_shape`` axes, then scale by weight, add bias.

    x: (..., *normalized_shape); weight, bias: normalized_shape (or None). Matches
    torch.nn.functional.layer_norm (biased variance, eps inside the square root).
    """
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    xs = tuple(array_of("layer_norm", x).shape)
    k = len(shape)
    if k == 0 or k > len(xs) or xs[len(xs) - k:] != shape:
        raise ShapeError(
            f"layer_norm: input of shape {xs} does not end with normalized_shape {shape} "
            f"(expected (..., {', '.join(map(str, shape))}))")
    if not eps > 0:
        raise ConfigError(f"layer_norm: eps must be > 0, got {eps!r}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(raw(p).shape) != shape:
            raise ShapeError(f"layer_norm: {name} has shape {tuple(raw(p).shape)}, expected {shape}")
    axis = tuple(range(len(xs) - k, len(xs)))
    if weight is not None and bias is not None:
        return layer_norm_p(x, weight, bias, axis=axis, eps=float(eps))
    y = normalize_p(x, axis=axis, eps=float(eps))
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


# ----- batch_norm, group_norm: the same normalisation over other axes ----------------------------------
def _per_channel(name, arg, p, channels, dtype):
    """A (C,) parameter or statistic: None, or an array / Tensor of shape (C,) and x's dtype."""
    if p is None:
        return None
    d = array_of(name, p, arg)
    if tuple(d.shape) != (channels,):
        raise ShapeError(f"{name}: {arg} has shape {tuple(d.shape)}, expected ({channels},) (one per channel)")
    if d.dtype != dtype:
        raise DTypeError(f"{name}: {arg} is {d.dtype} but the input is {dtype}; convert explicitly")
    return p


def _affine(y, weight, bias, ndim):
    """y * weight + bias with (C,) weight and bias broadcast over (N, C, *)."""
    if weight is not None:
        y = y * reshape(weight, (-1,) + (1,) * (ndim - 2))
    if bias is not None:
        y = y + reshape(bias, (-1,) + (1,) * (ndim - 2))
    return y


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
               eps=1e-5):
    """Batch normalisation of x (N, C, *) per channel c, torch.nn.functional.batch_norm.

    training: y = (x - mu_c) / sqrt(v_c + eps) with the batch mean mu_c and biased variance v_c over
    (N, *) -- layer_norm's normalisation over those axes -- and, when running statistics are given,
    they are updated in place (no gradient) with the unbiased variance, as torch:

        running_mean <- (1 - momentum) running_mean + momentum mu
        running_var  <- (1 - momentum) running_var  + momentum v n / (n - 1),   n = N * prod(*).

    eval (training=False): y = (x - running_mean) / sqrt(running_var + eps), constants. Then
    out = y * weight + bias; weight, bias, running_mean, running_var are (C,) arrays or None.
    """
    name = "batch_norm"
    d = array_of(name, x)
    if d.ndim < 2:
        raise ShapeError(f"{name}: input must be (N, C, *), got shape {tuple(d.shape)}")
    channels, ndim = d.shape[1], d.ndim
    eps = positive(name, "eps", eps)
    if isinstance(momentum, bool) or not isinstance(momentum, numbers.Real) or not 0 <= momentum <= 1:
        raise ConfigError(f"{name}: momentum must be a number in [0, 1], got {momentum!r}")
    stats = [_per_channel(name, arg, p, channels, d.dtype) for arg, p in
             (("running_mean", running_mean), ("running_var", running_var))]
    weight, bias = (_per_channel(name, arg, p, channels, d.dtype) for arg, p in (("weight", weight), ("bias", bias)))
    if (stats[0] is None) != (stats[1] is None):
        raise ConfigError(f"{name}: give both running_mean and running_var, or neither")
    axes = (0,) + tuple(range(2, ndim))
    keep = (1, channels) + (1,) * (ndim - 2)
    if training:
        n = d.size // channels if channels else 0
        if n <= 1:
            raise ShapeError(f"{name}: training needs more than one value per channel, got input of shape "
                             f"{tuple(d.shape)} (batch statistics of one value are undefined)")
        y = normalize_p(x, axis=axes, eps=eps)
        if stats[0] is not None:
            rm, rv = raw(stats[0]), raw(stats[1])
            m = rm.dtype.type(momentum)
            rm *= 1 - m
            rm += m * d.mean(axis=axes)
            rv *= 1 - m
            rv += m * d.var(axis=axes, ddof=1)
    else:
        if stats[0] is None:
            raise ConfigError(f"{name}: evaluation (training=False) needs running_mean and running_var")
        xp = xp_of(d)
        rm, rv = raw(stats[0]), raw(stats[1])
        inv = (1 / xp.sqrt(rv + rv.dtype.type(eps))).reshape(keep)
        y = x * inv - (rm.reshape(keep) * inv)
    return _affine(y, weight, bias, ndim)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Group normalisation, torch.nn.functional.group_norm: x (N, C, *) with C split into
    ``num_groups`` groups of C / G consecutive channels; each (sample, group) is normalised over
    its C / G * prod(*) values (biased variance, eps inside the root), then out = y * weight + bias
    per channel (weight, bias: (C,) or None)."""
    name = "group_norm"
    d = array_of(name, x)
    if d.ndim < 2:
        raise ShapeError(f"{name}: input must be (N, C, *), got shape {tuple(d.shape)}")
    channels = d.shape[1]
    if isinstance(num_groups, bool) or not isinstance(num_groups, numbers.Integral) or num_groups < 1 \
            or channels % num_groups:
        raise ConfigError(f"{name}: num_groups must be a positive int dividing the {channels} channels "
                          f"of the input of shape {tuple(d.shape)}, got {num_groups!r}")
    eps = positive(name, "eps", eps)
    weight, bias = (_per_channel(name, arg, p, channels, d.dtype) for arg, p in (("weight", weight), ("bias", bias)))
    shape = tuple(d.shape)
    grouped = reshape(x, (shape[0], int(num_groups), d.size // max(shape[0] * num_groups, 1)))
    y = reshape(normalize_p(grouped, axis=(2,), eps=eps), shape)
    return _affine(y, weight, bias, d.ndim)
