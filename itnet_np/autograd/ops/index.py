"""Indexing: basic (ints, slices, None, Ellipsis), advanced (integer arrays) and boolean.

getitem(x, index)[...] = x[index]. Its VJP scatters g back into zeros of x's shape; with integer
arrays an index may repeat, so the scatter *adds* (np.add.at), never assigns. The adjoint pair

    getitem:    out = x[index]
    index_put:  out = zeros(shape); out[index] += g        (repeats accumulate)

are each other's VJP, so gradients of every order exist. scatter_add is the functional form of
``target[index] += values``, differentiable in both target and values.
"""
import numbers

import numpy as np

from ...errors import ShapeError
from ..backend import scatter_add as _scatter_add_inplace
from ..backend import xp_of
from ..primitive import primitive
from ..tensor import Tensor


def _normalize_index(index):
    """Tensors inside an index become their arrays; lists become arrays (NumPy semantics).

    An empty list becomes an empty *integer* array (np.asarray([]) would be float, which NumPy
    refuses as an index).
    """
    if isinstance(index, tuple):
        return tuple(_normalize_index(i) for i in index)
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, list):
        array = np.asarray([_normalize_index(i) for i in index])
        return array.astype(np.intp) if array.size == 0 else array
    return index


def _may_repeat(index):
    """True when ``index`` holds an integer array, the only index kind that can name an element twice.

    Slices, ints, None, Ellipsis and boolean masks select each element at most once, so their
    adjoint may assign (faster); integer arrays need the accumulating scatter.
    """
    parts = index if isinstance(index, tuple) else (index,)
    for p in parts:
        if p is None or p is Ellipsis or isinstance(p, (slice, numbers.Integral)):
            continue
        dtype = getattr(p, "dtype", None)
        if dtype is not None and (dtype.kind == "b" or getattr(p, "ndim", 1) == 0):
            continue
        return True
    return False


def _getitem(x, index):
    out = x[index]
    # NumPy returns a scalar (np.float64) for a full integer index; keep outputs arrays.
    return np.asarray(out) if isinstance(out, np.generic) else out


def _index_put(g, shape, index):
    """zeros(shape) with g added at index (repeats accumulate)."""
    out = xp_of(g).zeros(shape, dtype=g.dtype)
    if _may_repeat(index):
        _scatter_add_inplace(out, index, g)
    else:
        out[index] = g
    return out


_getitem_p = primitive(_getitem, "getitem").defvjp(lambda g, out, x, index: index_put(g, x.shape, index))
_index_put_p = primitive(_index_put, "index_put").defvjp(lambda g, out, gin, shape, index: getitem(g, index))


def getitem(x, index):
    """``x[index]`` for every NumPy index kind; differentiable with respect to x."""
    return _getitem_p(x, index=_normalize_index(index))


def index_put(g, shape, index):
    """The adjoint of getitem: zeros of ``shape`` with ``g`` scatter-added at ``index``."""
    return _index_put_p(g, shape=tuple(shape), index=_normalize_index(index))


def _scatter_add(target, values, index):
    xp = xp_of(target)
    shape = target[index].shape
    if not hasattr(values, "dtype"):  # a Python scalar takes the target's dtype
        values = xp.asarray(values, dtype=target.dtype)
    try:
        # Broadcast explicitly: np.add.at (NumPy 2.4) adds wrong sums when it has to broadcast
        # values against a multi-dimensional index itself; with full-shape values it is exact.
        values = xp.broadcast_to(values, shape)
    except ValueError as e:
        raise ShapeError(f"scatter_add: values of shape {values.shape} do not broadcast to "
                         f"target[indices] of shape {shape} (target shape {target.shape})") from e
    out = target.copy()  # never write into the caller's array
    _scatter_add_inplace(out, index, values)
    return out


# d target = g;  d values = g[indices]  (the engine sums it back over values' broadcast axes).
_scatter_add_p = primitive(_scatter_add, "scatter_add").defvjp(
    lambda g, out, target, values, index: g,
    lambda g, out, target, values, index: getitem(g, index))


def scatter_add(target, indices, values):
    """Functional ``target[indices] += values``: a new array, repeated indices accumulating.

    out = target + S(values), where S scatters values into zeros at ``indices`` (an integer array
    or a tuple of arrays / slices, NumPy advanced-index semantics) and adds where indices repeat.
    ``values`` broadcasts to the shape of ``target[indices]``. Differentiable in target and values.
    """
    return _scatter_add_p(target, values, index=_normalize_index(indices))
