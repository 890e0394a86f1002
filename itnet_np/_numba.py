"""Shared Numba machinery of the CPU kernels (transform/fused/, nn/functional/_cpu_kernels.py):
the JIT options, a vectorisable exp, the task runner and the one-time compile notice.

``JIT``: nogil (the kernels run on plain Python threads), cache=True, fastmath without 'nnan' /
'ninf' (-inf marks masked logits and must survive max / compare / select), error_model="numpy" (no
ZeroDivisionError checks, which kept every loop with a division scalar).

``fexp(x)``: exp by range reduction, x = n ln2 + r with |r| <= ln2/2, e^r by a Taylor polynomial
(degree 13 in float64, 7 in float32: truncation below one ulp) and 2^n built from the exponent bits.
``math.exp`` is a scalar libm call (this numba has no SVML); fexp is branch-free, so LLVM inlines
and vectorises the loops that call it: 5-20x faster per element here, measured error <= 1 ulp for
results in the normal range. Results below the smallest normal (x < -708 in float64, x < -87 in
float32) are flushed to exactly 0, so x = -inf gives 0; x is clamped above, so +inf never appears;
NaN gives NaN (a NaN logit or weight is never mistaken for an excluded pair).

``run_tasks(kernel, n_tasks, *args, family, blas=False)``: spreads nogil kernel tasks over
numba.get_num_threads() Python threads; with blas=True (kernels that call np.dot on small tiles)
it holds the BLAS at one thread meanwhile.

Compile notice: A one-line notice on stderr before a fused kernel compiles: the first call of a kernel family
compiles for 8 to 45 s (numba), which otherwise looks like a hang.

``announce(family, dispatcher, args)`` is called just before ``dispatcher(*args)``. It prints

    itnet-np: compiling fused kernels (<family>, <dtype>), first use only; cached afterwards

at most once per (family, dtype) per process, and only when the call will really compile: the
dispatcher holds no overload for these argument types yet AND numba's on-disk cache (cache=True)
holds none either. Reading the cache index uses numba internals (``_cache._index_key`` and the index
file); if they are unavailable the notice errs on the side of being printed.

Numba caching caveat: cache=True keys each kernel on its own file only. After editing this file,
delete the kernels' __pycache__/*.nbi/*.nbc (or use a fresh NUMBA_CACHE_DIR), or they keep the old
helpers.
"""
import ctypes
import math
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

# fastmath without 'nnan'/'ninf': -inf marks masked logits and must survive max/compare/select.
FASTMATH = {"contract", "nsz", "arcp", "reassoc"}
# The Cody-Waite range reduction in fexp must not be reassociated (n*hi + n*lo -> n*(hi+lo)).
_EXACT_FM = {"contract", "nsz", "arcp"}
# error_model="numpy": no ZeroDivisionError checks, which kept every loop with a division scalar.
JIT = {"nogil": True, "cache": True, "fastmath": FASTMATH, "error_model": "numpy"}

@intrinsic
def _bits_as_float(typingctx, bits):
    """Reinterpret an int64 (int32) as a float64 (float32): one bitcast, vectorises."""
    if bits == types.int64:
        sig, lltype = types.float64(types.int64), ir.DoubleType()
    elif bits == types.int32:
        sig, lltype = types.float32(types.int32), ir.FloatType()
    else:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], lltype)

    return sig, codegen


def fexp(x):
    """exp(x); the compiled version (see the module docstring) is used inside the kernels."""
    return math.exp(x)


