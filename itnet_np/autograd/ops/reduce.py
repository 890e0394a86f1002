"""Reductions over ``axis`` (None, an int or a tuple) with ``keepdims``, NumPy-style.

The VJP of a reduction re-inserts the reduced axes (as length 1) and broadcasts back.
"""
import numpy as np

from ..primitive import primitive
from ._util import keepdims_shape, normalize_axis


def _expand(g, x, axis, keepdims):
    """g reshaped so its reduced axes are length 1, ready to broadcast against x."""
    from .shape import reshape
    if keepdims:
        return g
    return reshape(g, keepdims_shape(x.shape, normalize_axis(axis, x.ndim)))


def _sum(x, axis=None, keepdims=False):
    return x.sum(axis=axis, keepdims=keepdims)


# d sum(x) = broadcast(g)
sum = primitive(_sum, "sum").defvjp(
    lambda g, out, x, axis=None, keepdims=False: _broadcast(_expand(g, x, axis, keepdims), x.shape))


def _count(x, axis):
    axes = normalize_axis(axis, x.ndim)
    return int(np.prod([x.shape[a] for a in axes])) if axes else 1


def _mean(x, axis=None, keepdims=False):
    return x.mean(axis=axis, keepdims=keepdims)


# d mean(x) = broadcast(g) / n
mean = primitive(_mean, "mean").defvjp(
    lambda g, out, x, axis=None, keepdims=False:
        _broadcast(_expand(g, x, axis, keepdims), x.shape) / _count(x, axis))


def _broadcast(g, shape):
    from .shape import broadcast_to
    return broadcast_to(g, shape)
