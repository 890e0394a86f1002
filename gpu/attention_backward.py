"""Fused attention backward on the GPU (numba-CUDA), FlashAttention-2 style: tiles recomputed from the
saved row statistic, dq by query blocks, dk / dv by source blocks; no N x M buffer, no atomics on
the outputs (each thread owns the rows it writes).

Dense reference it must match: ``itnet_np.transform.fused.attention_numba.attention_backward`` (the
CPU kernel; same arguments and outputs), i.e. the gradients of the dense path. With x_ij, S(i) and
stats_i from attention_forward.py, D_i = dout_i . y_i (0 for 'none') and dP_ij = dout_i . v_j:

    P_ij  = exp(x_ij - stats_i)  |  x_ij / Z_i (0 when Z_i = 0)  |  x_ij          (softmax | sum | none)
    dX_ij = P_ij (dP_ij - D_i)   |  (dP_ij - D_i) / Z_i          |  dP_ij
    dq_i = scale sum_j dX_ij k_j     (kernel ``dq``: one query row per thread, sources streamed)
    dk_j = scale sum_i dX_ij q_i,  dv_j = sum_i P_ij dout_i   (kernel ``dkv``: one source per thread)
    dbias_ij = dX_ij (only when asked: the one (B, H, N, M) buffer),  dslope_h = -sum_ij dX_ij |i - j|

``dkv`` visits the query blocks that can reach its sources: from the first causal row / the window
reach, and per block only when one of its rows' bands [lo_i, hi_i) meets the source block.
"""
import math

import numpy as np

from ._cuda import TILE, blocks, cached, device_functions, numba_cuda, require_device

cuda = numba_cuda()   # the kernels' `cuda` global (see _cuda.numba_cuda)


