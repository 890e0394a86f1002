"""The verification suite: every reduction of the paper, run on random configurations.

A reduction registers one *check*: a function ``check(rng) -> Measurement`` that draws a random
configuration (shapes, hyper-parameters, weights, inputs) in float64, builds the ITNet layer from
the conventional layer's weights (``itnet_np.proofs``), and measures it against the independent
reference (``itnet_np.proofs.reference``):

- ``forward``: max |y_itnet - y_reference|, and
- ``gradient``: the gradient error, measured without differentiating the reference by hand: draw a
  random cotangent u and random directions v_k for the inputs and conventional weights; the engine
  gives  a = sum_k <d<u, y_itnet>/d x_k, v_k>,  central differences of the *reference* give n; the
  error is |a - n| / max(1, |n|)  (``directional_gradient_error``).

The checks live in ``itnet_np.proofs.checks`` (one module per family, imported by
:func:`load_reductions`), apart from the constructions they exercise: importing a proof imports
neither this module nor the command line. :func:`iter_suite` yields one result per reduction as it
finishes (so a caller can keep what finished when interrupted); :func:`run_suite` collects them.
``itnet verify`` (:mod:`itnet_np.cli`) is the command line on top; this module knows nothing of it.
"""
import dataclasses
import importlib
import math
import zlib

import numpy as np

from .errors import ConfigError

# Modules under itnet_np.proofs.checks whose import registers reductions (one per family).
CHECK_MODULES = ("conv", "attention", "nadaraya_watson", "cordonnier", "linear_attention", "ssm", "mamba",
                 "recurrence")


@dataclasses.dataclass
class Measurement:
    """Errors of one configuration (None where a quantity is not measured)."""
    forward: float
    gradient: float = None


@dataclasses.dataclass
class Reduction:
    name: str
    check: object
    tolerance: float
    grad_tolerance: float
    description: str


REGISTRY = {}


def reduction(name, tolerance=1e-10, grad_tolerance=1e-6, description=""):
    """Decorator: register ``check(rng) -> Measurement`` as the reduction ``name``."""
    def register(check):
        if name in REGISTRY and REGISTRY[name].check.__qualname__ != check.__qualname__:
            raise ConfigError(f"reduction {name!r} is registered twice")
        REGISTRY[name] = Reduction(name, check, tolerance, grad_tolerance,
                                   description or (check.__doc__ or "").strip().split("\n")[0])
        return check
    return register


def load_reductions():
    """Import every check module so that its reductions register; returns the registry."""
    for module in CHECK_MODULES:
        try:
            importlib.import_module(f"itnet_np.proofs.checks.{module}")
        except ModuleNotFoundError as e:
            if e.name != "itnet_np.proofs":
                raise
            raise ConfigError("itnet_np.proofs is not importable: proofs/ is mapped into the package when "
                              "it is installed (pip install -e . from the repository root)") from None
    return REGISTRY


def select(only=None):
    """The names of the registered reductions to run, sorted: all, or those containing ``only``
    (case-insensitive). ConfigError when ``only`` matches none."""
    names = sorted(load_reductions())
    if not names:
        raise ConfigError("no reduction is registered")
    if only is None:
        return names
    if not isinstance(only, str) or not only.strip():
        raise ConfigError(f"only: expected a non-empty part of a reduction name, got {only!r}")
    wanted = [n for n in names if only.lower() in n.lower()]
    if not wanted:
        raise ConfigError(f"--only {only!r} matches no reduction; known reductions: {', '.join(names)}")
    return wanted


def max_abs(a, b):
    """max |a - b| over arrays or Tensors (shapes must agree exactly)."""
    a = np.asarray(getattr(a, "data", a))
    b = np.asarray(getattr(b, "data", b))
    if a.shape != b.shape:
        raise AssertionError(f"shape mismatch: ITNet gives {a.shape}, the reference {b.shape}")
    return float(np.max(np.abs(a - b))) if a.size else 0.0


