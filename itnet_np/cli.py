"""The ``itnet`` command line: ``itnet --version``, ``info``, ``demo`` and ``verify``.

Subcommands live in a registry. A subcommand is a function ``run(args) -> exit code`` registered
with the :func:`subcommand` decorator, which also names a function that adds its options to an
argparse sub-parser. A plug-in module registers more by writing

    from itnet_np.cli import subcommand

    @subcommand("name", help="...", arguments=_arguments)
    def _run(args): ...

and being listed in ``COMMAND_MODULES``. Keep the top-level imports of such modules light: they
are imported whenever the parser is built; heavy imports belong inside ``run``. The command line
depends on the library (``itnet verify`` runs :mod:`itnet_np.verify`), never the other way round.

Every argument is checked while parsing, before any work starts: the ``type=`` converters below
raise argparse errors that name the option, what was given and what is expected (exit 2).
Errors never reach the user as a traceback: :func:`main` prints ``itnet: error: <Type>: <message>``
on one line on stderr and returns 2 for configuration errors (ConfigError), 1 for any other
failure, and 130 after Ctrl-C (``itnet verify`` first writes what finished). ``itnet --traceback
<command>`` re-raises instead, for debugging.
"""
import argparse
import math
import os
import platform
import signal
import sys
import threading
from collections import namedtuple

from ._version import __version__

# Modules that register more subcommands when imported (plug-ins; the built-in ones are below).
COMMAND_MODULES = ("itnet_np.cli_train",)   # train, eval, plot

_Command = namedtuple("_Command", "name help arguments run")
_COMMANDS = {}


def subcommand(name, help, arguments=None):
    """Register ``run(args) -> int`` as ``itnet <name>``; ``arguments(parser)`` adds its options."""
    def register(run):
        if name in _COMMANDS:
            raise ValueError(f"itnet subcommand {name!r} is registered twice")
        _COMMANDS[name] = _Command(name, help, arguments, run)
        return run
    return register


# ------------------------------------------------------------------------------ argument types
# argparse ``type=`` converters: a raised ArgumentTypeError becomes "argument --x: <message>", exit 2.

def _integer(minimum):
    """An argparse type accepting integers >= ``minimum`` only."""
    def integer(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value
    return integer


def _positive_float(text):
    """An argparse type accepting finite floats > 0 only (not inf, not nan)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


def _name_part(text):
    """An argparse type accepting a non-blank string."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a non-empty part of a name, got {text!r}")
    return text


def _output_file(text):
    """An argparse type for a file to be written (atomically, by rename): not empty, not a directory
    nor any other non-regular file, in an existing writable directory."""
    def refuse(why):
        raise argparse.ArgumentTypeError(f"cannot write a file at {text!r}: {why}")
    if not text.strip():
        refuse("expected a file path")
    if text.endswith(("/", os.sep)) or os.path.isdir(text):
        refuse("it is a directory; expected a file path")
    if os.path.lexists(text) and not os.path.isfile(text):
        refuse("it exists and is not a regular file")
    directory = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(directory):
        refuse(f"{directory!r} is not a directory" if os.path.exists(directory)
               else f"directory {directory!r} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        refuse(f"directory {directory!r} is not writable")
    return text


def _progress(iterable, **kwargs):
    """A tqdm progress bar on stderr, shown only when stderr is a terminal."""
    from tqdm import tqdm
    return tqdm(iterable, file=sys.stderr, disable=not sys.stderr.isatty(), leave=False, **kwargs)


# ---------------------------------------------------------------------------------------- info

def _numba_threading():
    """(configured layer, layer in use): the second is known only after a parallel kernel has run."""
    import numba
    import numpy as np

    configured = numba.config.THREADING_LAYER

    @numba.njit(parallel=True, cache=False)
    def probe(x):
        total = 0.0
        for i in numba.prange(x.shape[0]):
            total += x[i]
        return total

    try:
        probe(np.ones(64))
        active = numba.threading_layer()
    except Exception as exc:  # noqa: BLE001  no usable layer (e.g. broken TBB/OpenMP): report it, keep going
        active = f"unavailable ({type(exc).__name__}: {exc})"
    return configured, active


def _info_lines():
    import numba
    import numpy
    import scipy

    from .autograd.backend import cupy_module, gpu_available
    from .autograd.tensor import get_default_dtype

    cupy = cupy_module()
    gpu = gpu_available()
    configured, active = _numba_threading()
    python = f"{platform.python_version()} ({platform.python_implementation()}, {platform.platform()})"
    return [
        ("itnet-np", __version__),
        ("python", python),
        ("numpy", numpy.__version__),
        ("scipy", scipy.__version__),
        ("numba", numba.__version__),
        ("cupy", cupy.__version__ if cupy is not None else "not installed"),
        ("gpu usable", "yes" if gpu else "no"),
        ("numba threading layer", f"{active} (configured: {configured})"),
        ("numba threads", str(numba.config.NUMBA_NUM_THREADS)),
        ("cpu count", str(os.cpu_count())),
        ("default dtype", str(get_default_dtype())),
    ]


@subcommand("info", help="print versions, GPU availability and the numba threading layer")
def _info(args):
    lines = _info_lines()
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        print(f"{key:<{width}}  {value}")
    return 0


# ---------------------------------------------------------------------------------------- demo

def _spirals(n_per_class, classes, rng, noise=0.2):
    """Interleaved 2-D spirals: ``classes`` arms of ``n_per_class`` points, labels 0..classes-1."""
    import numpy as np

    t = np.linspace(0.0, 1.0, n_per_class)
    radius = 0.1 + t
    xs, ys = [], []
    for c in range(classes):
        angle = 2.5 * np.pi * t + 2.0 * np.pi * c / classes + noise * rng.standard_normal(n_per_class)
        xs.append(np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1))
        ys.append(np.full(n_per_class, c))
    return np.concatenate(xs), np.concatenate(ys)


