"""Shared pieces of the fused (tiled) CPU kernels: a vectorisable exp, activations, index bands,
aligned scratch, the task runner and the Python-side argument checks.

``fexp(x)``: exp by range reduction, x = n ln2 + r with |r| <= ln2/2, e^r by a Taylor polynomial
(degree 13 in float64, 7 in float32: truncation below one ulp) and 2^n built from the exponent bits.
``math.exp`` is a scalar libm call (this numba has no SVML); fexp is branch-free, so LLVM inlines
and vectorises the loops that call it: 5-20x faster per element here, measured error <= 1 ulp for
results in the normal range. Results below the smallest normal (x < -708 in float64, x < -87 in
float32) are flushed to exactly 0, so x = -inf gives 0; x is clamped above, so +inf never appears;
NaN gives NaN (a NaN logit or weight is never mistaken for an excluded pair).

Activations: relu, gelu_tanh, silu, tanh (codes in ACTIVATIONS; the names and formulas are those of
itnet_np.nn.functional.activations.ACTIVATIONS, relu'(0) = 0) and their derivatives, via fexp.

Threads: ``run_tasks`` spreads nogil kernel tasks over numba.get_num_threads() Python threads and
holds the BLAS (the tiles' gemms) at one thread meanwhile.

Numba caching caveat: cache=True keys each kernel on its own file only. After editing this file,
delete itnet_np/transform/fused/__pycache__/*.nbi/*.nbc, or the kernels keep the old helpers.
"""
import ctypes
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from ...errors import ConfigError, DTypeError, ShapeError, describe
from ._notice import announce

# fastmath without 'nnan'/'ninf': -inf marks masked logits and must survive max/compare/select.
FASTMATH = {"contract", "nsz", "arcp", "reassoc"}
# The Cody-Waite range reduction in fexp must not be reassociated (n*hi + n*lo -> n*(hi+lo)).
_EXACT_FM = {"contract", "nsz", "arcp"}
# error_model="numpy": no ZeroDivisionError checks, which kept every loop with a division scalar.
JIT = {"nogil": True, "cache": True, "fastmath": FASTMATH, "error_model": "numpy"}

ACTIVATIONS = {"relu": 0, "gelu_tanh": 1, "silu": 2, "tanh": 3}
NORMALIZATIONS = {"softmax": 0, "sum": 1, "none": 2}
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


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


_GELU_2C = 2.0 * math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


@nb.njit(**JIT)
def _sigmoid(z):
    # fexp clamps, so z -> -inf gives ~1e-308 (not 1/inf) and z -> +inf gives exactly 1.
    return 1.0 / (1.0 + fexp(-z))


# gelu_tanh(x) = 0.5 x (1 + tanh(u)) = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3), and
# tanh(x) = 2 sigmoid(2x) - 1: one exp, one division, no branch, so the loops vectorise.
@nb.njit(**JIT)
def activate_row(row, code):
    """row <- act(row) in place; the branch sits outside the loops so each loop vectorises."""
    n = row.shape[0]
    if code == 0:
        for i in range(n):
            row[i] = max(row[i], 0)
    elif code == 1:
        for i in range(n):
            x = row[i]
            row[i] = x * _sigmoid(_GELU_2C * (x + _GELU_A * x * x * x))
    elif code == 2:
        for i in range(n):
            row[i] = row[i] * _sigmoid(row[i])
    else:
        for i in range(n):
            row[i] = 2.0 * _sigmoid(2.0 * row[i]) - 1.0


@nb.njit(**JIT)
def scale_by_activation_grad(g, pre, code):
    """g <- g * act'(pre) in place (the chain rule through the activation)."""
    n = g.shape[0]
    if code == 0:
        for i in range(n):
            g[i] = g[i] if pre[i] > 0 else 0
    elif code == 1:
        for i in range(n):
            x = pre[i]
            sg = _sigmoid(_GELU_2C * (x + _GELU_A * x * x * x))
            g[i] *= sg + x * sg * (1.0 - sg) * _GELU_2C * (1.0 + 3.0 * _GELU_A * x * x)
    elif code == 2:
        for i in range(n):
            sg = _sigmoid(pre[i])
            g[i] *= sg * (1.0 + pre[i] * (1.0 - sg))
    else:
        for i in range(n):
            t = 2.0 * _sigmoid(2.0 * pre[i]) - 1.0
            g[i] *= 1.0 - t * t


