"""Shared benchmark helpers: timing, machine facts, atomic result files, markdown tables."""
import os
import platform
import statistics
import subprocess
import sys
import time


def timeit(fn, repeat=20, warmup=3, min_time=0.0):
    """Median and min wall time of ``fn()`` in seconds, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    samples = []
    start = time.perf_counter()
    while len(samples) < repeat or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), min(samples)


def peak_rss_mib():
    """Peak resident set size of this process so far, in MiB (Linux: ru_maxrss is KiB)."""
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def machine():
    """A dict of facts that make a measurement interpretable."""
    import numpy as np
    facts = {"python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform(),
             "cores": os.cpu_count()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, ValueError, subprocess.SubprocessError):   # no lscpu (not Linux), it hung, bad output
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            facts["cpu"] = line.split(":", 1)[1].strip()
    try:
        import numba
        facts["numba"] = numba.__version__
    except ImportError:
        pass
    try:
        import torch
        facts["torch"] = torch.__version__
        facts["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return facts


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def log(*args):
    print(*args, file=sys.stderr, flush=True)
