"""Reductions over ``axis`` (None, an int or a tuple) with ``keepdims``, NumPy-style.

The VJP of a reduction re-inserts the reduced axes (as length 1) and broadcasts back. Notation: x the
input, out the output, g = dL/d out, G = g with the reduced axes restored as length 1, n the number of
elements reduced into each output.
"""
import math

import numpy as np

from ...errors import ConfigError
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


# ----- std, norm: square roots of sums of squares, with the subgradient 0 where they vanish -----------
def _const(value, like):
    """``value`` as a scalar of ``like``'s dtype: a Python number would upcast a 0-d float32 array on
    NumPy < 2 (all-scalar operations there promote float32 with a Python float to float64)."""
    return raw(like).dtype.type(value)


def _safe(s):
    """s with zeros replaced by ones: a divisor used only where its numerator vanishes as well."""
    from .elementwise import where
    return where(raw(s) == 0, _const(1, s), s)


def _std(x, axis=None, keepdims=False, ddof=0):
    return xp_of(x).asarray(x.std(axis=axis, keepdims=keepdims, ddof=ddof))


def _std_vjp(g, out, x, axis=None, keepdims=False, ddof=0):
    """d std = G (x - mean x) / ((n - ddof) std): the derivative of sqrt(var). Where std = 0 the
    slice is constant, x - mean x = 0 and the result is 0, the subgradient of the convex
    ||x - mean x|| / sqrt(n - ddof) (torch gives NaN there)."""
    c = x - mean(x, axis=axis, keepdims=True)
    s = _safe(_expand(out, x, axis, keepdims)) * _const(_count(x, axis) - ddof, x)
    return _expand(g, x, axis, keepdims) * c / s


# std(x, axis=None, keepdims=False, ddof=0) = sqrt(var(x, ddof)), NumPy's std.
std = primitive(_std, "std", save_output=True).defvjp(_std_vjp)


def _pnorm(x, p, axis=None, keepdims=False):
    xp = xp_of(x)
    if p == 2:
        return xp.sqrt(xp.asarray((x * x).sum(axis=axis, keepdims=keepdims)))
    s = xp.asarray((xp.abs(x) ** _const(p, x)).sum(axis=axis, keepdims=keepdims))
    return s ** _const(1 / p, x)


def _pnorm_vjp(g, out, x, p, axis=None, keepdims=False):
    """d ||x||_p = G sign(x) |x|^(p-1) / ||x||^(p-1)  (x / ||x|| for p = 2), 0 where ||x|| = 0."""
    from .elementwise import abs, power, sign
    s = _safe(_expand(out, x, axis, keepdims))
    if p == 2:
        return _expand(g, x, axis, keepdims) * x / s
    q = _const(p - 1, x)
    return _expand(g, x, axis, keepdims) * sign(x) * power(abs(x) / s, q)


_pnorm_p = primitive(_pnorm, "norm", save_output=True).defvjp(_pnorm_vjp)


def norm(x, ord=2, axis=None, keepdims=False):
    """The vector p-norm of x over ``axis`` (None: all elements), torch.linalg.vector_norm's meaning.

        ord = p >= 1:  (sum |x|^p)^(1/p)    (2 and 'fro' -- the Frobenius norm of a matrix is the
                                             2-norm of its entries -- and None mean p = 2)
        ord = inf:     max |x|,    ord = -inf: min |x|

    The gradient is sign(x) |x|^(p-1) / ||x||^(p-1) (x / ||x|| for p = 2; sign(x) for p = 1; for
    +-inf the gradient goes to the extreme entries, split evenly among ties, as torch). Where the
    norm is 0 the gradient is 0 -- a subgradient of the convex norm -- instead of 0/0 = NaN.
    """
    from .elementwise import abs
    if ord is None or (isinstance(ord, str) and ord == "fro"):
        ord = 2
    if isinstance(ord, (str, bool)) or not isinstance(ord, (int, float, np.number)) \
            or not (ord >= 1 or ord == -math.inf):
        raise ConfigError(f"norm: ord must be a number >= 1, inf, -inf, 'fro' or None, got {ord!r}")
    if ord == math.inf:
        return max(abs(x), axis=axis, keepdims=keepdims)
    if ord == -math.inf:
        return min(abs(x), axis=axis, keepdims=keepdims)
    if ord == 1:
        return sum(abs(x), axis=axis, keepdims=keepdims)
    return _pnorm_p(x, p=float(ord), axis=axis, keepdims=keepdims)


# ----- cumprod ------------------------------------------------------------------------------------------
def _cumprod(x, axis=None):
    return xp_of(x).cumprod(x, axis=axis)


def _cumprod_vjp(g, out, x, axis=None):
    """out_k = prod_{j<=k} x_j  =>  dx_i = sum_{k>=i} g_k prod_{j<=k, j!=i} x_j.

    Without zeros in x this is revcumsum(g out)_i / x_i (O(n)). With zeros it is computed without
    dividing: M[..., i, k] = prod_{j<=k, j!=i} x_j is the cumprod over k of x with x_i replaced by 1
    (an (n, n) matrix per slice), and dx_i = sum_{k>=i} g_k M[i, k]. That is a polynomial in x
    written with ops, so its own derivatives (second order and up) are right at zeros too.
    """
    from .elementwise import where
    from .shape import expand_dims, reshape, swapaxes, triu
    if axis is None:  # NumPy flattens: g and out are 1-D
        return reshape(_cumprod_vjp(g, out, reshape(x, (-1,)), axis=0), x.shape)
    ax = axis % x.ndim
    if not (raw(x) == 0).any():
        flip = (slice(None),) * ax + (slice(None, None, -1),)
        return cumsum((g * out)[flip], axis=ax)[flip] / x
    xl, gl = swapaxes(x, ax, -1), swapaxes(g, ax, -1)
    n = xl.shape[-1]
    z = where(np.eye(n, dtype=bool), _const(1, x), expand_dims(xl, -2))   # (..., i, j)
    m = triu(cumprod(z, axis=-1))                                            # (..., i, k), k >= i
    return swapaxes(sum(m * expand_dims(gl, -2), axis=-1), ax, -1)


# cumprod(x, axis=None): NumPy's cumulative product (axis=None flattens).
cumprod = primitive(_cumprod, "cumprod", save_output=True).defvjp(_cumprod_vjp)
