"""Reductions over ``axis`` (None, an int or a tuple) with ``keepdims``, NumPy-style.

The VJP of a reduction re-inserts the reduced axes (as length 1) and broadcasts back. Notation: x the
input, out the output, g = dL/d out, G = g with the reduced axes restored as length 1, n the number of
elements reduced into each output.
"""
import numpy as np

from ..backend import xp_of
from ..primitive import primitive
from ._util import keepdims_shape, normalize_axis, raw


def _expand(g, x, axis, keepdims):
    """g reshaped so its reduced axes are length 1, ready to broadcast against x."""
    from .shape import reshape
    if keepdims:
        return g
    return reshape(g, keepdims_shape(x.shape, normalize_axis(axis, x.ndim)))


def _broadcast(g, shape):
    from .shape import broadcast_to
    return broadcast_to(g, shape)


def _count(x, axis):
    axes = normalize_axis(axis, x.ndim)
    return int(np.prod([x.shape[a] for a in axes])) if axes else 1


def _sum(x, axis=None, keepdims=False):
    return x.sum(axis=axis, keepdims=keepdims)


# d sum(x) = broadcast(G)
sum = primitive(_sum, "sum").defvjp(
    lambda g, out, x, axis=None, keepdims=False: _broadcast(_expand(g, x, axis, keepdims), x.shape))


def _mean(x, axis=None, keepdims=False):
    return x.mean(axis=axis, keepdims=keepdims)


# d mean(x) = broadcast(G) / n
mean = primitive(_mean, "mean").defvjp(
    lambda g, out, x, axis=None, keepdims=False:
        _broadcast(_expand(g, x, axis, keepdims), x.shape) / _count(x, axis))


def _var(x, axis=None, keepdims=False, ddof=0):
    return x.var(axis=axis, keepdims=keepdims, ddof=ddof)


# var(x) = sum((x - mean x)^2) / (n - ddof);  d var = G * 2 (x - mean x) / (n - ddof)
# (the mean's own derivative drops out because sum(x - mean x) = 0).
var = primitive(_var, "var").defvjp(
    lambda g, out, x, axis=None, keepdims=False, ddof=0:
        _expand(g, x, axis, keepdims) * (2 * (x - mean(x, axis=axis, keepdims=True))) / (_count(x, axis) - ddof))


def _max(x, axis=None, keepdims=False):
    return x.max(axis=axis, keepdims=keepdims)


def _min(x, axis=None, keepdims=False):
    return x.min(axis=axis, keepdims=keepdims)


def _extreme_vjp(g, out, x, axis=None, keepdims=False):
    """G * hit / (number of hits): the gradient is split evenly among tied extremes (torch's amax)."""
    xr = raw(x)
    axes = normalize_axis(axis, xr.ndim)
    hit = xr == raw(out).reshape(keepdims_shape(xr.shape, axes))
    share = (hit / hit.sum(axis=axes, keepdims=True)).astype(xr.dtype)
    return _expand(g, x, axis, keepdims) * share


max = primitive(_max, "max", save_output=True).defvjp(_extreme_vjp)
min = primitive(_min, "min", save_output=True).defvjp(_extreme_vjp)


def _prod(x, axis=None, keepdims=False):
    return x.prod(axis=axis, keepdims=keepdims)


def _prod_vjp(g, out, x, axis=None, keepdims=False):
    """d prod(x) / d x_i = prod_{j != i} x_j, never dividing by zero.

    Without zeros this is out / x_i. Otherwise split each reduced slice into its zero entries Z and the rest. With s = prod of the non-zeros
    (xs: x with zeros replaced by 1) and z = prod of the zeros as variables (value 0 unless Z is
    empty), the derivative is s z / x_i for i not in Z and s prod_{Z \\ i} x for i in Z, where
    prod_{Z \\ i} x is 1 when |Z| = 1, the other zero (sum of Z minus x_i, a linear form) when
    |Z| = 2 and 0 when |Z| >= 3. Every piece stays a function of x, so the second derivatives are
    right as well (|Z| = 2 gives H_ab = s between the two zeros).
    """
    from .elementwise import where
    xr = raw(x)
    axes = normalize_axis(axis, xr.ndim)
    zero = xr == 0
    n_zero = zero.sum(axis=axes, keepdims=True)
    if not n_zero.any():
        return _expand(g, x, axis, keepdims) * (_expand(out, x, axis, keepdims) / x)
    xs = where(zero, 1.0, x)
    xz = where(zero, x, 1.0)
    s = prod(xs, axis=axes, keepdims=True)
    z = prod(xz, axis=axes, keepdims=True)
    other_zero = sum(where(zero, x, 0.0), axis=axes, keepdims=True) - x
    at_zero = where(n_zero == 1, 1.0, where(n_zero == 2, other_zero, 0.0))
    return _expand(g, x, axis, keepdims) * s * where(zero, at_zero, z / xs)


prod = primitive(_prod, "prod", save_output=True).defvjp(_prod_vjp)


def _logsumexp(x, axis=None, keepdims=False):
    xp = xp_of(x)
    axes = normalize_axis(axis, x.ndim)
    m = x.max(axis=axes, keepdims=True) if x.size else xp.zeros(keepdims_shape(x.shape, axes), x.dtype)
    # A slice that is all -inf (or holds +inf) is shifted by 0, so log/exp give -inf (or +inf).
    m = xp.where(xp.isfinite(m), m, m.dtype.type(0))
    with np.errstate(divide="ignore"):  # log(0) = -inf for an all -inf slice is the right answer
        out = xp.log(xp.exp(x - m).sum(axis=axes, keepdims=True)) + m
    return out if keepdims else out.reshape([s for i, s in enumerate(x.shape) if i not in axes])


# logsumexp(x) = m + log sum exp(x - m) with m the slice max (no overflow);
# d logsumexp = G * exp(x - out) = G * softmax(x). The saved output costs one exp in backward; its
# rounding error makes the softmax accurate to about |out| * 1e-16 relative (5e-14 at out = 1000).
def _logsumexp_vjp(g, out, x, axis=None, keepdims=False):
    from .elementwise import exp
    return _expand(g, x, axis, keepdims) * exp(x - _expand(out, x, axis, keepdims))


logsumexp = primitive(_logsumexp, "logsumexp", save_output=True).defvjp(_logsumexp_vjp)


def _cumsum(x, axis=None):
    return xp_of(x).cumsum(x, axis=axis)


def _cumsum_vjp(g, out, x, axis=None):
    """d cumsum: the reversed cumulative sum of g, out_k = sum_{i<=k} x_i  =>  dx_i = sum_{k>=i} g_k.

    With axis=None the forward flattens x (NumPy), so g is 1-D and is reshaped back at the end.
    """
    from .shape import reshape
    ax = 0 if axis is None else axis % x.ndim
    flip = (slice(None),) * ax + (slice(None, None, -1),)
    gi = cumsum(g[flip], axis=ax)[flip]
    return reshape(gi, x.shape) if axis is None else gi


cumsum = primitive(_cumsum, "cumsum").defvjp(_cumsum_vjp)
