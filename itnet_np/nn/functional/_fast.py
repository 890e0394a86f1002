"""When the fused CPU kernels (``_cpu_kernels``, Numba) replace the NumPy code of a raw fast path.

A kernel runs only when every array it reads is a C-contiguous NumPy array of one dtype, float32 or
float64, and the first one holds at least ``MIN_SIZE`` elements; anything else (CuPy arrays, views,
other dtypes, small inputs) takes the plain NumPy code beside the call, which is also the reference
the kernels are tested against (tests/nn/test_cpu_kernels.py). Numba is imported on the first call
that qualifies, so ``import itnet_np`` does not pay for it.

Switches: the environment variable ``ITNET_NO_NUMBA_ELEMENTWISE=1`` (read at import), or
``itnet_np.nn.functional._fast.ENABLED = False`` at run time (the benchmark's before/after).
"""
import os

import numpy as np

ENABLED = os.environ.get("ITNET_NO_NUMBA_ELEMENTWISE", "").strip() in ("", "0")
# From this many elements on, a kernel on the calling thread beats NumPy's passes (their per-call
# overhead is a few µs each); measured on the 2-core machine of BENCHMARKS.md (engine section).
MIN_SIZE = 1 << 12

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_module = []


def kernels(*arrays):
    """The ``_cpu_kernels`` module when it should run on ``arrays`` (see the module docstring),
    else None."""
    if not ENABLED:
        return None
    first = arrays[0]
    if type(first) is not np.ndarray or first.size < MIN_SIZE or first.dtype not in _FLOATS:
        return None
    for a in arrays:
        if type(a) is not np.ndarray or a.dtype != first.dtype or not a.flags.c_contiguous:
            return None
    if not _module:
        try:
            from . import _cpu_kernels
        except ImportError:  # Numba missing or broken: the NumPy passes do the work
            return None
        _module.append(_cpu_kernels)
    return _module[0]
