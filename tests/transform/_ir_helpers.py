"""Inspect the LLVM IR of a fused kernel compiled afresh (a private NUMBA_CACHE_DIR in a
subprocess: numba cannot show the IR of code loaded from its cache)."""
import os
import subprocess
import sys
import tempfile
import textwrap

SCRIPT = textwrap.dedent("""
    import re, sys
    import numpy as np
    import importlib
    mod = importlib.import_module(sys.argv[1])
    exec(sys.argv[3])                        # one float32 call that compiles the kernel
    for ir in getattr(mod, sys.argv[2]).inspect_llvm().values():
        print("FPEXT", len(re.findall(r"fpext float", ir)), "VEC", len(re.findall(r"<8 x float>", ir)))
""")


def float32_ir_counts(module, kernel, call):
    """(float -> double conversions, <8 x float> vector values) in the IR of ``module.kernel``
    compiled for float32 by the statement ``call`` (which sees ``mod`` and ``np``)."""
    with tempfile.TemporaryDirectory() as cache:
        res = subprocess.run([sys.executable, "-c", SCRIPT, module, kernel, call], capture_output=True,
                             text=True, timeout=900, check=False,
                             env=dict(os.environ, NUMBA_CACHE_DIR=cache))
    assert res.returncode == 0, res.stderr
    line = next(x for x in res.stdout.splitlines() if x.startswith("FPEXT"))
    _, fpext, _, vec = line.split()
    return int(fpext), int(vec)
