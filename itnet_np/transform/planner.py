"""The backend contract: one call record, one question to every backend, one planner.

The operator packs everything one evaluation of sum_j A^h_ij v^h_j needs into a :class:`TransformCall`
(kernel, per-point projections, values (B, H, M, d), quadrature weights (B|1, H|1, M) or None, the
support descriptor support.SupportPlan, the normalisation and the additive score bias (1|B, 1|H, N, M)
or None). A backend is a function ``plan(call) -> Plan | Decline``: a :class:`Plan` holds ``run()``
-> (B, H, N, d) (equal to the dense reference, with gradients), a sentence saying what it will do,
and whether it pays at this size (``pays``, ``why_not``); a :class:`Decline` holds the reason in words.

Choosing (:func:`plan`): an explicit backend runs its plan whatever the size, and raises ConfigError
with the reason when it declines; 'auto' takes the first non-dense backend whose plan is accepted and
pays, else 'dense', the reference, which accepts every call. :func:`explain` returns the same decision
in words, with each backend's answer (``IntegralTransform.explain``).

Sampling: a call whose ``integration`` is set (a montecarlo.Sampling: the layer asked for Monte
Carlo integration and is in training mode) goes to the 'montecarlo' backend whatever the name;
every other backend evaluates the integral exactly, and 'montecarlo' declines exact calls.

Built-in backends are looked up by name, not registered by importing a module: 'numba' is
``fused.numba_plans.plan``, imported on first use (a ConfigError names the cause when numba cannot
load). Others join with ``register_backend(name, plan)``.
"""
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..autograd.ops._util import raw
from ..errors import ConfigError
from .normalization import transform_matrix


@dataclass(frozen=True)
class TransformCall:
    """One evaluation of the integral (see the module docstring for the fields' shapes)."""

    kernel: Any
    proj: Any
    values: Any
    weights: Any
    support: Any
    normalization: str
    score_bias: Any = None
    integration: Any = None    # montecarlo.Sampling when the call asks to be sampled, else None (exact)

    @property
    def pairs(self):
        """N M, the number of (query, source) pairs per batch item and head."""
        return self.support.n * self.support.m

    @property
    def dtype(self):
        return raw(self.values).dtype

    @property
    def on_numpy(self):
        """True when the arrays are NumPy arrays (not CuPy): the CPU kernels' precondition."""
        return type(raw(self.values)) is np.ndarray


@dataclass(frozen=True)
class Plan:
    """An accepted call: ``run()`` evaluates it; ``note`` says how; ``pays`` False (with ``why_not``)
    when 'auto' should prefer the dense reference at this size."""

    backend: str
    run: Callable = field(repr=False)
    note: str
    pays: bool = True
    why_not: str = ""


@dataclass(frozen=True)
class Decline:
    """A call a backend cannot evaluate, and why (in words)."""

    backend: str
    reason: str


# ------------------------------------------------------------------------------ the reference

def dense_matrix(call, full=None):
    """A (B, H, N, M): the kernel's scores plus the score bias, then weights, support (the only N x M
    mask, ``support.dense_mask()``) and normalisation. ``full``: (B, H, N, M), by default from the
    values (B, H, M, d)."""
    from ..autograd.ops import broadcast_to
    scores = call.kernel.scores(call.proj)
    if call.score_bias is not None:
        scores = scores + call.score_bias
    if full is None:
        v = call.values
        full = (v.shape[0], v.shape[1], call.support.n, v.shape[2])
    if tuple(scores.shape) != full:
        scores = broadcast_to(scores, full)
    return transform_matrix(scores, call.weights, call.support.dense_mask(), call.normalization)


def dense(call):
    """The reference backend: accepts every call; A (B, H, N, M) formed densely, then A @ v."""
    from ..autograd.ops import matmul
    return Plan("dense", lambda: matmul(dense_matrix(call), call.values),
                "the dense reference: forms the (B, H, N, M) matrix A, then A @ v")


# ------------------------------------------------------------------------------ the registry

