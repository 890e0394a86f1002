"""Fused MLP-kernel transform forward on the GPU (numba-CUDA): the ITNet kernel evaluated pair by pair,
the per-head online softmax (or sums) in registers; nothing of size N x M or N x M x K is formed.

Dense reference it must match: ``itnet_np.transform.fused.mlp_numba.mlp_forward`` (the CPU kernel,
same arguments and outputs). The per-point projections come in precomputed (factorised first layer):

    pre_ijk = a_ik + b_jk + sum_r W_kr x_ir y_jr     a (B, N, K), b (B, M, K), x (B, N, R), y (B, M, R)
    s^h_ij  = sum_k W2_hk act(pre_ijk) + b2_h        W2 (H, K), b2 (H,)
    'softmax':  y^h_i = sum_S w_j e^{s^h_ij} v^h_j / sum_S w_j e^{s^h_ij},  stats = log sum_S w_j e^{s^h_ij}
    'sum':      y^h_i = sum_S w_j s^h_ij v^h_j / Z^h_i,  Z^h_i = sum_S w_j s^h_ij  (0 where Z = 0)
    'none':     y^h_i = sum_S w_j s^h_ij v^h_j,          stats = Z^h_i

with S(i) the band (causal, window, per-row ranges) and the mask (B|1, H|1, N|1, M|1), w (B, H|1, M).
Per pair O(K (1 + R) + H K + H dv) work: each thread keeps u_ikr = W_kr x_ir for its query row, so
the r-sum costs K R multiply-adds. Launch: grid (ceil(N / TILE), B), one query row per thread, all
heads per thread; source tiles (b, y, v, w) through shared memory, skipped outside the block's band.
"""
import math

import numpy as np

from ._cuda import TILE, blocks, cached, device_functions, numba_cuda, require_device

cuda = numba_cuda()   # the kernels' `cuda` global (see _cuda.numba_cuda)


@cached
def pair_functions(dtype, K, R, H):
    """Device functions shared by the MLP forward and backward kernels:
    ``pre_act(arow, brow, u, z, code, pre, act)``: pre_k = a_k + b_k + sum_r u[k R + r] z_r, act_k;
    ``scores(act, W2s, b2s, s)``: s_h = sum_k W2_hk act_k + b2_h;
    ``load_sources(...)``: one row of the block's shared source tile."""
    require_device()
    act_fn = device_functions(dtype)[1]

    @cuda.jit(device=True)
    def pre_act(arow, brow, u, z, code, pre, act):
        for kk in range(K):
            p = arow[kk] + brow[kk]
            for r in range(R):
                p += u[kk * R + r] * z[r]
            pre[kk] = p
            act[kk] = act_fn(p, code)

    @cuda.jit(device=True)
    def scores(act, W2s, b2s, s):
        for h in range(H):
            t = b2s[h]
            for kk in range(K):
                t += W2s[h, kk] * act[kk]
            s[h] = t

    @cuda.jit(device=True)
    def load_sources(bs, ys, vs, ws, b, y, v, w, bi, jc, t):
        """Row t of the block's source tile: b, y, v and w of source jc of batch item bi."""
        for kk in range(K):
            bs[t, kk] = b[bi, jc, kk]
        for r in range(R):
            ys[t, r] = y[bi, jc, r]
        for h in range(H):
            for c in range(vs.shape[2]):
                vs[t, h, c] = v[bi, h, jc, c]
        for h in range(ws.shape[1]):
            ws[t, h] = w[bi, h, jc]

    return pre_act, scores, load_sources


