"""Execute the teaching notebooks top to bottom, as CI does, and report the time each one took.

    python examples/run_notebooks.py                      # every examples/NN_*.py, in order
    python examples/run_notebooks.py 03 07                # only the notebooks whose number is given
    python examples/run_notebooks.py --out executed/      # also keep the executed .ipynb files
    python examples/run_notebooks.py --budget 300         # fail if all of them took longer

The notebooks are stored as jupytext "percent" scripts (``# %%`` starts a code cell, ``# %% [markdown]``
a text cell), so that a diff reads like code. This script converts each one with jupytext,
executes it in a fresh Jupyter kernel with nbclient (the kernel of the running interpreter), and
stops at the first cell that raises: its traceback is printed and the exit status is 1. Needs
``pip install '.[notebooks]'``.

Environment: ``ITNET_FULL_SIZE=1`` raises every notebook to its full-size figures (slower; the
budget is then not checked). Figures go to the inline backend of the kernel; nothing is written
beside the sources unless ``--out`` is given (each executed notebook is written to a temporary file
first and then renamed, so an interrupted run never leaves half a notebook).
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent


def notebook_sources(numbers=()):
    """The notebook scripts ``examples/NN_name.py`` in order, optionally only the given numbers."""
    found = sorted(p for p in EXAMPLES.glob("[0-9][0-9]_*.py"))
    if not numbers:
        return found
    wanted = {f"{int(n):02d}" for n in numbers}
    chosen = [p for p in found if p.name[:2] in wanted]
    missing = wanted - {p.name[:2] for p in chosen}
    if missing:
        raise SystemExit(f"run_notebooks: no notebook numbered {', '.join(sorted(missing))} in {EXAMPLES} "
                         f"(have {', '.join(p.name[:2] for p in found)})")
    return chosen


def _write_atomically(notebook, path):
    import nbformat
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            nbformat.write(notebook, handle)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def execute(source, cell_timeout, out_dir=None):
    """Run one notebook script in a fresh kernel; return (seconds, error message or None)."""
    import jupytext
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    notebook = jupytext.read(source)
    # The kernel of the interpreter running this script, whatever its kernelspec is called.
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    start = time.perf_counter()
    error = None
    with tempfile.TemporaryDirectory(prefix="itnet-kernel-") as sockets:
        # IPC transport: the kernel talks to this process over local sockets, not TCP.
        manager = KernelManager(kernel_name="python3", transport="ipc", ip=str(Path(sockets) / "kernel"))
        client = NotebookClient(notebook, km=manager, timeout=cell_timeout,
                                resources={"metadata": {"path": str(EXAMPLES)}})
        try:
            client.execute(cleanup_kc=True)      # our own manager: shut its kernel down here
        except (CellExecutionError, CellTimeoutError) as exc:
            error = str(exc)
    seconds = time.perf_counter() - start
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_atomically(notebook, out_dir / (source.stem + ".ipynb"))
    return seconds, error


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("numbers", nargs="*", help="run only these notebooks (by number, e.g. 03)")
    parser.add_argument("--out", type=Path, default=None, help="write the executed .ipynb files here")
    parser.add_argument("--budget", type=float, default=None,
                        help="fail if all the notebooks together take longer than this many seconds")
    parser.add_argument("--cell-timeout", type=int, default=600, help="seconds one cell may run (default 600)")
    args = parser.parse_args(argv)
    try:
        import jupytext  # noqa: F401
        import nbclient  # noqa: F401
    except ImportError as exc:
        raise SystemExit(f"run_notebooks: {exc.name} is missing; install the extra: pip install '.[notebooks]'")
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    full = os.environ.get("ITNET_FULL_SIZE", "0") not in ("", "0")
    sources = notebook_sources(args.numbers)
    total = 0.0
    for source in sources:
        seconds, error = execute(source, args.cell_timeout, args.out)
        total += seconds
        print(f"{'FAILED' if error else 'ok':6s} {source.name:45s} {seconds:7.1f} s", flush=True)
        if error:
            print(error, file=sys.stderr)
            return 1
    print(f"{len(sources)} notebooks in {total:.1f} s" + (" (full size)" if full else ""))
    if args.budget is not None and not full and total > args.budget:
        print(f"run_notebooks: {total:.1f} s is over the budget of {args.budget:.0f} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