_BACKENDS = {"dense": dense}
_BUILTIN = {"numba": "itnet_np.transform.fused.numba_plans",   # name -> module whose plan() it is
            "montecarlo": "itnet_np.transform.montecarlo.plan",
            "lowrank": "itnet_np.transform.lowrank.plan",
            "cupy": "itnet_np.gpu.plan_cupy",        # before 'cuda': 'auto' asks the tensor cores first
            "cuda": "itnet_np.gpu.plan"}
_load_errors = {}


def register_backend(name, plan_fn):
    """Make ``plan_fn(call) -> Plan | Decline`` available as ``IntegralTransform(..., backend=name)``."""
    if not isinstance(name, str) or name in ("auto",) or not callable(plan_fn):
        raise ConfigError(f"register_backend: expected a name other than 'auto' and a callable "
                          f"plan(call), got {name!r}, {plan_fn!r}")
    _BACKENDS[name] = plan_fn


def _load(name):
    """Import a built-in backend once; remember why it failed (numba missing, broken llvmlite...)."""
    if name in _BUILTIN and name not in _BACKENDS and name not in _load_errors:
        try:
            _BACKENDS[name] = importlib.import_module(_BUILTIN[name]).plan
        except Exception as exc:  # noqa: BLE001  ImportError, or numba/llvmlite failing to load
            _load_errors[name] = exc


def available_backends():
    """Names of the backends that can run here ('dense' first; 'auto' is not one)."""
    for name in _BUILTIN:
        _load(name)
    return tuple(_BACKENDS)


def check_backend(name):
    """``name`` if it is 'dense', 'auto' or an available backend (ConfigError naming the cause)."""
    if not isinstance(name, str):
        raise ConfigError(f"backend must be a string ('dense', 'auto' or a registered backend), got {name!r}")
    if name in ("dense", "auto"):
        return name
    _load(name)
    if name not in _BACKENDS:
        error = _load_errors.get(name)
        if error is not None:
            raise ConfigError(
                f"backend={name!r} needs numba, which cannot run here: importing {_BUILTIN[name]} failed "
                f"with {type(error).__name__}: {error}. Install numba (pip install numba) "
                "or use backend='dense' (or 'auto', which falls back to 'dense')") from error
        raise ConfigError(f"backend: {name!r} is not available; registered: {available_backends()} "
                          "(and 'auto')")
    return name


# ------------------------------------------------------------------------------ the planner

def answers(call):
    """{name: Plan or Decline} of every available backend for this call."""
    return {name: _BACKENDS[name](call) for name in available_backends()}


def plan(name, call):
    """The Plan that runs ``call`` under backend ``name`` (see the module docstring)."""
    if call.integration is not None:          # a sampled call: only the Monte Carlo backend evaluates it
        answer = _BACKENDS[check_backend("montecarlo")](call)
        if isinstance(answer, Decline):
            raise ConfigError(f"integration=MonteCarlo(...) cannot sample this call: {answer.reason}; use "
                              "integration='exact' (or eval mode, which is exact)")
        return answer
    if name == "auto":
        for other in available_backends():
            if other != "dense":
                answer = _BACKENDS[other](call)
                if isinstance(answer, Plan) and answer.pays:
                    return answer
        return dense(call)
    answer = _BACKENDS[check_backend(name)](call)
    if isinstance(answer, Decline):
        raise ConfigError(f"backend={name!r} cannot run this call: {answer.reason}; use backend='auto' "
                          "(falls back to 'dense' for such calls) or backend='dense'")
    return answer


def explain(name, call):
    """The planner's decision for ``call`` under backend ``name``, and every backend's answer, in words."""
    try:
        chosen = plan(name, call).backend
        head = f"backend={name!r} runs {chosen!r}"
    except ConfigError as exc:
        chosen, head = None, f"backend={name!r} raises ConfigError: {exc}"
    lines = [head]
    for other, answer in answers(call).items():
        mark = "*" if other == chosen else "-"
        if isinstance(answer, Decline):
            lines.append(f"  {mark} {other}: declines: {answer.reason}")
        elif not answer.pays and name == "auto":
            lines.append(f"  {mark} {other}: could run ({answer.note}) but does not pay here: {answer.why_not}")
        else:
            lines.append(f"  {mark} {other}: {answer.note}")
    return "\n".join(lines)
