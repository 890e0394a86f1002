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

``run_suite`` runs every registered check ``trials`` times and reports, per reduction, the number of
configurations, the max errors, the tolerances and PASS/FAIL. ``itnet verify`` is its CLI.
"""
import dataclasses
import importlib
import math

import numpy as np

from .cli import subcommand
from .errors import ConfigError

# Modules whose import registers reductions (each proofs module registers its own).
PROOF_MODULES = ("conv", "attention", "nadaraya_watson", "cordonnier", "linear_attention", "ssm", "mamba",
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
    """Import every proofs module so that its reductions register; returns the registry."""
    for module in PROOF_MODULES:
        try:
            importlib.import_module(f"itnet_np.proofs.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"itnet_np.proofs.{module}":
                raise
    return REGISTRY


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


def run_suite(trials=5, seed=0, only=None, progress=True):
    """Run the registered reductions; returns a list of result dicts (one per reduction)."""
    registry = load_reductions()
    names = sorted(registry)
    if only:
        wanted = [n for n in names if only.lower() in n.lower()]
        if not wanted:
            raise ConfigError(f"--only {only!r} matches no reduction; known reductions: {', '.join(names)}")
        names = wanted
    from tqdm import tqdm
    results = []
    bar = tqdm(total=len(names) * trials, desc="verify", unit="config", disable=not progress)
    for k, name in enumerate(names):
        red = registry[name]
        fwd, grad, failures = 0.0, None, []
        for t in range(trials):
            rng = np.random.default_rng([seed, k, t])
            try:
                m = red.check(rng)
                fwd = max(fwd, m.forward)
                if m.gradient is not None:
                    grad = m.gradient if grad is None else max(grad, m.gradient)
            except Exception as e:  # a crash is a failure of that configuration, reported, not raised
                failures.append(f"trial {t}: {type(e).__name__}: {e}")
            bar.update(1)
        ok = (not failures and math.isfinite(fwd) and fwd <= red.tolerance
              and (grad is None or grad <= red.grad_tolerance))
        results.append({"reduction": name, "configurations": trials, "forward_error": fwd,
                        "gradient_error": grad, "tolerance": red.tolerance,
                        "grad_tolerance": red.grad_tolerance, "passed": ok, "failures": failures,
                        "description": red.description})
    bar.close()
    return results


def format_table(results):
    """The suite's results as a plain-text table."""
    header = ("reduction", "configs", "max |err| fwd", "max |err| grad", "tolerance", "result")
    rows = [(r["reduction"], str(r["configurations"]), f"{r['forward_error']:.2e}",
             "-" if r["gradient_error"] is None else f"{r['gradient_error']:.2e}",
             f"{r['tolerance']:.0e} / {r['grad_tolerance']:.0e}", "PASS" if r["passed"] else "FAIL")
            for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    out = [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]
    for r in results:
        for f in r["failures"][:3]:
            out.append(f"  {r['reduction']}: {f}")
    return "\n".join(out)


# ----------------------------------------------------------------------------------------- CLI
def _verify_arguments(parser):
    parser.add_argument("--trials", type=int, default=5, help="random configurations per reduction (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random configurations (default 0)")
    parser.add_argument("--only", metavar="NAME", help="run only the reductions whose name contains NAME")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON (atomically) to PATH")


@subcommand("verify", help="run every reduction (conv, attention, SSMs, recurrences) on random "
            "configurations against the independent references", arguments=_verify_arguments)
def _verify(args):
    import sys

    if args.trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {args.trials}")
    results = run_suite(trials=args.trials, seed=args.seed, only=args.only, progress=sys.stderr.isatty())
    print(format_table(results))
    failed = [r["reduction"] for r in results if not r["passed"]]
    print(f"\n{len(results) - len(failed)} passed, {len(failed)} failed")
    if args.json:
        from .io import write_json
        from ._version import __version__
        write_json(args.json, {"itnet_np": __version__, "trials": args.trials, "seed": args.seed,
                               "only": args.only, "results": results, "passed": not failed})
        print(f"report written to {args.json}")
    return 1 if failed else 0