def _demo_arguments(parser):
    parser.add_argument("--steps", type=_integer(1), default=200, help="Adam steps (default 200)")
    parser.add_argument("--hidden", type=_integer(1), default=64, help="hidden width (default 64)")
    parser.add_argument("--lr", type=_positive_float, default=1e-2, help="learning rate (default 1e-2)")
    parser.add_argument("--seed", type=_integer(0), default=0, help="random seed (default 0)")


class DivergedError(ArithmeticError):
    """Training produced a non-finite loss (``itnet demo`` exits 1 with it)."""


def _check_loss(value, when, lr):
    if not math.isfinite(value):
        raise DivergedError(f"training diverged {when}: the loss is {value} (Adam lr={lr}; try a smaller --lr)")


@subcommand("demo", help="train a tiny MLP on 2-D spirals and print loss and accuracy",
            arguments=_demo_arguments)
def _demo(args):
    import time

    import numpy as np

    import itnet_np as itn
    from itnet_np import nn, optim
    from itnet_np.nn import functional as F

    rng = np.random.default_rng(args.seed)
    classes = 3
    x_all, y_all = _spirals(200, classes, rng)
    order = rng.permutation(len(y_all))
    train, test = order[:450], order[450:]
    x_train = itn.tensor(x_all[train], dtype=np.float32)
    x_test = itn.tensor(x_all[test], dtype=np.float32)
    y_train, y_test = y_all[train], y_all[test]

    model = nn.MLP([2, args.hidden, args.hidden, classes], activation="relu", rng=args.seed)
    opt = optim.Adam(model.parameters(), lr=args.lr)

    def accuracy(x, y):
        with itn.no_grad():
            return float(np.mean(np.argmax(model(x).numpy(), axis=1) == y))

    print(f"itnet demo: MLP 2-{args.hidden}-{args.hidden}-{classes}, Adam lr={args.lr}, "
          f"{len(train)} training / {len(test)} test points on {classes} spirals")
    start = time.perf_counter()
    report = max(1, args.steps // 5)
    # A diverging run overflows on its way to a non-finite loss: _check_loss reports that in one line,
    # so NumPy's overflow warnings would only repeat it.
    with np.errstate(over="ignore", invalid="ignore"), \
            _progress(range(1, args.steps + 1), desc="training", unit="step") as bar:
        for step in bar:
            opt.zero_grad()
            loss = F.cross_entropy(model(x_train), y_train)
            _check_loss(loss.item(), f"at step {step}", args.lr)
            loss.backward()
            opt.step()
            if step % report == 0 or step == args.steps:
                # bar.write prints above the progress bar, not through it (plain print without a TTY).
                train_accuracy = accuracy(x_train, y_train)
                bar.write(f"step {step:5d}  loss {loss.item():.4f}  train accuracy {train_accuracy:.3f}")
    elapsed = time.perf_counter() - start
    with itn.no_grad(), np.errstate(over="ignore", invalid="ignore"):
        _check_loss(F.cross_entropy(model(x_train), y_train).item(), f"after step {args.steps}", args.lr)
    print(f"test accuracy {accuracy(x_test, y_test):.3f} after {args.steps} steps "
          f"({elapsed:.1f} s, {1e3 * elapsed / args.steps:.1f} ms/step)")
    return 0


# -------------------------------------------------------------------------------------- verify

def _verify_arguments(parser):
    parser.add_argument("--trials", type=_integer(1), default=5,
                        help="random configurations per reduction (default 5)")
    parser.add_argument("--seed", type=_integer(0), default=0,
                        help="seed of the random configurations, >= 0 (default 0)")
    parser.add_argument("--only", type=_name_part, metavar="NAME",
                        help="run only the reductions whose name contains NAME (case-insensitive)")
    parser.add_argument("--json", type=_output_file, metavar="PATH",
                        help="also write the report as JSON (atomically) to PATH; an interrupted run "
                             "writes the reductions that finished, with \"complete\": false")


def _verify_report(args, names, results, complete):
    """Print the table and summary of ``results`` and write the JSON report; returns the exit code."""
    from . import verify
    from ._version import __version__

    failed = [r["reduction"] for r in results if not r["passed"]]
    print(verify.format_table(results))
    summary = f"{len(results) - len(failed)} passed, {len(failed)} failed"
    if not complete:
        summary += f", {len(names) - len(results)} not run (interrupted)"
    print(f"\n{summary}", flush=True)
    if args.json:
        from .io import write_json
        write_json(args.json, {"itnet_np": __version__, "trials": args.trials, "seed": args.seed,
                               "only": args.only, "reductions": names, "results": results,
                               "complete": complete, "passed": complete and not failed})
        print(f"report written to {args.json}" + ("" if complete else " (incomplete)"), flush=True)
    return 1 if failed else 0


@subcommand("verify", help="run every reduction (conv, attention, SSMs, recurrences) on random "
            "configurations against the independent references", arguments=_verify_arguments)
def _verify(args):
    from . import verify

    names = verify.select(args.only)          # an --only that matches nothing fails before any work
    results = []
    with SigintFlag() as interrupt, \
            _progress(None, total=len(names) * args.trials, desc="verify", unit="config") as bar:

        def on_trial():                        # between configurations: the safe point for Ctrl-C
            bar.update(1)
            if interrupt.requested:
                raise KeyboardInterrupt

        try:
            for result in verify.iter_suite(args.trials, args.seed, names=names, on_trial=on_trial):
                results.append(result)
                bar.write(f"verify [{len(results)}/{len(names)}] {result['reduction']}: "
                          f"{'PASS' if result['passed'] else 'FAIL'}", file=sys.stderr)
                sys.stderr.flush()
        except KeyboardInterrupt:              # keep what finished, then exit 130 (main)
            bar.close()
            _verify_report(args, names, results, complete=False)
            raise
    return _verify_report(args, names, results, complete=True)


class SigintFlag:
    """``with SigintFlag() as interrupt:`` -- Ctrl-C (SIGINT) sets ``interrupt.requested`` and the
    loop stops at its next safe point (the caller checks the flag); a second Ctrl-C raises
    KeyboardInterrupt at once. Outside the main thread it installs nothing (only that thread receives
    signals). A flag, not an exception: a KeyboardInterrupt raised by the default handler while the
    interpreter runs a finalizer (``__del__``, which Numba's compiler triggers by the thousand on a
    cold cache) is printed as "Exception ignored" and lost; a flag cannot be lost that way."""

    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


# ---------------------------------------------------------------------------------------- main

def build_parser():
    """The argparse parser with every registered subcommand."""
    import importlib

    for module in COMMAND_MODULES:
        importlib.import_module(module)
    parser = argparse.ArgumentParser(
        prog="itnet", description="ITNet, the Integral Transform Network: NumPy reference implementation.")
    parser.add_argument("--version", action="version", version=f"itnet-np {__version__}")
    parser.add_argument("--traceback", action="store_true",
                        help="show the full traceback when a command fails (for debugging)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for cmd in _COMMANDS.values():
        sub = commands.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        if cmd.arguments is not None:
            cmd.arguments(sub)
        sub.set_defaults(_run=cmd.run)
    return parser


def _fail(message, code):
    print(f"itnet: error: {message}", file=sys.stderr)
    return code


def _one_line(exc):
    """``Type: message`` of an exception on one line."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def main(argv=None):
    """Run ``itnet`` with ``argv`` (default ``sys.argv[1:]``) and return the exit code."""
    from .errors import ConfigError, ITNetError

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parser = build_parser()  # inside the try: a broken command module must not show a traceback
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # argparse: --help/--version (0) or a usage error (2, already printed)
            return exc.code if isinstance(exc.code, int) else 2
        code = args._run(args)
        sys.stdout.flush()  # surface a broken pipe here, where it is handled
        return code
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except BrokenPipeError:  # `itnet info | head`: the reader left; not an error worth a message
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (stays open until exit)
        return 1
    except Exception as exc:  # no traceback may reach the user
        if "--traceback" in argv:
            raise
        code = 2 if isinstance(exc, ConfigError) else 1
        hint = "" if isinstance(exc, ITNetError) else " (run with --traceback for details)"
        return _fail(_one_line(exc) + hint, code)
