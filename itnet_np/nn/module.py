"""Module and Parameter: the containers that hold a model's learnable state.

A :class:`Parameter` is a Tensor that requires grad by default. A :class:`Module` registers every
Parameter and sub-Module assigned to one of its attributes (``self.weight = Parameter(...)``,
``self.block = Linear(...)``), so that it can list them by dotted name::

    model.named_parameters()  ->  ('layers.0.weight', p), ('layers.0.bias', p), ...

in a deterministic order: a module's own parameters in assignment order, then each child's, depth
first. ``state_dict()`` copies them out (name -> array) and ``load_state_dict()`` copies them back
after checking names, shapes and dtypes, all-or-nothing.

Forward hooks (``register_forward_pre_hook``, ``register_forward_hook``) see or replace a
module's inputs and output on every call. A module pickles (its hooks too, if they pickle).
``functional_call`` / ``override_parameters`` (in :mod:`.overrides`, re-exported here) run a
module with some parameters replaced for one call.
"""
import itertools
from collections import namedtuple

import numpy as np

from ..autograd import backend
from ..autograd.tensor import Tensor
from ..errors import CheckpointError, ConfigError, describe


class Parameter(Tensor):
    """A learnable tensor: ``Parameter(data, requires_grad=True, dtype=None)``.

    Assigning one to a Module attribute registers it. The array is used as given (no copy).
    """

    def __init__(self, data, requires_grad=True, dtype=None):
        super().__init__(data, requires_grad=requires_grad, dtype=dtype)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


_KINDS = ("_parameters", "_modules", "_buffers")
IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


def _raw(value):
    return value.data if isinstance(value, Tensor) else value


