"""What every numba-CUDA kernel in ``itnet_np.gpu`` shares: the lazy ``numba.cuda`` import (with the
ConfigError that says what to install), the array module of the arguments, a kernel cache, and the
device functions (per-row source bands, activations) built once per dtype.

Arrays: the launch wrappers take CuPy arrays on a GPU, and NumPy arrays under numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``, which runs kernels on host arrays; that is how CI tests them). Outputs
are allocated with the inputs' array module, so nothing crosses between host and device here.

Caching: ``cached(factory)`` memoises a kernel factory on its arguments (dtype, tile shape and the
static sizes the local arrays need: head width, K, R, H...), so one shape compiles once per process
and a call never recompiles.
"""
import functools
import math

import numpy as np

from itnet_np.errors import ConfigError, DTypeError, ShapeError, describe

INSTALL = ("install the GPU extra: pip install 'itnet-np[gpu]' (cupy-cuda12x and numba-cuda; "
           "'itnet-np[gpu13]' for CUDA 13: cupy-cuda13x)")
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
TILE = 32            # rows per block (threads per block) in every kernel of this package


def numba_cuda():
    """The ``numba.cuda`` module (ConfigError saying what to install when it cannot be imported).

    Kernel modules bind it to a module-level name ``cuda`` and use ``cuda.threadIdx`` etc. in the
    kernel bodies: the simulator swaps exactly such globals for its fake module at launch."""
    try:
        from numba import cuda as nb_cuda
    except Exception as exc:
        raise ConfigError(f"the GPU kernels need numba-cuda, which cannot be imported here "
                          f"({type(exc).__name__}: {exc}); {INSTALL}") from exc
    return nb_cuda


def require_device():
    """``numba.cuda`` when it can launch kernels here (a CUDA device, or the simulator), else
    ConfigError saying what to install."""
    nb_cuda = numba_cuda()
    try:
        ok = nb_cuda.is_available()
    except Exception:  # noqa: BLE001
        ok = False
    if not ok:
        raise ConfigError("the GPU kernels need a CUDA device (none is visible to numba.cuda); " + INSTALL
                          + ", run on a machine with an NVIDIA GPU, or set NUMBA_ENABLE_CUDASIM=1 "
                            "before numba loads to use the simulator")
    return nb_cuda


def xp_of_args(op, arrays):
    """numpy or cupy, whichever owns every one of ``arrays`` (DeviceError-like ConfigError on a mix)."""
    from itnet_np.autograd.backend import is_cupy, xp_of
    kinds = {is_cupy(a) for a in arrays if a is not None}
    if len(kinds) > 1:
        raise ConfigError(f"{op}: the arrays mix NumPy and CuPy; put them all on one device")
    return xp_of(next(a for a in arrays if a is not None))


def check_float(op, name, x, ndim, dtype=None):
    """x: a float32/float64 array with ``ndim`` dims (and ``dtype``), returned C-contiguous."""
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise DTypeError(f"{op}: {name} must be a numpy or cupy array, got {type(x).__name__}")
    if x.dtype not in FLOATS:
        raise DTypeError(f"{op}: {name} must be float32 or float64, got {describe(x)}")
    if dtype is not None and x.dtype != dtype:
        raise DTypeError(f"{op}: {name} is {describe(x)} but the inputs are {dtype}; "
                         "all arrays must share one dtype")
    if x.ndim != ndim:
        raise ShapeError(f"{op}: {name} must have {ndim} dims, got {describe(x)}")
    return x


def broadcast4(op, name, x, full, dtype, xp):
    """x (bool, or float ``dtype``) broadcastable to ``full`` (4 dims), as a C-contiguous 4-d array
    whose dims are 1 or full: the kernels read a size-1 dim at index 0 (nothing N x M is formed)."""
    if dtype is bool:
        if not hasattr(x, "dtype") or x.dtype != np.bool_:
            raise DTypeError(f"{op}: {name} must be a bool array (True = attend), got {describe(x)}")
    else:
        check_float(op, name, x, x.ndim, dtype)
    if x.ndim > 4 or any(s not in (1, f) for s, f in zip(x.shape[::-1], full[::-1])):
        raise ShapeError(f"{op}: {name} must broadcast to {tuple(full)} with each dim 1 or full, "
                         f"got {describe(x)}")
    return xp.ascontiguousarray(x.reshape((1,) * (4 - x.ndim) + tuple(x.shape)))


