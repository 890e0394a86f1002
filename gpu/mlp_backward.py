"""Fused MLP-kernel transform backward on the GPU (numba-CUDA): pair blocks recomputed from the saved
row statistic; query-side gradients by query blocks, source-side ones by source blocks, weight
gradients by block-level reductions in shared memory (one partial per block, summed after): no
N x M (or N^2) buffer, no atomics on global memory.

Dense reference it must match: ``itnet_np.transform.fused.mlp_numba.mlp_backward`` (the CPU kernel,
same arguments, same dict of gradients). With pre, act, s from mlp_forward.py, dP^h_ij =
dout^h_i . v^h_j, D^h_i = dout^h_i . y^h_i (0 for 'none') and e = exp(s - stats):

    'softmax':  g = w e (dP - D),   gw = e (dP - D),      P = w e
    'sum':      g = w (dP - D) / Z, gw = s (dP - D) / Z,  P = w s / Z
    'none':     g = w dP,           gw = s dP,            P = w s
    dpre_ijk = act'(pre_ijk) sum_h W2_hk g^h_ij
    kernel ``query``:  da_i = sum_j dpre_ij,  dx_ir = sum_jk dpre_ijk W_kr y_jr,
                       dW_kr = sum dpre_ijk x_ir y_jr,  dW2_hk = sum g^h act_k,  db2_h = sum g^h
    kernel ``source``: db_j = sum_i dpre_ij,  dy_jr = sum_ik dpre_ijk W_kr x_ir,
                       dv^h_j = sum_i P^h_ij dout^h_i,  dw_j = sum_i gw_ij (over heads when w is shared)
"""
import math

import numpy as np

from ._cuda import TILE, blocks, cached, device_functions, numba_cuda, require_device
from .mlp_forward import pair_functions

cuda = numba_cuda()   # the kernels' `cuda` global (see _cuda.numba_cuda)


