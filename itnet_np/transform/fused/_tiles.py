"""Shared pieces of the fused (tiled) CPU kernels: activations, index bands, aligned scratch, the
kernels' codes (ACTIVATIONS, NORMALIZATIONS) and row padding; the argument checks, shared with the
GPU kernels, are in _arguments.py. The Numba machinery they share with nn.functional's kernels (JIT
options, fexp, run_tasks, the compile notice) lives in itnet_np/_numba.py.

Activations: relu, gelu_tanh, silu, tanh (codes in ACTIVATIONS; the names and formulas are those of
itnet_np.nn.functional.activations.ACTIVATIONS, relu'(0) = 0) and their derivatives, via fexp.

Numba caching caveat: cache=True keys each kernel on its own file only. After editing this file,
delete itnet_np/transform/fused/__pycache__/*.nbi/*.nbc, or the kernels keep the old helpers.
"""
import math

import numba as nb
import numpy as np

from ..._numba import JIT, fexp, typed

ACTIVATIONS = {"relu": 0, "gelu_tanh": 1, "silu": 2, "tanh": 3}
NORMALIZATIONS = {"softmax": 0, "sum": 1, "none": 2}


_GELU_2C = 2.0 * math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


# gelu_tanh(x) = 0.5 x (1 + tanh(u)) = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3), and
# tanh(x) = 2 sigmoid(2x) - 1: one exp, one division, no branch, so the loops vectorise. Every
# constant is typed (a Python float would run float32 rows in float64). fexp clamps, so sigmoid(z)
# for z -> -inf is ~1e-38 / 1e-308 (not 1/inf) and exactly 1 for z -> +inf.
@nb.njit(inline="always", **JIT)
def _act(x, code, one, two, c2, ca):
    """act(x) for one element; inlined into loops whose ``code`` branch is outside."""
    if code == 0:
        return max(x, one - one)
    if code == 1:
        return x / (one + fexp(-(x * (c2 + ca * x * x))))
    if code == 2:
        return x / (one + fexp(-x))
    return two / (one + fexp(-two * x)) - one


@nb.njit(**JIT)
def activate(src, dst, code):
    """dst[i] = act(src[i]) for distinct arrays src, dst (in place: activate_row; LLVM's runtime
    alias check sends ``activate(x, x)`` down its scalar loop, 6x slower)."""
    one, two = typed(1, src), typed(2, src)
    c2, ca = typed(_GELU_2C, src), typed(_GELU_2C * _GELU_A, src)
    # one loop per code, so that each vectorises (LLVM does not unswitch the runtime code)
    if code == 0:
        for i in range(src.shape[0]):
            dst[i] = _act(src[i], 0, one, two, c2, ca)
    elif code == 1:
        for i in range(src.shape[0]):
            dst[i] = _act(src[i], 1, one, two, c2, ca)
    elif code == 2:
        for i in range(src.shape[0]):
            dst[i] = _act(src[i], 2, one, two, c2, ca)
    else:
        for i in range(src.shape[0]):
            dst[i] = _act(src[i], 3, one, two, c2, ca)


@nb.njit(**JIT)
def activate_row(row, code):
    """row <- act(row) in place."""
    one, two = typed(1, row), typed(2, row)
    c2, ca = typed(_GELU_2C, row), typed(_GELU_2C * _GELU_A, row)
    if code == 0:
        for i in range(row.shape[0]):
            row[i] = _act(row[i], 0, one, two, c2, ca)
    elif code == 1:
        for i in range(row.shape[0]):
            row[i] = _act(row[i], 1, one, two, c2, ca)
    elif code == 2:
        for i in range(row.shape[0]):
            row[i] = _act(row[i], 2, one, two, c2, ca)
    else:
        for i in range(row.shape[0]):
            row[i] = _act(row[i], 3, one, two, c2, ca)


@nb.njit(**JIT)
def scale_by_activation_grad(g, pre, code):
    """g <- g * act'(pre) in place (the chain rule through the activation)."""
    n = g.shape[0]
    zero, one, two = typed(0, g), typed(1, g), typed(2, g)
    if code == 0:
        for i in range(n):
            g[i] = g[i] if pre[i] > zero else zero
    elif code == 1:
        c2, ca, ca3 = typed(_GELU_2C, g), typed(_GELU_2C * _GELU_A, g), typed(3 * _GELU_2C * _GELU_A, g)
        for i in range(n):
            x = pre[i]
            sg = one / (one + fexp(-(x * (c2 + ca * x * x))))
            g[i] *= sg + x * sg * (one - sg) * (c2 + ca3 * x * x)
    elif code == 2:
        for i in range(n):
            x = pre[i]
            sg = one / (one + fexp(-x))
            g[i] *= sg * (one + x * (one - sg))
    else:
        for i in range(n):
            t = two / (one + fexp(-two * pre[i])) - one
            g[i] *= one - t * t


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


# ----------------------------------------------------------------------------- Python-side helpers
# (the argument checks shared with the GPU kernels live in _arguments.py)

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
