"""Indexing: basic (ints, slices, None, Ellipsis), advanced (integer arrays) and boolean.

getitem(x, index)[...] = x[index]. Its VJP scatters g back into zeros of x's shape; with integer
arrays an index may repeat, so the scatter *adds* (np.add.at), never assigns.
"""
from ..backend import scatter_add, xp_of
from ..primitive import primitive
from ..tensor import Tensor


def _normalize_index(index):
    """Tensors inside an index become their arrays; lists become arrays (NumPy semantics)."""
    if isinstance(index, tuple):
        return tuple(_normalize_index(i) for i in index)
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, list):
        import numpy as np
        return np.asarray(index)
    return index


def _is_basic(index):
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(p, (int, slice)) or p is None or p is Ellipsis for p in parts)


def _getitem(x, index):
    return x[index]


def _index_put(g, shape, index):
    """zeros(shape) with g added at index (repeats accumulate)."""
    out = xp_of(g).zeros(shape, dtype=g.dtype)
    if _is_basic(index):
        out[index] = g
    else:
        scatter_add(out, index, g)
    return out


_getitem_p = primitive(_getitem, "getitem").defvjp(lambda g, out, x, index: index_put(g, x.shape, index))
_index_put_p = primitive(_index_put, "index_put").defvjp(lambda g, out, gin, shape, index: getitem(g, index))


def getitem(x, index):
    """``x[index]`` for every NumPy index kind; differentiable with respect to x."""
    return _getitem_p(x, index=_normalize_index(index))


def index_put(g, shape, index):
    """The adjoint of getitem: zeros of ``shape`` with ``g`` scatter-added at ``index``."""
    return _index_put_p(g, shape=tuple(shape), index=index)
