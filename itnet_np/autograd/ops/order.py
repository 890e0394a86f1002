"""Ordering: argmax, argmin, sort and topk.

The positions these return are integers and carry no gradient (piecewise constant in x). The
values of sort and topk are a gather, ``take_along_axis(x, indices, axis)``, so their gradient
is the gather's scatter-add: dx[..., indices[..., j], ...] += g[..., j, ...], differentiable to
any order. Ties keep their original order (a stable sort), in both directions; NaN counts as
larger than every number (NumPy and torch).

(The module is not called ``sort``: that name is the function, re-exported next to the others.)
"""
import numbers
from collections import namedtuple

from ...errors import ConfigError, ShapeError
from ..backend import xp_of
from ..tensor import Tensor
from ._util import raw
from .shape import _axis, take_along_axis

SortResult = namedtuple("SortResult", ["values", "indices"])
TopkResult = namedtuple("TopkResult", ["values", "indices"])


def _like_input(x, array):
    """An integer result as the input came: a Tensor (no gradient) for a Tensor, else the array."""
    return Tensor._wrap(array, None) if isinstance(x, Tensor) else array


def _one_axis(axis, ndim, op):
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise ConfigError(f"{op}: axis must be an int, got {axis!r}")
    if ndim == 0:
        raise ShapeError(f"{op}: needs an array with at least 1 dimension, got shape ()")
    return _axis(int(axis), ndim, op)


def _arg_extreme(x, axis, keepdims, op):
    d = raw(x)
    xp = xp_of(d)
    if axis is not None:
        axis = _one_axis(axis, d.ndim, op)
    n = d.size if axis is None else d.shape[axis]
    if n == 0:
        raise ShapeError(f"{op}: the reduced {'array' if axis is None else f'axis {axis}'} of shape "
                         f"{d.shape} is empty; an empty slice has no {op[3:]}")
    out = getattr(xp, op)(d, axis=axis, keepdims=keepdims)
    return _like_input(x, xp.asarray(out))


def argmax(x, axis=None, keepdims=False):
    """Index of the first maximum along ``axis`` (of the flattened array for axis=None); integers."""
    return _arg_extreme(x, axis, keepdims, "argmax")


def argmin(x, axis=None, keepdims=False):
    """Index of the first minimum along ``axis`` (of the flattened array for axis=None); integers."""
    return _arg_extreme(x, axis, keepdims, "argmin")


def _order(d, axis, descending):
    """Stable sorting permutation along ``axis``; descending keeps ties in their original order."""
    xp = xp_of(d)
    if not descending:
        return xp.argsort(d, axis=axis, kind="stable")
    # Sorting the reversed array ascending and reversing the result is descending, and a later
    # element of a tie, which comes first in the reversed array, ends up last again.
    rev = (slice(None),) * axis + (slice(None, None, -1),)
    return (d.shape[axis] - 1) - xp.argsort(d[rev], axis=axis, kind="stable")[rev]


def sort(x, axis=-1, descending=False):
    """(values, indices) with values = x sorted along ``axis`` and x[..., indices, ...] = values.

    Ascending unless ``descending``; stable (ties keep their order). values is differentiable.
    """
    d = raw(x)
    axis = _one_axis(axis, d.ndim, "sort")
    idx = _order(d, axis, bool(descending))
    return SortResult(take_along_axis(x, idx, axis), _like_input(x, idx))


def topk(x, k, axis=-1, largest=True):
    """(values, indices) of the k largest (``largest=False``: smallest) entries along ``axis``.

    Ordered from the most extreme on, ties in their original order; values is differentiable.
    """
    d = raw(x)
    axis = _one_axis(axis, d.ndim, "topk")
    n = d.shape[axis]
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 0 <= k <= n:
        raise ConfigError(f"topk: k must be an int in [0, {n}] (the length of axis {axis} of shape "
                          f"{d.shape}), got {k!r}")
    idx = _order(d, axis, bool(largest))[(slice(None),) * axis + (slice(0, int(k)),)]
    return TopkResult(take_along_axis(x, idx, axis), _like_input(x, idx))