@cached
def kernels(dtype, d, dv):
    """The compiled (dq, dkv) pair for (dtype, TILE, d, dv)."""
    require_device()
    f = np.dtype(dtype).type
    dtype = f
    row_band, block_band = device_functions(dtype)[0], device_functions(dtype)[3]
    zero, neg_inf = f(0), f(-np.inf)
    T = TILE

    @cuda.jit(device=True)
    def logit(x, b, h, i, j, mask, use_mask, bias, use_bias, slope, use_alibi):
        """x_ij from the raw product (scale applied by the caller), -inf when masked."""
        if use_mask and not mask[b if mask.shape[0] > 1 else 0, h if mask.shape[1] > 1 else 0,
                                 min(i, mask.shape[2] - 1), min(j, mask.shape[3] - 1)]:
            return neg_inf
        if use_bias:
            x += bias[b if bias.shape[0] > 1 else 0, h if bias.shape[1] > 1 else 0,
                      min(i, bias.shape[2] - 1), min(j, bias.shape[3] - 1)]
        if use_alibi:
            x -= slope * f(abs(i - j))           # f(): an int64 factor would promote x to float64
        return x

    @cuda.jit(device=True)
    def weights(x, st, dp, dd, mode):
        """(P_ij, dX_ij) of one kept pair."""
        if mode == 0:
            p = math.exp(x - st)
            return p, p * (dp - dd)
        if mode == 1:
            inv = f(1) / st if st != zero else zero
            return x * inv, (dp - dd) * inv
        return x, dp

    @cuda.jit
    def dq_kernel(q, k, v, do, dd, stats, scale, mask, use_mask, bias, use_bias, slopes, use_alibi,
                  causal, window, rlo, rhi, use_ranges, mode, dq, dbias, want_dbias, dslope_rows):
        H, N, M = q.shape[1], q.shape[2], k.shape[2]
        t = cuda.threadIdx.x
        i = cuda.blockIdx.x * T + t
        b, h = cuda.blockIdx.y // H, cuda.blockIdx.y % H
        ks = cuda.shared.array((T, d), dtype)
        vs = cuda.shared.array((T, dv), dtype)
        band = cuda.shared.array(2, np.int64)
        qi = cuda.local.array(d, dtype)
        doi = cuda.local.array(dv, dtype)
        g = cuda.local.array(d, dtype)
        lo, hi = row_band(i, N, M, causal, window, rlo, rhi, use_ranges)
        ic = min(i, N - 1)
        for c in range(d):
            qi[c] = q[b, h, ic, c]
            g[c] = zero
        for c in range(dv):
            doi[c] = do[b, h, ic, c]
        st, di = stats[b, h, ic], dd[b, h, ic]
        slope = slopes[h] if use_alibi else zero
        jlo, jhi = block_band(band, lo, hi, t, M)
        slope_acc = zero
        for j0 in range((jlo // T) * T, jhi, T):
            for e in range(t, T * d, T):
                j = j0 + e // d
                ks[e // d, e % d] = k[b, h, j, e % d] if j < M else zero
            for e in range(t, T * dv, T):
                j = j0 + e // dv
                vs[e // dv, e % dv] = v[b, h, j, e % dv] if j < M else zero
            cuda.syncthreads()
            for jj in range(T):
                j = j0 + jj
                if j < lo or j >= hi:
                    continue
                x = zero
                for c in range(d):
                    x += qi[c] * ks[jj, c]
                x = logit(x * scale, b, h, i, j, mask, use_mask, bias, use_bias, slope, use_alibi)
                if x == neg_inf:
                    continue
                dp = zero
                for c in range(dv):
                    dp += doi[c] * vs[jj, c]
                _, dx = weights(x, st, dp, di, mode)
                for c in range(d):
                    g[c] += dx * ks[jj, c]
                if want_dbias:
                    dbias[b, h, i, j] = dx
                if use_alibi:
                    slope_acc -= dx * f(abs(i - j))
            cuda.syncthreads()
        if i < N:
            for c in range(d):
                dq[b, h, i, c] = g[c] * scale
            dslope_rows[b, h, i] = slope_acc

    @cuda.jit
    def dkv_kernel(q, k, v, do, dd, stats, scale, mask, use_mask, bias, use_bias, slopes, use_alibi,
                   causal, window, rlo, rhi, use_ranges, mode, dk, dvv):
        H, N, M = q.shape[1], q.shape[2], k.shape[2]
        t = cuda.threadIdx.x
        j0 = cuda.blockIdx.x * T
        j = j0 + t
        b, h = cuda.blockIdx.y // H, cuda.blockIdx.y % H
        qs = cuda.shared.array((T, d), dtype)
        dos = cuda.shared.array((T, dv), dtype)
        rows = cuda.shared.array((T, 2), dtype)          # stats_i, D_i
        bands = cuda.shared.array((T, 2), np.int64)      # lo_i, hi_i
        hit = cuda.shared.array(1, np.int32)
        kj = cuda.local.array(d, dtype)
        vj = cuda.local.array(dv, dtype)
        gk = cuda.local.array(d, dtype)
        gv = cuda.local.array(dv, dtype)
        jc = min(j, M - 1)
        for c in range(d):
            kj[c] = k[b, h, jc, c]
            gk[c] = zero
        for c in range(dv):
            vj[c] = v[b, h, jc, c]
            gv[c] = zero
        slope = slopes[h] if use_alibi else zero
        j1 = min(j0 + T, M)                 # this block's sources [j0, j1)
        ifirst, ilast = 0, N                # query rows that can reach them (causal, window)
        if causal:
            ifirst = j0
        if window >= 0:
            ifirst = max(ifirst, j0 - window)
            ilast = min(ilast, j1 + window)
        for i0 in range((ifirst // T) * T, ilast, T):
            i = i0 + t
            lo, hi = row_band(i, N, M, causal, window, rlo, rhi, use_ranges)
            ic = min(i, N - 1)
            bands[t, 0], bands[t, 1] = lo, hi
            rows[t, 0], rows[t, 1] = stats[b, h, ic], dd[b, h, ic]
            for c in range(d):
                qs[t, c] = q[b, h, ic, c]
            for c in range(dv):
                dos[t, c] = do[b, h, ic, c]
            if t == 0:
                hit[0] = 0
            cuda.syncthreads()
            if lo < j1 and hi > j0 and hi > lo:
                hit[0] = 1
            cuda.syncthreads()
            if hit[0] != 0 and j < M:
                for ii in range(T):
                    ir = i0 + ii
                    if j < bands[ii, 0] or j >= bands[ii, 1]:
                        continue
                    x = zero
                    for c in range(d):
                        x += qs[ii, c] * kj[c]
                    x = logit(x * scale, b, h, ir, j, mask, use_mask, bias, use_bias, slope, use_alibi)
                    if x == neg_inf:
                        continue
                    dp = zero
                    for c in range(dv):
                        dp += dos[ii, c] * vj[c]
                    p, dx = weights(x, rows[ii, 0], dp, rows[ii, 1], mode)
                    for c in range(dv):
                        gv[c] += p * dos[ii, c]
                    for c in range(d):
                        gk[c] += dx * qs[ii, c]
            cuda.syncthreads()
        if j < M:
            for c in range(d):
                dk[b, h, j, c] = gk[c] * scale
            for c in range(dv):
                dvv[b, h, j, c] = gv[c]

    return dq_kernel, dkv_kernel


def launch(args, q, k, v, out, stats, dout, want_dbias, xp):
    """Run both backward kernels on prepared arguments; returns (dq, dk, dv, dbias (B, H, N, M) or
    None, dslope_rows (B, H, N))."""
    B, H, N, d = q.shape
    M, dv = k.shape[2], v.shape[3]
    dq, dk, dvv = xp.zeros_like(q), xp.zeros_like(k), xp.zeros_like(v)
    dbias = xp.zeros((B, H, N, M) if want_dbias else (1, 1, 1, 1), q.dtype)
    dslope_rows = xp.zeros((B, H, N), q.dtype)
    if N and M:
        dd = xp.zeros((B, H, N), q.dtype) if args.mode == 2 else (dout * out).sum(-1)
        dq_kernel, dkv_kernel = kernels(q.dtype, d, dv)
        common = (q, k, v, dout, dd, stats, args.scale, args.mask, args.use_mask, args.bias, args.use_bias,
                  args.slopes, args.use_alibi, args.causal, args.window, args.rlo, args.rhi,
                  args.use_ranges, args.mode)
        dq_kernel[(blocks(N), B * H), TILE](*common, dq, dbias, want_dbias, dslope_rows)
        dkv_kernel[(blocks(M), B * H), TILE](*common, dk, dvv)
    return dq, dk, dvv, (dbias if want_dbias else None), dslope_rows
