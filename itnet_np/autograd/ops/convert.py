"""Explicit dtype and device conversion: the only places arrays change dtype or device."""
import numpy as np

from ..backend import device_of
from ..backend import to_device as _to_device
from ..primitive import primitive
from ._util import raw


def _astype(x, dtype):
    return x.astype(dtype)


# The gradient of a cast is the gradient cast back.
_astype_p = primitive(_astype, "astype", changes_dtype=True).defvjp(
    lambda g, out, x, dtype: astype(g, raw(x).dtype))


def astype(x, dtype):
    """``x`` converted to ``dtype`` (differentiable; the explicit way float32 and float64 meet)."""
    return _astype_p(x, dtype=np.dtype(dtype))


def _move(x, device):
    return _to_device(x, device)


# The gradient of a device copy is the gradient copied back.
to_device = primitive(_move, "to_device").defvjp(
    lambda g, out, x, device: to_device(g, device=device_of(raw(x))))


def _copy(x):
    return x.copy()


# A differentiable copy: new memory, identity gradient.
copy = primitive(_copy, "copy").defvjp(lambda g, out, x: g)
