"""Running a module with given parameters: ``functional_call`` and ``override_parameters``.

``functional_call(module, overrides, *args)`` runs a module with some parameters replaced by given
Tensors for that one call (torch.func.functional_call; ``override_parameters`` is the same as a
context manager): the way to build a layer whose parameters are *derived* from other weights (the
proofs map conventional weights onto an IntegralTransform's maps this way), so that backward
reaches the Tensors they were derived from. The module is called normally, so its forward hooks
run, and see the overridden parameters.
"""
import contextlib
from collections.abc import Mapping

import numpy as np

from ..autograd.tensor import Tensor
from ..errors import ConfigError, DeviceError, DTypeError, ShapeError
from .module import Module


# ----- running a module with given parameters -----------------------------------------------------
def _parameter_slots(module):
    """dotted name -> (owner, attribute) for every registered parameter slot, empty (None) slots
    and every name of a tied parameter included (so each name a user may know is valid)."""
    slots = {}
    for mname, owner in module.named_modules():
        for attr in owner._parameters:
            slots[f"{mname}.{attr}" if mname else attr] = (owner, attr)
    return slots


def _override_value(name, value, current, caller):
    """``value`` as a Tensor checked against the slot's current Parameter (None: any value)."""
    if not isinstance(value, Tensor):
        if not hasattr(value, "shape") or not hasattr(value, "dtype"):
            value = np.asarray(value)
        value = Tensor(value)
    if current is None:
        return value
    if tuple(value.shape) != tuple(current.shape):
        raise ShapeError(f"{caller}: override '{name}' has shape {tuple(value.shape)}, the "
                         f"parameter has shape {tuple(current.shape)}")
    if value.dtype != current.dtype:
        raise DTypeError(f"{caller}: override '{name}' is {value.dtype}, the parameter is "
                         f"{current.dtype} (convert explicitly; nothing is cast silently)")
    if value.device != current.device:
        raise DeviceError(f"{caller}: override '{name}' lives on {value.device}, the parameter "
                          f"on {current.device}")
    return value


def override_parameters(module, overrides):
    """Context manager behind :func:`functional_call`: inside the ``with`` block the parameters named in
    ``overrides`` are replaced (same rules and errors as functional_call), so that any method can run
    with them (``with override_parameters(op, maps): A = op.kernel_matrix(x)``); restored on exit,
    also when the block raises."""
    return _overridden(module, overrides, "override_parameters")


@contextlib.contextmanager
def _overridden(module, overrides, caller):
    if not isinstance(module, Module):
        raise ConfigError(f"{caller}: expected a Module, got {type(module).__name__}")
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"{caller}: overrides must be a mapping of parameter name -> Tensor, "
                          f"got {type(overrides).__name__}")
    slots = _parameter_slots(module)
    unknown = [name for name in overrides if name not in slots]
    if unknown:
        raise ConfigError(f"{caller}: {type(module).__name__} has no parameter "
                          f"{', '.join(repr(n) for n in unknown)}; valid names: "
                          f"{', '.join(slots) or '(none)'}")
    holders = {}                                     # id(Parameter) -> every slot holding it (ties)
    for owner, attr in slots.values():
        p = owner._parameters[attr]
        if p is not None:
            holders.setdefault(id(p), []).append((owner, attr))
    planned = {}                                     # (id(owner), attr) -> (owner, attr, Tensor, given, name)
    for name, value in overrides.items():
        owner, attr = slots[name]
        current = owner._parameters[attr]
        tensor = _override_value(name, value, current, caller)
        for slot in (holders[id(current)] if current is not None else [(owner, attr)]):
            key = (id(slot[0]), slot[1])
            if key in planned and planned[key][3] is not value:
                raise ConfigError(f"{caller}: '{name}' and '{planned[key][4]}' name the same "
                                  "(tied) parameter but were given different values")
            planned.setdefault(key, (slot[0], slot[1], tensor, value, name))
    originals = [(owner, attr, owner._parameters[attr]) for owner, attr, *_ in planned.values()]
    try:
        for owner, attr, tensor, *_ in planned.values():
            owner._parameters[attr] = tensor
        yield module
    finally:
        for owner, attr, original in originals:
            owner._parameters[attr] = original


def functional_call(module, overrides, *args, **kwargs):
    """``module(*args, **kwargs)`` with the parameters named in ``overrides`` replaced for this call.

    overrides: {dotted parameter name (as ``named_parameters`` lists it): Tensor or array}. A Tensor
    is used as given, so gradients of the result flow into it (and to whatever it was computed
    from); an array becomes a constant Tensor. An override must have the parameter's shape, dtype
    and device (ShapeError, DTypeError, DeviceError); an empty slot (a parameter set to None, e.g. a
    template whose maps are always supplied) takes any value. A parameter held by several modules
    (tied) is replaced everywhere it appears. Unknown names raise ConfigError listing the valid ones.
    The original parameters are put back when the call returns or raises; the module's own
    Parameters receive no gradient from this call for the replaced slots. To run another method
    than forward, use the context manager :func:`override_parameters`.
    """
    with _overridden(module, overrides, "functional_call"):
        return module(*args, **kwargs)