@cached
def kernels(dtype, K, R, H, dv, hw):
    """The compiled (query, source) kernels for (dtype, TILE, K, R, H, dv, heads of w)."""
    require_device()
    f = np.dtype(dtype).type
    dtype = f
    row_band, _, act_grad, block_band = device_functions(dtype)
    pre_act, scores, load_sources = pair_functions(dtype, K, R, H)
    zero, neg_inf = f(0), f(-np.inf)
    T, R1 = TILE, max(R, 1)
    KR1 = K * R1                     # local-array sizes must be plain constants in the kernel
    P = K * R + H * K + H            # weight-gradient entries reduced per block

    @cuda.jit(device=True)
    def pair_grads(s, st, dd, dP, wj, mode, keep, g, gw, p, h):
        """g^h, gw^h, P^h of one pair (0 when the pair or the row is excluded)."""
        if not keep or (mode == 0 and st == neg_inf) or (mode == 1 and st == zero):
            g[h], gw[h], p[h] = zero, zero, zero
        elif mode == 0:
            e = math.exp(s - st)
            gw[h] = e * (dP - dd)
            g[h], p[h] = wj * gw[h], wj * e
        elif mode == 1:
            gz = (dP - dd) / st
            gw[h], g[h], p[h] = s * gz, wj * gz, wj * s / st
        else:
            gw[h], g[h], p[h] = s * dP, wj * dP, wj * s

    @cuda.jit(device=True)
    def kept(mask, use_mask, bi, h, i, j):
        if not use_mask:
            return True
        return mask[0 if mask.shape[0] == 1 else bi, 0 if mask.shape[1] == 1 else h,
                    min(i, mask.shape[2] - 1), min(j, mask.shape[3] - 1)]

    @cuda.jit(device=True)
    def load_weights(t, W2, b2, W2s, b2s):
        for e in range(t, H * K, T):
            W2s[e // K, e % K] = W2[e // K, e % K]
        for e in range(t, H, T):
            b2s[e] = b2[e]

    @cuda.jit
    def query(a, b, x, y, W, W2, b2, v, w, do, dd, stats, code, mask, use_mask, causal, window, rlo, rhi,
              use_ranges, mode, da, dx, partial):
        N, M = a.shape[1], b.shape[1]
        t = cuda.threadIdx.x
        i = cuda.blockIdx.x * T + t
        bi = cuda.blockIdx.y
        bs = cuda.shared.array((T, K), dtype)
        ys = cuda.shared.array((T, R1), dtype)
        vs = cuda.shared.array((T, H, dv), dtype)
        ws = cuda.shared.array((T, hw), dtype)
        W2s = cuda.shared.array((H, K), dtype)
        b2s = cuda.shared.array(H, dtype)
        band = cuda.shared.array(2, np.int64)
        red = cuda.shared.array((T, T), dtype)
        ai = cuda.local.array(K, dtype)
        xi = cuda.local.array(R1, dtype)
        u = cuda.local.array(KR1, dtype)
        doi = cuda.local.array((H, dv), dtype)
        st = cuda.local.array(H, dtype)
        di = cuda.local.array(H, dtype)
        pre = cuda.local.array(K, dtype)
        act = cuda.local.array(K, dtype)
        s = cuda.local.array(H, dtype)
        g = cuda.local.array(H, dtype)
        gw = cuda.local.array(H, dtype)
        pp = cuda.local.array(H, dtype)
        gacc = cuda.local.array(P, dtype)      # [dW (K R) | dW2 (H K) | db2 (H)] of this row
        gda = cuda.local.array(K, dtype)
        gdx = cuda.local.array(R1, dtype)
        load_weights(t, W2, b2, W2s, b2s)
        ic = min(i, N - 1)
        for kk in range(K):
            ai[kk], gda[kk] = a[bi, ic, kk], zero
            for r in range(R):
                u[kk * R + r] = W[kk, r] * x[bi, ic, r]
        for r in range(R):
            xi[r], gdx[r] = x[bi, ic, r], zero
        for h in range(H):
            st[h], di[h] = stats[bi, h, ic], dd[bi, h, ic]
            for c in range(dv):
                doi[h, c] = do[bi, h, ic, c]
        for e in range(P):
            gacc[e] = zero
        lo, hi = row_band(i, N, M, causal, window, rlo, rhi, use_ranges)
        jlo, jhi = block_band(band, lo, hi, t, M)
        for j0 in range((jlo // T) * T, jhi, T):
            jc = min(j0 + t, M - 1)
            load_sources(bs, ys, vs, ws, b, y, v, w, bi, jc, t)
            cuda.syncthreads()
            for jj in range(T):
                j = j0 + jj
                if j < lo or j >= hi:
                    continue
                pre_act(ai, bs[jj], u, ys[jj], code, pre, act)
                scores(act, W2s, b2s, s)
                for h in range(H):
                    dP = zero
                    for c in range(dv):
                        dP += doi[h, c] * vs[jj, h, c]
                    pair_grads(s[h], st[h], di[h], dP, ws[jj, h if hw > 1 else 0], mode,
                               kept(mask, use_mask, bi, h, i, j), g, gw, pp, h)
                    gacc[K * R + H * K + h] += g[h]
                    for kk in range(K):
                        gacc[K * R + h * K + kk] += g[h] * act[kk]
                for kk in range(K):
                    dp = zero
                    for h in range(H):
                        dp += W2s[h, kk] * g[h]
                    dp *= act_grad(pre[kk], code)
                    gda[kk] += dp
                    for r in range(R):
                        gacc[kk * R + r] += dp * xi[r] * ys[jj, r]
                        gdx[r] += dp * W[kk, r] * ys[jj, r]
            cuda.syncthreads()
        if i < N:
            for kk in range(K):
                da[bi, i, kk] = gda[kk]
            for r in range(R):
                dx[bi, i, r] = gdx[r]
        blk = cuda.blockIdx.y * cuda.gridDim.x + cuda.blockIdx.x
        for c0 in range(0, P, T):               # block-level reduction, T entries per round
            for c in range(T):
                red[t, c] = gacc[c0 + c] if c0 + c < P else zero
            cuda.syncthreads()
            if c0 + t < P:
                tot = zero
                for r in range(T):
                    tot += red[r, t]
                partial[blk, c0 + t] = tot
            cuda.syncthreads()

    @cuda.jit
    def source(a, b, x, y, W, W2, b2, v, w, do, dd, stats, code, mask, use_mask, causal, window, rlo, rhi,
               use_ranges, mode, db, dy, dvv, dw):
        N, M = a.shape[1], b.shape[1]
        t = cuda.threadIdx.x
        j0 = cuda.blockIdx.x * T
        j = j0 + t
        bi = cuda.blockIdx.y
        as_ = cuda.shared.array((T, K), dtype)
        xs = cuda.shared.array((T, R1), dtype)
        dos = cuda.shared.array((T, H, dv), dtype)
        rows = cuda.shared.array((T, H, 2), dtype)       # stats, D
        bands = cuda.shared.array((T, 2), np.int64)
        hit = cuda.shared.array(1, np.int32)
        W2s = cuda.shared.array((H, K), dtype)
        b2s = cuda.shared.array(H, dtype)
        bj = cuda.local.array(K, dtype)
        u = cuda.local.array(KR1, dtype)
        vj = cuda.local.array((H, dv), dtype)
        wj = cuda.local.array(hw, dtype)
        pre = cuda.local.array(K, dtype)
        act = cuda.local.array(K, dtype)
        s = cuda.local.array(H, dtype)
        g = cuda.local.array(H, dtype)
        gw = cuda.local.array(H, dtype)
        pp = cuda.local.array(H, dtype)
        gdb = cuda.local.array(K, dtype)
        gdy = cuda.local.array(R1, dtype)
        gdv = cuda.local.array((H, dv), dtype)
        gdw = cuda.local.array(hw, dtype)
        load_weights(t, W2, b2, W2s, b2s)
        jc = min(j, M - 1)
        for kk in range(K):
            bj[kk], gdb[kk] = b[bi, jc, kk], zero
            for r in range(R):
                u[kk * R + r] = W[kk, r] * y[bi, jc, r]
        for r in range(R):
            gdy[r] = zero
        for h in range(H):
            for c in range(dv):
                vj[h, c], gdv[h, c] = v[bi, h, jc, c], zero
        for h in range(hw):
            wj[h], gdw[h] = w[bi, h, jc], zero
        j1 = min(j0 + T, M)
        ifirst, ilast = 0, N
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
            for kk in range(K):
                as_[t, kk] = a[bi, ic, kk]
            for r in range(R):
                xs[t, r] = x[bi, ic, r]
            for h in range(H):
                rows[t, h, 0], rows[t, h, 1] = stats[bi, h, ic], dd[bi, h, ic]
                for c in range(dv):
                    dos[t, h, c] = do[bi, h, ic, c]
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
                    pre_act(bj, as_[ii], u, xs[ii], code, pre, act)
                    scores(act, W2s, b2s, s)
                    for h in range(H):
                        dP = zero
                        for c in range(dv):
                            dP += dos[ii, h, c] * vj[h, c]
                        hh = h if hw > 1 else 0
                        pair_grads(s[h], rows[ii, h, 0], rows[ii, h, 1], dP, wj[hh], mode,
                                   kept(mask, use_mask, bi, h, ir, j), g, gw, pp, h)
                        gdw[hh] += gw[h]
                        for c in range(dv):
                            gdv[h, c] += pp[h] * dos[ii, h, c]
                    for kk in range(K):
                        dp = zero
                        for h in range(H):
                            dp += W2s[h, kk] * g[h]
                        dp *= act_grad(pre[kk], code)
                        gdb[kk] += dp
                        for r in range(R):
                            gdy[r] += dp * W[kk, r] * xs[ii, r]
            cuda.syncthreads()
        if j < M:
            for kk in range(K):
                db[bi, j, kk] = gdb[kk]
            for r in range(R):
                dy[bi, j, r] = gdy[r]
            for h in range(H):
                for c in range(dv):
                    dvv[bi, h, j, c] = gdv[h, c]
            for h in range(hw):
                dw[bi, h, j] = gdw[h]

    return query, source


def launch(args, out, stats, dout, xp):
    """Run both backward kernels on prepared arguments (mlp.py); returns the gradient dict."""
    a, b, x, y, W, W2, b2, v, w = args.arrays
    B, N, K = a.shape
    M, R, H, dvd, hw = b.shape[1], x.shape[2], W2.shape[0], v.shape[3], w.shape[1]
    dt = a.dtype
    grads = {"a": xp.zeros_like(a), "b": xp.zeros_like(b), "x": xp.zeros_like(x), "y": xp.zeros_like(y),
             "v": xp.zeros_like(v), "w": xp.zeros_like(w)}
    P = K * R + H * K + H
    partial = xp.zeros((blocks(N) * B, P), dt)
    if N and M:
        dd = xp.zeros((B, H, N), dt) if args.mode == 2 else (dout * out).sum(-1)
        query, source = kernels(dt, K, R, H, dvd, hw)
        common = (a, b, x, y, W, W2, b2, v, w, dout, dd, stats, args.code, args.mask, args.use_mask,
                  args.causal, args.window, args.rlo, args.rhi, args.use_ranges, args.mode)
        query[(blocks(N), B), TILE](*common, grads["a"], grads["x"], partial)
        source[(blocks(M), B), TILE](*common, grads["b"], grads["y"], grads["v"], grads["w"])
    total = partial.sum(0)
    grads["W"] = total[:K * R].reshape(K, R)
    grads["W2"] = total[K * R:K * R + H * K].reshape(H, K)
    grads["b2"] = total[K * R + H * K:]
    return grads