def ranges_of(op, ranges, n_rows, n_cols, xp):
    """(row_lo, row_hi, use): per-row source ranges [lo_i, hi_i) as int64 arrays (N,), or dummies."""
    if ranges is None:
        return xp.zeros(1, np.int64), xp.zeros(1, np.int64), False
    lo, hi = (xp.ascontiguousarray(xp.asarray(r), dtype=np.int64) for r in ranges)
    if lo.shape != (n_rows,) or hi.shape != (n_rows,):
        raise ShapeError(f"{op}: ranges must be two int arrays of shape ({n_rows},), got {lo.shape}, {hi.shape}")
    return lo, hi, True


def window_code(op, window):
    if window is None:
        return -1
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 0:
        raise ConfigError(f"{op}: window must be None or an int >= 0, got {window!r}")
    return int(window)


def code_of(op, name, value, table):
    if value not in table:
        raise ConfigError(f"{op}: {name} must be one of {sorted(table)}, got {value!r}")
    return table[value]


def unbroadcast(grad, shape):
    """Sum a (B, H, N, M) gradient down to a broadcastable input's shape."""
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape) if s == 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape) if axes else grad


def blocks(n):
    """Blocks of TILE rows covering n rows (at least one, so that a launch is well formed)."""
    return max(1, -(-n // TILE))


def cached(factory):
    """Memoise a kernel factory on its (hashable) arguments: one compilation per dtype and shape."""
    return functools.lru_cache(maxsize=None)(factory)


@cached
def device_functions(dtype):
    """Device functions for ``dtype`` (float32 or float64), with typed constants so float32 stays
    float32: ``row_band``, ``act(x, code)`` and ``act_grad(x, code)`` (codes 0..3 of
    itnet_np.transform.fused._tiles.ACTIVATIONS: relu, gelu_tanh, silu, tanh, the formulas of
    itnet_np.nn.functional.activations; relu'(0) = 0)."""
    nb_cuda = require_device()
    f = np.dtype(dtype).type
    zero, one, half = f(0), f(1), f(0.5)     # typed: an int or Python float would promote float32
    c_gelu, a_gelu = f(math.sqrt(2.0 / math.pi)), f(0.044715)

    @nb_cuda.jit(device=True)
    def row_band(i, n_rows, n_cols, causal, window, rlo, rhi, use_ranges):
        """[lo, hi): the sources query i attends to (causal j <= i, |i - j| <= window, row ranges);
        (0, 0) for padding rows i >= n_rows."""
        if i >= n_rows:
            return 0, 0
        lo, hi = 0, n_cols
        if causal:
            hi = min(hi, i + 1)
        if window >= 0:
            lo = max(lo, i - window)
            hi = min(hi, i + window + 1)
        if use_ranges:
            lo = max(lo, rlo[i])
            hi = min(hi, rhi[i])
        return lo, max(lo, hi)

    @nb_cuda.jit(device=True)
    def act(x, code):
        if code == 0:
            return max(zero, x)
        if code == 1:
            return half * x * (one + math.tanh(c_gelu * (x + a_gelu * x * x * x)))
        if code == 2:
            return x / (one + math.exp(-x))
        return math.tanh(x)

    @nb_cuda.jit(device=True)
    def act_grad(x, code):
        if code == 0:
            return one if x > zero else zero
        if code == 1:
            t = math.tanh(c_gelu * (x + a_gelu * x * x * x))
            return half * (one + t) + half * x * (one - t * t) * c_gelu * (one + f(3) * a_gelu * x * x)
        if code == 2:
            s = one / (one + math.exp(-x))
            return s * (one + x * (one - s))
        t = math.tanh(x)
        return one - t * t

    return row_band, act, act_grad
