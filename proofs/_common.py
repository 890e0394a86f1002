"""What every construction does with the conventional weights it is given.

A construction keeps the conventional layer's weights (torch layout) and derives the operator's maps
from them with engine ops at every call, so that backward reaches those weights:

- :func:`weight` keeps one weight: a Tensor as given (gradients reach the caller's leaf), an array
  as a Parameter of the ITNet layer (a copy: the layer trains its own), None as None;
- the IntegralTransform is a :func:`template` whose derived maps are empty parameter slots (set to
  None), filled per call by ``itnet_np.nn.functional_call`` / ``override_parameters`` with the
  Tensors derived from the weights, and restored afterwards;
- :func:`materialize` exports the bound transform as a standalone module (its own Parameters).

Small helpers the constructions share: :func:`as_tensor`, :func:`shape_of`, :func:`diag`.
"""
import copy
import functools

import numpy as np

from itnet_np.autograd import ops
from itnet_np.autograd.tensor import Tensor
from itnet_np.errors import DTypeError, describe
from itnet_np.nn.module import Parameter


def weight(value, name, owner, dtype=None):
    """A conventional weight as the layer keeps it (module docstring). ``dtype``: the dtype an array
    is converted to (default: its own, which must be floating); ``owner`` names the construction in
    error messages. A torch tensor is copied out."""
    if value is None or isinstance(value, Tensor):
        return value
    if hasattr(value, "detach") and hasattr(value, "numpy"):            # a torch tensor
        value = value.detach().cpu().numpy()
    array = np.array(value, dtype=dtype, copy=True)
    if array.dtype.kind != "f":
        raise DTypeError(f"{owner}: {name} must be floating point, got {describe(array)}")
    return Parameter(array)


def dtype_of(*values, default=np.float64):
    """The dtype of the first Tensor among ``values`` (arrays are converted to it), else ``default``."""
    for v in values:
        if isinstance(v, Tensor):
            return v.dtype
    return np.dtype(default)


def template(module, *names):
    """``module`` with the parameter slots ``names`` (dotted, as functional_call takes them; every slot
    when none is given) emptied: set to None, so they are no Parameters of the layer that holds the
    module, and the layer supplies them at every call."""
    for name in names or [n for n, _ in module.named_parameters()]:
        *path, attr = name.split(".")
        setattr(functools.reduce(getattr, path, module), attr, None)
    return module


def materialize(template, maps):
    """A deep copy of ``template`` whose parameter slots named in ``maps`` (dotted names, as for
    functional_call) hold Parameters with those values: the ITNet layer bound to the current
    weights, as a trainable module of its own (no graph back to the conventional weights)."""
    out = copy.deepcopy(template)
    for name, value in maps.items():
        *path, attr = name.split(".")
        owner = functools.reduce(getattr, path, out)
        data = value.data if isinstance(value, Tensor) else np.asarray(value)
        setattr(owner, attr, Parameter(data.copy()))
    return out


def as_tensor(a, dtype):
    """``a`` if it is a Tensor (gradients reach it), else a constant Tensor of ``a`` as ``dtype``."""
    return a if isinstance(a, Tensor) else Tensor(np.asarray(a, dtype=dtype))


def shape_of(a):
    """The shape of a Tensor, array or nested sequence, as a tuple."""
    return tuple(a.shape) if hasattr(a, "shape") else np.shape(a)


def diag(d):
    """diag(d) (n, n) from a Tensor d (n,), with engine ops."""
    return ops.expand_dims(d, 1) * Tensor(np.eye(d.shape[0], dtype=d.dtype))