@cached
def kernel(dtype, K, R, H, dv, hw):
    """The compiled forward for (dtype, TILE, K, R, H, dv, heads of w)."""
    require_device()
    f = np.dtype(dtype).type
    dtype = f
    row_band, block_band = device_functions(dtype)[0], device_functions(dtype)[3]
    pre_act, scores, load_sources = pair_functions(dtype, K, R, H)
    zero, neg_inf = f(0), f(-np.inf)
    T, R1 = TILE, max(R, 1)
    KR1 = K * R1                     # local-array sizes must be plain constants in the kernel

    @cuda.jit
    def forward(a, b, x, y, W, W2, b2, v, w, code, mask, use_mask, causal, window, rlo, rhi, use_ranges,
                mode, out, stats):
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
        ai = cuda.local.array(K, dtype)
        u = cuda.local.array(KR1, dtype)
        pre = cuda.local.array(K, dtype)
        act = cuda.local.array(K, dtype)
        s = cuda.local.array(H, dtype)
        m = cuda.local.array(H, dtype)
        l = cuda.local.array(H, dtype)
        acc = cuda.local.array((H, dv), dtype)
        for e in range(t, H * K, T):
            W2s[e // K, e % K] = W2[e // K, e % K]
        for e in range(t, H, T):
            b2s[e] = b2[e]
        ic = min(i, N - 1)
        for kk in range(K):
            ai[kk] = a[bi, ic, kk]
            for r in range(R):
                u[kk * R + r] = W[kk, r] * x[bi, ic, r]
        for h in range(H):
            m[h], l[h] = neg_inf, zero
            for c in range(dv):
                acc[h, c] = zero
        lo, hi = row_band(i, N, M, causal, window, rlo, rhi, use_ranges)
        jlo, jhi = block_band(band, lo, hi, t, M)
        for j0 in range((jlo // T) * T, jhi, T):
            j = j0 + t
            jc = min(j, M - 1)
            load_sources(bs, ys, vs, ws, b, y, v, w, bi, jc, t)
            cuda.syncthreads()
            for jj in range(T):
                j = j0 + jj
                if j < lo or j >= hi:
                    continue
                pre_act(ai, bs[jj], u, ys[jj], code, pre, act)
                scores(act, W2s, b2s, s)
                for h in range(H):
                    if use_mask and not mask[0 if mask.shape[0] == 1 else bi, 0 if mask.shape[1] == 1 else h,
                                             min(i, mask.shape[2] - 1), min(j, mask.shape[3] - 1)]:
                        continue
                    wj = ws[jj, h if hw > 1 else 0]
                    if mode == 0:
                        mnew = s[h] if s[h] > m[h] else m[h]  # noqa: FURB136
                        alpha = math.exp(m[h] - mnew)
                        e = wj * math.exp(s[h] - mnew)
                        m[h] = mnew
                        l[h] = l[h] * alpha + e
                        for c in range(dv):
                            acc[h, c] = acc[h, c] * alpha + e * vs[jj, h, c]
                    else:
                        e = wj * s[h]
                        l[h] += e
                        for c in range(dv):
                            acc[h, c] += e * vs[jj, h, c]
            cuda.syncthreads()
        if i < N:
            for h in range(H):
                if mode == 0:
                    good = l[h] != zero
                    stats[bi, h, i] = m[h] + math.log(l[h]) if good else neg_inf
                else:
                    good = mode == 2 or l[h] != zero
                    stats[bi, h, i] = l[h]
                inv = (f(1) / l[h] if mode != 2 else f(1)) if good else zero
                for c in range(dv):
                    out[bi, h, i, c] = acc[h, c] * inv

    return forward


def launch(args, xp):
    """Run the forward on prepared arguments (mlp.py); returns (out (B, H, N, dv), stats (B, H, N))."""
    a, b, x, y, W, W2, b2, v, w = args.arrays
    B, N, K = a.shape
    M, R, H, dv = b.shape[1], x.shape[2], W2.shape[0], v.shape[3]
    out = xp.zeros((B, H, N, dv), a.dtype)
    stats = xp.full((B, H, N), -np.inf if args.mode == 0 else 0, a.dtype)
    if N and M:
        fn = kernel(a.dtype, K, R, H, dv, w.shape[1])
        fn[(blocks(N), B), TILE](a, b, x, y, W, W2, b2, v, w, args.code, args.mask, args.use_mask,
                                 args.causal, args.window, args.rlo, args.rhi, args.use_ranges, args.mode,
                                 out, stats)
    return out, stats
