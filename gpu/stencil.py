"""The banded StencilKernel transform on the GPU (numba-CUDA): a gather over the T taps, no N x M buffer.

Same arguments and results as the CPU kernels ``itnet_np.transform.fused.stencil_numba.stencil_forward
/ stencil_backward`` (the reference it must match), and behind them the dense transform with the
indicator scores s^h_ij = sum_a table[h, a] 1[p_j - q_i = o_a] (kernels/stencil.py). With idx[b, i, a]
the source hit by tap a of query i (-1: none; built by transform/fused/stencil_plan.stencil_indices),
table (H, T), w (1|B, 1|H, M), v (B, H, M, d), upstream g (B, H, N, d) and G = g[b, h, i] . v[b, h, j]:

    y[b, h, i]    = sum_a table[h, a] w[b, h, j] v[b, h, j]            j = idx[b, i, a] >= 0
    dv[b, h, j]  += table[h, a] w[b, h, j] g[b, h, i]
    dw[b, h, j]  += table[h, a] G,      dtable[h, a] += w[b, h, j] G

Launch: grid (ceil(N / TILE), B H), one query row per thread. The forward gathers (no write
conflicts); the backward scatters dv and dw with atomic adds (several queries may hit one source),
and sums dtable over the block's rows in shared memory first, then one atomic add per tap and block.
Work O(B H N T d), memory O(B H M d) for the gradients: nothing of size N x M.
"""
import numpy as np

from itnet_np.transform.fused._arguments import unbroadcast

from ._cuda import TILE, blocks, cached, numba_cuda, require_device, xp_of_args

cuda = numba_cuda()   # the kernels' `cuda` global (see _cuda.numba_cuda)


@cached
def kernels(dtype, taps):
    """The compiled (forward, backward) for (dtype, TILE, T = taps)."""
    require_device()
    f = np.dtype(dtype).type
    dtype = f
    zero = f(0)          # typed: a Python 0.0 would promote float32 sums to float64
    R = TILE

    @cuda.jit
    def forward(idx, table, w, v, out):
        H, N, d = out.shape[1], out.shape[2], out.shape[3]
        i = cuda.blockIdx.x * R + cuda.threadIdx.x
        b, h = cuda.blockIdx.y // H, cuda.blockIdx.y % H
        if i >= N:
            return
        bi = b if idx.shape[0] > 1 else 0
        bw, hw = (b if w.shape[0] > 1 else 0), (h if w.shape[1] > 1 else 0)
        for k in range(d):
            acc = zero
            for a in range(taps):
                j = idx[bi, i, a]
                if j >= 0:
                    acc += table[h, a] * w[bw, hw, j] * v[b, h, j, k]
            out[b, h, i, k] = acc

    @cuda.jit
    def backward(idx, table, w, v, g, dtable, dw, dv, want_w):
        """dtable (B, H, T), dw (B, H, M) (when want_w), dv (B, H, M, d): zeroed by the caller."""
        H, N, d = g.shape[1], g.shape[2], g.shape[3]
        t = cuda.threadIdx.x
        i = cuda.blockIdx.x * R + t
        b, h = cuda.blockIdx.y // H, cuda.blockIdx.y % H
        part = cuda.shared.array(taps, dtype)
        for a in range(t, taps, R):
            part[a] = zero
        cuda.syncthreads()
        if i < N:
            bi = b if idx.shape[0] > 1 else 0
            bw, hw = (b if w.shape[0] > 1 else 0), (h if w.shape[1] > 1 else 0)
            for a in range(taps):
                j = idx[bi, i, a]
                if j >= 0:
                    ta, wj = table[h, a], w[bw, hw, j]
                    c = ta * wj
                    dot = zero
                    for k in range(d):
                        gk = g[b, h, i, k]
                        dot += gk * v[b, h, j, k]
                        cuda.atomic.add(dv, (b, h, j, k), c * gk)
                    cuda.atomic.add(part, a, wj * dot)
                    if want_w:
                        cuda.atomic.add(dw, (b, h, j), ta * dot)
        cuda.syncthreads()
        for a in range(t, taps, R):
            cuda.atomic.add(dtable, (b, h, a), part[a])

    return forward, backward


def _prepare(idx, table, w, v):
    """(xp, idx, table, w, v): one array module, C-contiguous, checked as the CPU kernel checks them."""
    from itnet_np.transform.fused.stencil_numba import _check
    xp = xp_of_args("stencil_forward", (idx, table, w, v))
    idx = xp.ascontiguousarray(idx, dtype=np.int64)
    table, w, v = (xp.ascontiguousarray(a) for a in (table, w, v))
    _check(idx, table, w, v)
    return xp, idx, table, w, v


def stencil_forward(idx, table, w, v):
    """y (B, H, N, d) of the module formula; idx int64 (1|B, N, T), table (H, T), w (1|B, 1|H, M)."""
    xp, idx, table, w, v = _prepare(idx, table, w, v)
    B, H, _, d = v.shape
    out = xp.zeros((B, H, idx.shape[1], d), v.dtype)
    if out.size:
        forward = kernels(v.dtype, table.shape[1])[0]
        forward[(blocks(idx.shape[1]), B * H), TILE](idx, table, w, v, out)
    return out


def stencil_backward(idx, table, w, v, g, want_w=True):
    """(dtable (H, T), dw shaped like w or None, dv (B, H, M, d)) for upstream g (B, H, N, d)."""
    from itnet_np.errors import DTypeError, ShapeError
    xp, idx, table, w, v = _prepare(idx, table, w, v)
    B, H, M, d = v.shape
    g = xp.ascontiguousarray(g)
    if g.dtype != v.dtype:
        raise DTypeError(f"stencil_backward: g is {g.dtype} but values are {v.dtype}")
    if g.shape != (B, H, idx.shape[1], d):
        raise ShapeError(f"stencil_backward: g must have shape {(B, H, idx.shape[1], d)}, got {g.shape}")
    dtable = xp.zeros((B, H, table.shape[1]), v.dtype)
    dw = xp.zeros((B, H, M) if want_w else (1, 1, 1), v.dtype)
    dv = xp.zeros_like(v)
    if g.size:
        backward = kernels(v.dtype, table.shape[1])[1]
        backward[(blocks(idx.shape[1]), B * H), TILE](idx, table, w, v, g, dtable, dw, dv, bool(want_w))
    return dtable.sum(axis=0), (unbroadcast(dw, w.shape, xp) if want_w else None), dv