def directional_gradient_error(itnet_fn, reference_fn, inputs, rng, eps=1e-6):
    """Relative error between the engine's VJP of ``itnet_fn`` and central differences of ``reference_fn``.

    Both functions take the same list of float64 arrays ``inputs`` (the engine version receives
    Tensors that require grad) and return one array (or Tensor) of the same shape. The directional
    derivative of <u, reference(x + t v)> at t = 0 is compared with sum_k <vjp_k(u), v_k>.
    """
    from .autograd.tensor import Tensor
    xs = [Tensor(np.asarray(x, dtype=np.float64), requires_grad=True) for x in inputs]
    y = itnet_fn(*xs)
    u = rng.standard_normal(y.shape)
    vs = [rng.standard_normal(np.shape(x)) for x in inputs]
    (y * u).sum().backward()
    analytic = sum(float(np.sum(x.grad.data * v)) if x.grad is not None else 0.0 for x, v in zip(xs, vs))
    plus = np.asarray(reference_fn(*[np.asarray(x) + eps * v for x, v in zip(inputs, vs)]))
    minus = np.asarray(reference_fn(*[np.asarray(x) - eps * v for x, v in zip(inputs, vs)]))
    numeric = float(np.sum(u * (plus - minus))) / (2 * eps)
    return abs(analytic - numeric) / max(1.0, abs(numeric))


def _count(value, name, minimum):
    """``value`` as an int >= minimum (bools and non-integers refused), else ConfigError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def measure(red, trials, seed, on_trial=None):
    """Run reduction ``red`` on ``trials`` configurations; configuration t draws from
    default_rng([seed, crc32(name), t]). Returns the result dict (see :func:`iter_suite`)."""
    fwd, grad, failures = 0.0, None, []
    tag = zlib.crc32(red.name.encode("utf-8"))
    for t in range(trials):
        rng = np.random.default_rng([seed, tag, t])
        try:
            m = red.check(rng)
            fwd = max(fwd, m.forward)
            if m.gradient is not None:
                grad = m.gradient if grad is None else max(grad, m.gradient)
        except Exception as e:  # noqa: BLE001  a crash fails that configuration, reported, not raised
            failures.append(f"trial {t}: {type(e).__name__}: {e}")
        if on_trial is not None:
            on_trial()
    ok = (not failures and math.isfinite(fwd) and fwd <= red.tolerance
          and (grad is None or (math.isfinite(grad) and grad <= red.grad_tolerance)))
    return {"reduction": red.name, "configurations": trials, "forward_error": fwd, "gradient_error": grad,
            "tolerance": red.tolerance, "grad_tolerance": red.grad_tolerance, "passed": ok,
            "failures": failures, "description": red.description}


def iter_suite(trials=5, seed=0, only=None, names=None, on_trial=None):
    """Yield one result dict per reduction, in name order, as each finishes.

    A result holds reduction, configurations, forward_error, gradient_error (None when not measured),
    tolerance, grad_tolerance, passed, failures (one line per crashed configuration) and description.
    ``names`` (from :func:`select`) overrides ``only``; ``on_trial()`` is called after every
    configuration. A reduction's configurations depend on (seed, its name, trial) only, so --only
    reproduces the configurations of a full run and a new reduction changes no other's.
    """
    trials, seed = _count(trials, "trials", 1), _count(seed, "seed", 0)
    names = select(only) if names is None else list(names)
    for name in names:
        yield measure(REGISTRY[name], trials, seed, on_trial)


def run_suite(trials=5, seed=0, only=None, progress=True):
    """Run the registered reductions; returns a list of result dicts (one per reduction)."""
    names = select(only)
    from tqdm import tqdm
    with tqdm(total=len(names) * trials, desc="verify", unit="config", disable=not progress) as bar:
        return list(iter_suite(trials, seed, names=names, on_trial=lambda: bar.update(1)))


def format_table(results):
    """The suite's results as a plain-text table."""
    header = ("reduction", "configs", "max |err| fwd", "max |err| grad", "tolerance", "result")
    rows = [(r["reduction"], str(r["configurations"]), f"{r['forward_error']:.2e}",
             "-" if r["gradient_error"] is None else f"{r['gradient_error']:.2e}",
             f"{r['tolerance']:.0e} / {r['grad_tolerance']:.0e}", "PASS" if r["passed"] else "FAIL")
            for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]
    for r in results:
        for f in r["failures"][:3]:
            out.append(f"  {r['reduction']}: {f}")
    return "\n".join(out)