@overload(fexp, jit_options={"fastmath": _EXACT_FM, "error_model": "numpy"})
def _fexp_impl(x):
    if x == types.float64:
        def impl(x):
            xc = min(max(x, -708.0), 709.0)
            n = np.floor(xc * 1.4426950408889634 + 0.5)
            r = (xc - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10
            p = 1.0 / 6227020800.0
            p = p * r + 1.0 / 479001600.0
            p = p * r + 1.0 / 39916800.0
            p = p * r + 1.0 / 3628800.0
            p = p * r + 1.0 / 362880.0
            p = p * r + 1.0 / 40320.0
            p = p * r + 1.0 / 5040.0
            p = p * r + 1.0 / 720.0
            p = p * r + 1.0 / 120.0
            p = p * r + 1.0 / 24.0
            p = p * r + 1.0 / 6.0
            p = p * r + 0.5
            p = p * r + 1.0
            p = p * r + 1.0
            y = p * _bits_as_float((np.int64(n) + 1023) << 52)
            y = y if x > -708.0 else 0.0
            return x if math.isnan(x) else y             # NaN in, NaN out (the clamp dropped it)
        return impl
    if x == types.float32:
        def impl32(x):
            xc = min(max(x, np.float32(-87.0)), np.float32(88.0))
            n = np.floor(xc * np.float32(1.442695) + np.float32(0.5))
            r = (xc - n * np.float32(0.693145751953125)) - n * np.float32(1.428606765330187e-06)
            p = np.float32(1.0 / 5040.0)
            p = p * r + np.float32(1.0 / 720.0)
            p = p * r + np.float32(1.0 / 120.0)
            p = p * r + np.float32(1.0 / 24.0)
            p = p * r + np.float32(1.0 / 6.0)
            p = p * r + np.float32(0.5)
            p = p * r + np.float32(1.0)
            p = p * r + np.float32(1.0)
            y = p * _bits_as_float(np.int32((np.int32(n) + np.int32(127)) << np.int32(23)))
            y = y if x > np.float32(-87.0) else np.float32(0.0)
            return x if math.isnan(x) else y
        return impl32
    return None



def typed(value, like):
    """``value`` in the dtype of the array ``like``; compiled, a constant of that float type (a Python
    float literal would turn float32 arithmetic into float64, and so would ``x if c else 0``)."""
    return like.dtype.type(value)


@overload(typed, jit_options={"fastmath": FASTMATH})
def _typed(value, like):
    cast = np.float32 if like.dtype == types.float32 else np.float64
    return lambda value, like: cast(value)


# ----------------------------------------------------------------------------- compile notice

_checked = set()
_lock = threading.Lock()


def notice(family, dtype):
    """Print the notice for (family, dtype) once per process; True when it was printed now."""
    key = (family, str(dtype))
    with _lock:
        if key in _checked:
            return False
        _checked.add(key)
    print(f"itnet-np: compiling fused kernels ({family}, {dtype}), first use only; cached afterwards",
          file=sys.stderr, flush=True)
    return True


def will_compile(dispatcher, args):
    """Whether ``dispatcher(*args)`` compiles: no in-process overload matches the argument types and
    numba's disk cache has no entry for them (True when that cannot be told)."""
    try:
        sig = tuple(dispatcher.typeof_pyval(a) for a in args)
    except Exception:  # noqa: BLE001  (numba internals moved: compiles if nothing is compiled yet)
        return not dispatcher.signatures
    if sig in dispatcher.overloads:
        return False
    try:
        cache = dispatcher._cache
        key = cache._index_key(sig, dispatcher.targetctx.codegen())
        return key not in cache._cache_file._load_index()
    except Exception:  # noqa: BLE001  (no disk cache, or its internals moved: it will compile)
        return True


def announce(family, dispatcher, args):
    """The notice for ``family`` when ``dispatcher(*args)`` is about to compile (module docstring)."""
    dtype = next((a.dtype for a in args if isinstance(a, np.ndarray) and a.dtype.kind == "f"), None)
    if (family, str(dtype)) in _checked:          # fast path: one set lookup per call afterwards
        return False
    if will_compile(dispatcher, args):
        return notice(family, dtype)
    with _lock:
        _checked.add((family, str(dtype)))
    return False


# ----------------------------------------------------------------------------- threads

_pool = None
_blas = {"ctl": False, "users": 0, "saved": 1, "lock": threading.Lock()}
_BLAS_THREAD_CALLS = (("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
                      ("openblas_get_num_threads", "openblas_set_num_threads"),
                      ("MKL_Get_Max_Threads", "MKL_Set_Num_Threads"))


def _blas_thread_control():
    """(get, set) thread-count calls of the BLAS behind scipy.linalg.cython_blas (the library
    numba's np.dot calls), or None when it exposes neither OpenBLAS's nor MKL's."""
    if _blas["ctl"] is False:
        _blas["ctl"] = None
        try:
            from scipy.linalg import cython_blas
            lib = ctypes.CDLL(cython_blas.__file__)     # dlsym also searches its dependencies
            for get, set_ in _BLAS_THREAD_CALLS:
                if hasattr(lib, get) and hasattr(lib, set_):
                    _blas["ctl"] = (getattr(lib, get), getattr(lib, set_))
                    break
        except (ImportError, OSError):
            pass
    return _blas["ctl"]


@contextmanager
def blas_single_thread():
    """Hold the BLAS at one thread while the fused kernels run (their threads each call small
    gemms: a threaded BLAS oversubscribes the cores and its idle workers spin, which cost ~30 %
    here). The BLAS setting is process-wide, so it is restored when the last caller leaves."""
    ctl = _blas_thread_control()
    if ctl is None:
        yield
        return
    with _blas["lock"]:
        if _blas["users"] == 0:
            _blas["saved"] = ctl[0]()
            if _blas["saved"] != 1:
                ctl[1](1)
        _blas["users"] += 1
    try:
        yield
    finally:
        with _blas["lock"]:
            _blas["users"] -= 1
            if _blas["users"] == 0 and _blas["saved"] != 1:
                ctl[1](_blas["saved"])


def run_tasks(kernel, n_tasks, *args, family, blas=False):
    """Run ``kernel(first, step, n_tasks, *args)`` on numba.get_num_threads() threads; ``family``
    names the kernel in the first-compilation notice. blas=True holds the BLAS at one thread while
    the tasks run (for kernels that call np.dot on small tiles from every thread); kernels without
    BLAS calls leave it alone (taking and restoring the setting cost ~20 us per call).

    Thread r takes tasks r, r + T, r + 2T, ... (interleaved, so causal tiles balance). The kernels
    are nogil, so plain Python threads run them in parallel; compared with a numba prange wrapper
    this halves the cold compile time (the parfor machinery cost ~3 s per kernel and dtype).
    """
    global _pool
    announce(family, kernel, (0, 1, n_tasks) + args)
    threads = max(1, min(nb.get_num_threads(), n_tasks))
    with blas_single_thread() if blas else nullcontext():
        if threads == 1:
            kernel(0, 1, n_tasks, *args)
            return
        if _pool is None or _pool._max_workers < threads:
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="itnet-kernels")
        for f in [_pool.submit(kernel, r, threads, n_tasks, *args) for r in range(threads)]:
            f.result()
