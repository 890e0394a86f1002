"""The Optimizer base class: named parameters, parameter groups, and name-keyed state.

An optimiser is built from ``model.named_parameters()`` (or ``model`` itself), a list of
``(name, param)`` pairs, a plain list of params (named ``'param_0'``, ``'param_1'``, ... in order),
or a list of group dicts ``{'params': ..., 'lr': ..., ...}`` whose keys override the defaults
(e.g. no weight decay on biases). Its state is keyed by parameter NAME, so a checkpoint survives
rebuilding the model, and ``load_state_dict`` checks names, shapes and dtypes before touching
anything.

``step()`` updates ``p.data`` in place, outside the autograd graph, and skips every parameter
whose ``grad`` is None. Updates keep the parameter's dtype and write every state entry in place,
for 0-d parameters too (NumPy turns arithmetic on 0-d arrays into scalars, and on NumPy 1.26 a
float32 0-d array times a Python float into a float64 scalar, hence :func:`scalars`).
"""
import numpy as np

from ..autograd import backend
from ..autograd.engine import enable_grad
from ..autograd.tensor import Tensor
from ..errors import CheckpointError, ConfigError, DeviceError, DTypeError, ShapeError, describe


def _named(params, start):
    """[(name, Tensor)] from params, naming bare tensors 'param_{i}' with i counted from start."""
    if isinstance(params, Tensor):
        raise TypeError("a param group's 'params' must be an iterable of tensors or (name, tensor) "
                        "pairs, got a single Tensor (wrap it in a list)")
    if hasattr(params, "named_parameters"):
        params = params.named_parameters()
    out = []
    for i, item in enumerate(params, start):
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            name, p = item
        else:
            name, p = f"param_{i}", item
        if not isinstance(p, Tensor):
            raise TypeError(f"optimizer parameter '{name}' must be a Tensor, got {type(p).__name__}")
        if p.dtype.kind != "f":
            raise DTypeError(f"optimizer parameter '{name}' must be floating point, got {p.dtype}")
        out.append((name, p))
    return out


def scalars(data, *values):
    """``values`` (hyper-parameters) as scalars of ``data``'s dtype: arithmetic with them keeps
    float32 float32 on every NumPy version, 0-d arrays included."""
    kind = data.dtype.type
    return tuple(kind(v) for v in values)


def _restore(key, value, like):
    """A private copy of a loaded state entry, on the parameter's device ('step' as a Python int)."""
    if key == "step":
        return int(value)
    value = value.data if isinstance(value, Tensor) else value
    return backend.to_device(value, backend.device_of(like)).copy()


