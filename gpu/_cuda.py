"""What every numba-CUDA kernel in ``itnet_np.gpu`` shares: the lazy ``numba.cuda`` import (with the
ConfigError that says what to install), the array module of the arguments, a kernel cache, and the
device functions (per-row source bands, activations) built once per dtype. The argument checks are
the CPU kernels' own (itnet_np.transform.fused._arguments, given the arrays' module).

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

from itnet_np.errors import ConfigError

INSTALL = ("install the GPU extra: pip install 'itnet-np[gpu]' (cupy-cuda12x and numba-cuda; "
           "'itnet-np[gpu13]' for CUDA 13: cupy-cuda13x)")
TILE = 32            # rows per block (threads per block) in every kernel of this package
cuda = None          # numba.cuda once device_functions has run: a module-level name, which the simulator swaps


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


def blocks(n):
    """Blocks of TILE rows covering n rows (at least one, so that a launch is well formed)."""
    return max(1, -(-n // TILE))


def cached(factory):
    """Memoise a kernel factory on its (hashable) arguments: one compilation per dtype and shape."""
    return functools.lru_cache(maxsize=None)(factory)


@cached
def device_functions(dtype):
    """Device functions for ``dtype`` (float32 or float64), with typed constants so float32 stays
    float32: ``row_band``, ``act(x, code)``, ``act_grad(x, code)`` and ``block_band`` (codes 0..3 of
    itnet_np.transform.fused._tiles.ACTIVATIONS: relu, gelu_tanh, silu, tanh, the formulas of
    itnet_np.nn.functional.activations; relu'(0) = 0)."""
    global cuda
    cuda = nb_cuda = require_device()
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
    def block_band(band, lo, hi, t, n_cols):
        """[jlo, jhi): the union of the [lo, hi) bands of a block's rows, through the shared int
        array ``band`` (2,); every thread of the block must call it (two barriers)."""
        if t == 0:
            band[0], band[1] = n_cols, 0
        cuda.syncthreads()
        if hi > lo:
            cuda.atomic.min(band, 0, lo)
            cuda.atomic.max(band, 1, hi)
        cuda.syncthreads()
        return band[0], band[1]

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

    return row_band, act, act_grad, block_band
