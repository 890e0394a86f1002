"""softmax and log_softmax along one axis: each a single primitive that saves its output.

    softmax(x)_i     = exp(x_i - m) / sum_j exp(x_j - m),          m = max_j x_j
    log_softmax(x)_i = x_i - m - log sum_j exp(x_j - m)

Subtracting the max makes both exact for any finite input (nothing overflows). With y the output
and g = dL/dy, the VJPs are

    softmax:      y * (g - sum_j g_j y_j)
    log_softmax:  g - exp(y) * sum_j g_j

written with ops, so they differentiate again (y is the op's own output, itself a graph node).
Along the last axis of a large C-contiguous float array the raw forwards and VJPs run as one fused,
multi-threaded pass per row (_cpu_kernels.softmax / softmax_grad, gated by _fast.kernels); the NumPy
code beside each call is their reference.
"""
import numbers

from ...autograd.backend import xp_of
from ...autograd.ops import exp
from ...autograd.ops import sum as _sum
from ...autograd.ops._util import normalize_axis, raw
from ...autograd.primitive import primitive
from ...autograd.tensor import Tensor
from ._fast import kernels


def _last_axis_kernels(axis, *arrays):
    """The fused kernels when they apply: ``axis`` is the last one and ``kernels`` accepts arrays."""
    k = kernels(*arrays)
    return k if k is not None and axis == arrays[0].ndim - 1 else None


def _shifted(x, axis):
    m = x.max(axis=axis, keepdims=True)
    # A row that is all -inf has max -inf; shifting by it would give nan, so leave such rows alone
    # (they come out nan anyway, as in torch: softmax over nothing is undefined).
    return x - xp_of(x).where(xp_of(x).isfinite(m), m, 0)


def _softmax(x, axis=-1):
    if x.size == 0:  # an empty axis (or batch): an empty result of x's shape, as torch
        return x.copy()
    k = _last_axis_kernels(axis, x)
    if k is not None:
        return k.softmax(x)
    xp = xp_of(x)
    e = xp.asarray(_shifted(x, axis))  # a fresh array, updated in place below
    xp.exp(e, out=e)
    e /= e.sum(axis=axis, keepdims=True)
    return e


def _softmax_vjp(g, out, x, axis=-1):
    """out * (g - sum_j g_j out_j); on raw arrays with one temporary instead of four."""
    if isinstance(g, Tensor):
        return out * (g - _sum(g * out, axis=axis, keepdims=True))
    k = _last_axis_kernels(axis, out, g)
    if k is not None:
        return k.softmax_grad(g, out)
    r = g * out
    s = r.sum(axis=axis, keepdims=True)
    r -= out * s
    return r


def _log_softmax(x, axis=-1):
    if x.size == 0:
        return x.copy()
    k = _last_axis_kernels(axis, x)
    if k is not None:
        return k.softmax(x, log=True)
    z = _shifted(x, axis)
    return z - xp_of(x).log(xp_of(x).exp(z).sum(axis=axis, keepdims=True))


softmax_p = primitive(_softmax, "softmax", save_output=True).defvjp(_softmax_vjp)
def _log_softmax_vjp(g, out, x, axis=-1):
    """g - exp(out) sum_j g_j."""
    k = None if isinstance(g, Tensor) else _last_axis_kernels(axis, out, g)
    if k is not None:
        return k.softmax_grad(g, out, log=True)
    return g - exp(out) * _sum(g, axis=axis, keepdims=True)


log_softmax_p = primitive(_log_softmax, "log_softmax", save_output=True).defvjp(_log_softmax_vjp)


def _axis(x, axis, name):
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{name}: axis must be an int, got {type(axis).__name__} {axis!r}")
    return normalize_axis(int(axis), raw(x).ndim)[0]


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along ``axis`` (an int); same shape as x; rows sum to 1."""
    return softmax_p(x, axis=_axis(x, axis, "softmax"))


def log_softmax(x, axis=-1):
    """log(softmax(x)) along ``axis``, computed without forming softmax (no log of 0)."""
    return log_softmax_p(x, axis=_axis(x, axis, "log_softmax"))