class Optimizer:
    """Base class; subclasses set ``defaults``, ``_check(group)``, ``_state_keys(group)`` and
    ``_update(p_data, grad, state, group)``."""

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = {}
        self.param_groups = []
        if isinstance(params, Tensor):
            raise TypeError(f"{type(self).__name__}: params must be an iterable of tensors, (name, tensor) "
                            "pairs or group dicts, got a single Tensor (wrap it in a list)")
        if hasattr(params, "named_parameters"):
            params = params.named_parameters()
        items = list(params)
        if items and all(isinstance(g, dict) for g in items):
            raw_groups = items
        elif any(isinstance(g, dict) for g in items):
            raise TypeError("optimizer params: mix of group dicts and parameters; use one or the other")
        else:
            raw_groups = [{"params": items}]
        names, ids, count = set(), set(), 0
        for raw in raw_groups:
            if "params" not in raw:
                raise ConfigError("optimizer param group without a 'params' entry")
            unknown = sorted(set(raw) - set(self.defaults) - {"params"})
            if unknown:
                raise ConfigError(f"{type(self).__name__}: unknown option(s) {unknown} in a param group; "
                                  f"known: {sorted(self.defaults)}")
            named = _named(raw["params"], count)
            count += len(named)
            for name, p in named:
                if name in names:
                    raise ConfigError(f"optimizer: two parameters are named '{name}'")
                if id(p) in ids:
                    raise ConfigError(f"optimizer: parameter '{name}' appears twice")
                names.add(name)
                ids.add(id(p))
            group = {**self.defaults, **{k: v for k, v in raw.items() if k != "params"}, "params": named}
            self._check(group)
            self.param_groups.append(group)
        if count == 0:
            raise ConfigError(f"{type(self).__name__} got an empty parameter list")

    # ----- to be provided by subclasses -------------------------------------------------------
    def _check(self, group):
        if group["lr"] < 0:
            raise ConfigError(f"{type(self).__name__}: lr must be >= 0, got {group['lr']}")
        if group.get("weight_decay", 0.0) < 0:
            raise ConfigError(f"{type(self).__name__}: weight_decay must be >= 0, got {group['weight_decay']}")

    def _state_keys(self, group):
        """The per-parameter state entries this optimiser keeps under ``group``'s settings."""
        raise NotImplementedError

    def _update(self, data, grad, state, group):
        raise NotImplementedError

    # ----- stepping ---------------------------------------------------------------------------
    @property
    def lr(self):
        """The learning rate of the first group (the common single-group case)."""
        return self.param_groups[0]["lr"]

    def step(self, closure=None):
        """One update of every parameter that has a gradient. ``closure`` (optional) re-evaluates
        the model and returns the loss, which is returned."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            for name, p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.data if isinstance(p.grad, Tensor) else p.grad
                if grad.shape != p.data.shape or grad.dtype != p.data.dtype:
                    error = ShapeError if grad.shape != p.data.shape else DTypeError
                    raise error(f"{type(self).__name__}: gradient of '{name}' is {describe(grad)}, "
                                f"expected {describe(p.data)}")
                state = self.state.setdefault(name, {})
                self._check_device(name, p.data, state)
                self._update(p.data, grad, state, group)
                p._bump()  # an in-place change: a graph built before step() can no longer backprop
        return loss

    def to(self, device):
        """Move the optimiser state (moment buffers...) to ``device`` ('cpu' or 'cuda'), explicitly,
        after ``model.to(device)``; returns self."""
        for state in self.state.values():
            for key, value in state.items():
                if hasattr(value, "shape"):
                    state[key] = backend.to_device(value, device)
        return self

    def _check_device(self, name, data, state):
        """DeviceError when the state of ``name`` lives elsewhere than the parameter (no silent copy)."""
        where = backend.device_of(data)
        for key, value in state.items():
            if hasattr(value, "shape") and backend.device_of(value) != where:
                raise DeviceError(f"{type(self).__name__}: parameter '{name}' is on {where} but its state "
                                  f"'{key}' is on {backend.device_of(value)}; call optimizer.to('{where}') "
                                  "after moving the model")

    def zero_grad(self):
        """Drop every parameter's gradient (``p.grad = None``)."""
        for group in self.param_groups:
            for _, p in group["params"]:
                p.grad = None

    # ----- checkpoints ------------------------------------------------------------------------
    def state_dict(self):
        """{'state': {name: {entry: array copy or int}}, 'param_groups': [{options, 'params': [names]}]}."""
        state = {name: {k: (v.copy() if hasattr(v, "copy") else v) for k, v in s.items()}
                 for name, s in self.state.items() if s}
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [n for n, _ in g["params"]]}
                  for g in self.param_groups]
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore options and state from ``state_dict`` (as written by :meth:`state_dict`, possibly
        after a save/load round trip). Every mismatch -- group count, missing or unexpected parameter
        names, state entries, shapes, dtypes -- is reported in one CheckpointError, and nothing changes
        unless all checks pass."""
        who = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            raise CheckpointError(f"{who}: expected a dict with keys 'state' and 'param_groups', got "
                                  f"{sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__}")
        groups, state = state_dict["param_groups"], state_dict["state"]
        if len(groups) != len(self.param_groups):
            raise CheckpointError(f"{who}: checkpoint has {len(groups)} param groups, optimizer has "
                                  f"{len(self.param_groups)}")
        problems = []
        params = {}
        new_groups = []
        for k, (saved, mine) in enumerate(zip(groups, self.param_groups)):
            if not isinstance(saved, dict):
                raise CheckpointError(f"{who}: param group {k} is a {type(saved).__name__}, expected a dict")
            mine_names = [n for n, _ in mine["params"]]
            saved_names = list(saved.get("params", []))
            missing = [n for n in mine_names if n not in saved_names]
            unexpected = [n for n in saved_names if n not in mine_names]
            if missing:
                problems.append(f"group {k}: missing parameters {missing}")
            if unexpected:
                problems.append(f"group {k}: unexpected parameters {unexpected}")
            unknown = sorted(set(saved) - set(self.defaults) - {"params"})
            if unknown:
                problems.append(f"group {k}: unknown options {unknown}")
            options = {key: (tuple(v) if isinstance(v, list) else v)
                       for key, v in saved.items() if key != "params"}
            new_groups.append({**mine, **options, "params": mine["params"]})
            params.update((n, (p, new_groups[-1])) for n, p in mine["params"])
        for name, entries in state.items():
            if name not in params:
                problems.append(f"state for unknown parameter '{name}'")
                continue
            p, group = params[name]
            expected = self._state_keys(group)
            if set(entries) != expected:
                problems.append(f"state of '{name}' has entries {sorted(entries)}, expected {sorted(expected)}")
            for key, value in entries.items():
                value = value.data if isinstance(value, Tensor) else value
                if key == "step":
                    if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0):
                        problems.append(f"state '{name}.step' must be a non-negative integer, got {value!r}")
                elif getattr(value, "shape", None) != p.data.shape:
                    problems.append(f"state '{name}.{key}': {describe(value)}, parameter is {describe(p.data)}")
                elif value.dtype != p.data.dtype:
                    problems.append(f"state '{name}.{key}': dtype {value.dtype}, parameter is {p.dtype}")
        if problems:
            raise CheckpointError(f"{who}: " + "; ".join(problems))
        for group in new_groups:
            self._check(group)
        self.param_groups = new_groups
        self.state = {name: {k: _restore(k, v, params[name][0].data) for k, v in entries.items()}
                      for name, entries in state.items()}

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for k, g in enumerate(self.param_groups):
            opts = ", ".join(f"{key}={v}" for key, v in g.items() if key != "params")
            lines.append(f"  group {k}: {len(g['params'])} params, {opts}")
        return "\n".join(lines + [")"])
