"""Small helpers shared by the op families (not ops themselves)."""
from ..tensor import Tensor


def raw(a):
    """The array behind a Tensor, or ``a`` itself: for masks and other constants inside VJPs."""
    return a.data if isinstance(a, Tensor) else a


def normalize_axis(axis, ndim):
    """``axis`` (None, int or tuple, negatives allowed) as a sorted tuple of non-negative ints."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    out = []
    for a in axis:
        if not -ndim <= a < max(ndim, 1):
            from ...errors import ShapeError
            raise ShapeError(f"axis {a} is out of range for an array with {ndim} dimensions")
        out.append(a % ndim if ndim else 0)
    return tuple(sorted(out))


def keepdims_shape(shape, axis):
    """``shape`` with the reduced ``axis`` (normalized tuple) kept as length-1 dimensions."""
    return tuple(1 if i in axis else s for i, s in enumerate(shape))