class Module:
    """Base class of every layer and model. Subclasses call ``super().__init__()`` first, assign
    Parameters / Modules / buffers as attributes, and define ``forward``; ``module(x)`` calls it.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_forward_pre_hooks", {})
        object.__setattr__(self, "_forward_hooks", {})
        object.__setattr__(self, "training", True)

    # ----- registration -----------------------------------------------------------------------
    def _registry(self, kind):
        try:
            return object.__getattribute__(self, kind)
        except AttributeError:
            raise AttributeError(
                f"{type(self).__name__}: call super().__init__() in __init__ before assigning "
                "parameters or sub-modules") from None

    def __setattr__(self, name, value):
        registered = any(name in self.__dict__.get(kind, ()) for kind in _KINDS)
        if not registered and not isinstance(value, (Parameter, Module)):
            object.__setattr__(self, name, value)  # a plain attribute (ints, arrays, plain Tensors...)
            return
        params, modules, buffers = (self._registry(kind) for kind in _KINDS)
        if isinstance(value, Parameter):
            target = params
        elif isinstance(value, Module):
            target = modules
        elif name in buffers:
            target, value = buffers, _raw(value)
        elif value is None:
            # Like torch: an optional parameter or child may be set to None (e.g. bias=False).
            target = params if name in params else modules
        else:
            slot = "parameter" if name in params else "sub-module"
            raise TypeError(f"{type(self).__name__}.{name} is a registered {slot}; cannot assign a "
                            f"{type(value).__name__} to it (wrap arrays in nn.Parameter)")
        for registry in (params, modules, buffers):
            if registry is not target:
                registry.pop(name, None)
        self.__dict__.pop(name, None)
        target[name] = value

    def __getattr__(self, name):
        # Only called when normal lookup fails, i.e. for registered entries.
        for kind in _KINDS:
            registry = self.__dict__.get(kind)
            if registry is not None and name in registry:
                return registry[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for kind in _KINDS:
            registry = self.__dict__.get(kind)
            if registry is not None and name in registry:
                del registry[name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name, param):
        """Register ``param`` (a Parameter or None) under ``name``; same as attribute assignment."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"register_parameter('{name}'): expected a Parameter or None, "
                            f"got {type(param).__name__}")
        self._registry("_parameters")
        self.__dict__.pop(name, None)
        self._parameters[name] = param

    def register_buffer(self, name, array):
        """Register a non-learnable array that belongs to the state (e.g. running statistics)."""
        self._registry("_buffers")
        self.__dict__.pop(name, None)
        self._buffers[name] = _raw(array)

    # ----- traversal --------------------------------------------------------------------------
    def named_children(self):
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self):
        return (m for _, m in self.named_children())

    def named_modules(self, prefix=""):
        """(dotted name, module) for this module ('' or ``prefix``) and every descendant, depth first."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            kids = [(f"{name}.{k}" if name else k, m) for k, m in module.named_children()]
            stack.extend(reversed(kids))

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_parameters(self, prefix="", recurse=True):
        """(dotted name, Parameter) pairs; a parameter shared by two modules appears once."""
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mname, module in modules:
            for pname, p in module._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self, recurse=True):
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix=""):
        for mname, module in self.named_modules(prefix):
            for bname, b in module._buffers.items():
                if b is not None:
                    yield (f"{mname}.{bname}" if mname else bname), b

    def num_parameters(self):
        """Total number of scalar parameters."""
        return int(sum(p.size for p in self.parameters()))

    # ----- state ------------------------------------------------------------------------------
    def state_dict(self):
        """{dotted name: array copy} of every parameter and buffer (each module's parameters, then
        its buffers, depth first; an object shared by two modules appears once, under its first name)."""
        return {name: self._current(slot).copy() for name, slot in self._state_slots().items()}

    def _state_slots(self):
        """name -> (owner module, attribute, kind) for every entry that state_dict() writes."""
        slots, seen = {}, set()
        for mname, module in self.named_modules():
            for kind in ("_parameters", "_buffers"):
                for attr, value in getattr(module, kind).items():
                    if value is None or id(value) in seen:
                        continue
                    seen.add(id(value))
                    slots[f"{mname}.{attr}" if mname else attr] = (module, attr, kind)
        return slots

    def load_state_dict(self, state_dict, strict=True):
        """Copy ``state_dict`` (name -> array or Tensor) into this module's parameters and buffers.

        Every problem is collected and reported in one CheckpointError: missing keys and unexpected
        keys (only when ``strict``), and shape or dtype mismatches (always: values are never
        reshaped or cast). Nothing is modified unless every check passes. Returns
        ``(missing_keys, unexpected_keys)``.
        """
        if not isinstance(state_dict, dict):
            raise CheckpointError(f"load_state_dict: expected a dict of name -> array, got "
                                  f"{type(state_dict).__name__}")
        slots = self._state_slots()
        missing = [k for k in slots if k not in state_dict]
        unexpected = [k for k in state_dict if k not in slots]
        problems = []
        if strict and missing:
            problems.append("missing keys: " + ", ".join(
                f"'{k}' ({describe(self._current(slots[k]))})" for k in missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(
                f"'{k}' ({describe(_raw(state_dict[k]))})" for k in unexpected))
        updates = []
        for name, slot in slots.items():
            if name not in state_dict:
                continue
            current = self._current(slot)
            value = _raw(state_dict[name])
            if not hasattr(value, "shape") or not hasattr(value, "dtype"):
                value = np.asarray(value)
            if tuple(value.shape) != tuple(current.shape):
                problems.append(f"shape mismatch for '{name}': checkpoint has {tuple(value.shape)}, "
                                f"model has {tuple(current.shape)}")
            elif value.dtype != current.dtype:
                problems.append(f"dtype mismatch for '{name}': checkpoint has {value.dtype}, model "
                                f"has {current.dtype} (convert explicitly; nothing is cast silently)")
            else:
                updates.append((slot, current, value))
        if problems:
            raise CheckpointError(f"load_state_dict into {type(self).__name__}: " + "; ".join(problems))
        for (module, attr, kind), current, value in updates:
            # Copy into the existing array so that anything holding the parameter sees the new values.
            current[...] = backend.to_device(value, backend.device_of(current))
        return IncompatibleKeys(missing, unexpected)

    @staticmethod
    def _current(slot):
        module, attr, kind = slot
        value = getattr(module, kind)[attr]
        return value.data if kind == "_parameters" else value

    # ----- modes and housekeeping -------------------------------------------------------------
    def train(self, mode=True):
        """Set ``.training`` on this module and every descendant (dropout etc. read it)."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        """Drop every parameter's gradient (``p.grad = None``), so the next backward starts fresh."""
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, flag=True):
        for p in self.parameters():
            p.requires_grad_(flag)
        return self

    def to(self, device):
        """Move every parameter and buffer to ``device`` ('cpu' or 'cuda') in place; returns self.
        A module's random generator (attribute ``rng``, e.g. Dropout's) is replaced by one on
        ``device`` continuing its stream (backend.generator_to), so masks are drawn where the data are."""
        for p in self.parameters():
            p.data = backend.to_device(p.data, device)
            p.grad = None
        for m in self.modules():
            for name, b in m._buffers.items():
                if b is not None:
                    m._buffers[name] = backend.to_device(b, device)
            rng = m.__dict__.get("rng")
            if rng is not None and hasattr(rng, "integers"):
                m.rng = backend.generator_to(rng, device)
        return self

    def apply(self, fn):
        """Call ``fn(module)`` on every descendant and then on self (children first, like torch)."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ----- calling and printing ---------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        pre, post = self.__dict__.get("_forward_pre_hooks"), self.__dict__.get("_forward_hooks")
        for hook in list(pre.values()) if pre else ():
            result = hook(self, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
        out = self.forward(*args, **kwargs)
        for hook in list(post.values()) if post else ():
            result = hook(self, args, out)
            if result is not None:
                out = result
        return out

    def register_forward_pre_hook(self, hook):
        """Call ``hook(module, args)`` before every forward; a non-None result replaces the
        positional args (a tuple, or one value meaning a 1-tuple). Returns a handle: ``.remove()``."""
        return _HookHandle(self._hooks("_forward_pre_hooks"), hook)

    def register_forward_hook(self, hook):
        """Call ``hook(module, args, output)`` after every forward; a non-None result replaces the
        output. Hooks run in registration order, also under functional_call (which calls the
        module). Returns a handle: ``.remove()``."""
        return _HookHandle(self._hooks("_forward_hooks"), hook)

    def _hooks(self, kind):
        hooks = self.__dict__.get(kind)
        if hooks is None:  # a module built before hooks existed (or without super().__init__())
            self._registry("_parameters")
            hooks = {}
            object.__setattr__(self, kind, hooks)
        return hooks

    def extra_repr(self):
        """One line of hyper-parameters shown inside ``Name(...)``; layers override it."""
        return ""

    def __repr__(self):
        extra = self.extra_repr()
        kids = list(self.named_children())
        if not kids:
            return f"{type(self).__name__}({extra})"
        lines = [extra] if extra else []
        for name, m in kids:
            body = repr(m).replace("\n", "\n  ")
            lines.append(f"({name}): {body}")
        return f"{type(self).__name__}(\n  " + "\n  ".join(lines) + "\n)"


class _HookHandle:
    """Returned by register_*_hook: ``remove()`` unregisters the hook (twice is harmless); also a
    context manager that removes it on exit."""

    _next_id = itertools.count()

    def __init__(self, hooks, hook):
        if not callable(hook):
            raise ConfigError(f"a hook must be callable, got {type(hook).__name__}")
        self.hooks, self.id = hooks, next(self._next_id)
        hooks[self.id] = hook

    def remove(self):
        self.hooks.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
        return False


# functional_call and override_parameters lived here first; imported from this module by many callers.
from .overrides import functional_call, override_parameters  # noqa: F401