@nb.njit(**JIT)
def band(i_first, i_last, n_cols, causal, window):
    """Source range [lo, hi) that any query row in [i_first, i_last] may attend to."""
    lo, hi = 0, n_cols
    if causal:
        hi = min(hi, i_last + 1)
    if window >= 0:
        lo = max(lo, i_first - window)
        hi = min(hi, i_last + window + 1)
    return lo, hi


@nb.njit(**JIT)
def row_bands(i0, n_rows, n_cols, causal, window, lo, hi):
    """lo[ii], hi[ii]: the band of query i0 + ii (empty for the padding rows past n_rows)."""
    for ii in range(lo.shape[0]):
        a, z = band(i0 + ii, i0 + ii, n_cols, causal, window)
        lo[ii], hi[ii] = (a, z) if i0 + ii < n_rows else (0, 0)


@nb.njit(**JIT)
def clipped_row_bands(i0, n_rows, n_cols, causal, window, ranges, lo, hi):
    """row_bands, each row's [lo, hi) also clipped to the given per-row source range when
    ``ranges = (row_lo (N,), row_hi (N,), use)`` has use = True (the support descriptor's row ranges:
    strictly causal, a shifted grid, sorted off-grid positions)."""
    row_bands(i0, n_rows, n_cols, causal, window, lo, hi)
    row_lo, row_hi, use = ranges
    if use:
        for ii in range(lo.shape[0]):
            if i0 + ii < n_rows:
                lo[ii] = max(lo[ii], row_lo[i0 + ii])
                hi[ii] = max(lo[ii], min(hi[ii], row_hi[i0 + ii]))


@nb.njit(**JIT)
def tile_band(lo, hi, rows):
    """[jlo, jhi): the sources that any of the first ``rows`` rows attends to (0, 0 when none)."""
    jlo, jhi = 1 << 62, 0
    for ii in range(rows):
        if hi[ii] > lo[ii]:
            jlo = min(jlo, lo[ii])
            jhi = max(jhi, hi[ii])
    return (jlo, jhi) if jhi > 0 else (0, 0)


@nb.njit(inline="always", **JIT)
def aligned_empty(rows, cols, like):
    """Uninitialised (rows, cols) scratch of like's dtype whose first element sits on 64 bytes.

    Without this, np.empty's 16-byte alignment made tile timings swing by about +-30%.
    """
    n = rows * cols
    pad = 64 // like.itemsize
    buf = np.empty(n + pad, like.dtype)
    off = ((64 - buf.ctypes.data % 64) % 64) // like.itemsize
    return buf[off:off + n].reshape((rows, cols))


# ----------------------------------------------------------------------------- Python-side checks

def check_float(op, name, x, ndim, dtype=None):
    """x must be a float32/float64 ndarray with ndim dims (and dtype, when given)."""
    if not isinstance(x, np.ndarray):
        raise DTypeError(f"{op}: {name} must be a numpy array, got {type(x).__name__}")
    if x.dtype not in FLOATS:
        raise DTypeError(f"{op}: {name} must be float32 or float64, got {describe(x)}")
    if dtype is not None and x.dtype != dtype:
        raise DTypeError(f"{op}: {name} is {describe(x)} but the inputs are {dtype}; "
                         "all arrays must share one dtype")
    if x.ndim != ndim:
        raise ShapeError(f"{op}: {name} must have {ndim} dims, got {describe(x)}")
    return np.ascontiguousarray(x)


