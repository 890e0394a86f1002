"""The ``itnet`` command line: ``itnet --version``, ``itnet info``, ``itnet demo``.

Subcommands live in a registry. A subcommand is a function ``run(args) -> exit code`` registered
with the :func:`subcommand` decorator, which also names a function that adds its options to an
argparse sub-parser. A later issue adds ``itnet verify`` by writing, in its own module,

    from itnet_np.cli import subcommand

    @subcommand("verify", help="...", arguments=_verify_arguments)
    def _verify(args): ...

and listing that module in ``COMMAND_MODULES``. Keep the top-level imports of such modules light:
they are imported whenever the parser is built; heavy imports belong inside ``run``.

Errors never reach the user as a traceback: :func:`main` prints ``itnet: error: <message>`` on
stderr and returns 2 for usage and configuration errors (argparse errors, ConfigError), 1 for any
other failure. ``itnet --traceback <command>`` re-raises instead, for debugging.
"""
import argparse
import os
import platform
import sys
from collections import namedtuple

from ._version import __version__

# Modules that register more subcommands when imported (e.g. "itnet_np.transform.verify_cli").
COMMAND_MODULES = ("itnet_np.verify",)

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


def _positive(kind):
    """An argparse ``type`` that accepts positive numbers of ``kind`` (int or float) only."""
    def convert(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value
    return convert


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
    parser.add_argument("--steps", type=_positive(int), default=200, help="Adam steps (default 200)")
    parser.add_argument("--hidden", type=_positive(int), default=64, help="hidden width (default 64)")
    parser.add_argument("--lr", type=_positive(float), default=1e-2, help="learning rate (default 1e-2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")


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
    bar = _progress(range(1, args.steps + 1), desc="training", unit="step")
    for step in bar:
        opt.zero_grad()
        loss = F.cross_entropy(model(x_train), y_train)
        loss.backward()
        opt.step()
        if step % report == 0 or step == args.steps:
            # bar.write prints above the progress bar instead of through it (plain print without a TTY).
            train_accuracy = accuracy(x_train, y_train)
            bar.write(f"step {step:5d}  loss {loss.item():.4f}  train accuracy {train_accuracy:.3f}")
    elapsed = time.perf_counter() - start
    print(f"test accuracy {accuracy(x_test, y_test):.3f} after {args.steps} steps "
          f"({elapsed:.1f} s, {1e3 * elapsed / args.steps:.1f} ms/step)")
    return 0


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
        if isinstance(exc, ITNetError):
            return _fail(str(exc), code)
        return _fail(f"{type(exc).__name__}: {exc} (run with --traceback for details)", code)