def broadcast4(op, name, x, full, dtype):
    """x broadcastable to ``full`` (4 dims) as a C-contiguous 4-d array whose dims are 1 or full.

    The kernels index a size-1 dim with 0, so the (B, H, N, M) broadcast is never materialised.
    """
    if dtype is bool:
        if not isinstance(x, np.ndarray) or x.dtype != np.bool_:
            raise DTypeError(f"{op}: {name} must be a bool array (True = attend), got {describe(x)}")
    else:
        check_float(op, name, x, np.ndim(x), dtype)
    if x.ndim > 4 or any(s not in (1, f) for s, f in zip(x.shape[::-1], full[::-1])):
        raise ShapeError(f"{op}: {name} must broadcast to {tuple(full)} with each dim 1 or full, "
                         f"got {describe(x)}")
    return np.ascontiguousarray(x.reshape((1,) * (4 - x.ndim) + x.shape))


def unbroadcast(grad, shape):
    """Sum a (B, H, N, M) gradient down to a broadcastable input's original shape."""
    nd = len(shape)
    lead = grad.ndim - nd
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape) if s == 1)
    return np.ascontiguousarray(grad.sum(axis=axes, keepdims=True).reshape(shape) if axes else grad)


def code_of(op, name, value, table):
    if value not in table:
        raise ConfigError(f"{op}: {name} must be one of {sorted(table)}, got {value!r}")
    return table[value]


def window_of(op, window):
    if window is None:
        return -1
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 0:
        raise ConfigError(f"{op}: window must be None or an int >= 0, got {window!r}")
    return int(window)


def ranges_of(op, ranges, n_rows, n_cols):
    """The kernels' ``ranges`` argument: (row_lo, row_hi, True) from per-row source ranges [lo_i, hi_i)
    (two int arrays of shape (N,), 0 <= lo, hi <= M), or unused dummies for None."""
    if ranges is None:
        return np.zeros(1, np.int64), np.zeros(1, np.int64), False
    lo, hi = (np.ascontiguousarray(np.asarray(r), np.int64) for r in ranges)
    if lo.shape != (n_rows,) or hi.shape != (n_rows,):
        raise ShapeError(f"{op}: ranges must be two int arrays of shape ({n_rows},), got {lo.shape}, {hi.shape}")
    if n_rows and (lo.min() < 0 or hi.max() > n_cols):
        raise ConfigError(f"{op}: ranges must lie in [0, {n_cols}]")
    return lo, hi, True


def pad_rows(x, axis, multiple):
    """x zero-padded along ``axis`` to a multiple of ``multiple``, always C-ordered (np.pad keeps a
    transposed input's F order, and every distinct layout is one more numba compilation)."""
    n = x.shape[axis]
    extra = -n % multiple
    if extra == 0:
        return np.ascontiguousarray(x)
    shape = list(x.shape)
    shape[axis] += extra
    out = np.zeros(shape, x.dtype)
    out[(slice(None),) * axis + (slice(0, n),)] = x
    return out


def chunks_for(tasks, tiles):
    """How many query chunks per (batch, head) so that all threads have a task (1 when B*H suffices).

    Each chunk owns a private copy of the source-side gradients, reduced at the end (no races, and
    deterministic for a fixed thread count).
    """
    threads = nb.get_num_threads()
    return max(1, min(tiles, -(-threads // max(tasks, 1))))


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


def run_tasks(kernel, n_tasks, *args, family):
    """Run ``kernel(first, step, n_tasks, *args)`` on numba.get_num_threads() threads, BLAS at one
    thread; ``family`` names the kernel in the first-compilation notice (_notice.py).

    Thread r takes tasks r, r + T, r + 2T, ... (interleaved, so causal tiles balance). The kernels
    are nogil, so plain Python threads run them in parallel; compared with a numba prange wrapper
    this halves the cold compile time (the parfor machinery cost ~3 s per kernel and dtype).
    """
    global _pool
    announce(family, kernel, (0, 1, n_tasks) + args)
    threads = max(1, min(nb.get_num_threads(), n_tasks))
    with blas_single_thread():
        if threads == 1:
            kernel(0, 1, n_tasks, *args)
            return
        if _pool is None or _pool._max_workers < threads:
            _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="itnet-fused")
        for f in [_pool.submit(kernel, r, threads, n_tasks, *args) for r in range(threads)]:
            f.result()
