"""Fused attention forward on the GPU (numba-CUDA): online softmax over source tiles, log-sum-exp saved.

Dense reference it must match: ``itnet_np.transform.fused.attention_numba.attention_forward`` (the
CPU kernel, same arguments, same outputs) and, behind it, the dense softmax(scale q k^T + bias - ALiBi)
v with the support as a mask. Per head, query i and source j:

    x_ij = scale q_i . k_j + bias[b, h, i, j] - slope_h |i - j|
    S(i) = {j : lo_i <= j < hi_i, mask[b, h, i, j]}       lo, hi from causal (j <= i), the window
                                                          (|i - j| <= w) and per-row ranges
    'softmax':  y_i = sum_S e^{x_ij} v_j / sum_S e^{x_ij},  stats_i = log sum_S e^{x_ij} (-inf if S empty)
    'sum':      y_i = sum_S x_ij v_j / Z_i,  Z_i = sum_S x_ij (y_i = 0 where Z_i = 0),  stats_i = Z_i
    'none':     y_i = sum_S x_ij v_j,                                                   stats_i = Z_i

A -inf bias entry counts as masked. Launch: grid (ceil(N / TILE), B H), TILE threads per block, one
query row per thread (q_i, the running max m_i, running sum l_i and the (dv,) accumulator in
registers). The block streams source tiles of k and v through shared memory; tiles outside the
block's band [min lo_i, max hi_i) are never loaded (causal and window tiles are skipped from the
descriptor, not by masking). Memory O(N d): nothing of size N x M.
"""
import math

import numpy as np

from ._cuda import TILE, blocks, cached, device_functions, numba_cuda, require_device

cuda = numba_cuda()   # the kernels' `cuda` global (see _cuda.numba_cuda)


@cached
def kernel(dtype, d, dv):
    """The compiled forward for (dtype, TILE, d, dv)."""
    require_device()
    f = np.dtype(dtype).type
    dtype = f
    row_band, block_band = device_functions(dtype)[0], device_functions(dtype)[3]
    zero, neg_inf = f(0), f(-np.inf)
    T = TILE

    @cuda.jit
    def forward(q, k, v, scale, mask, use_mask, bias, use_bias, slopes, use_alibi, causal, window,
                rlo, rhi, use_ranges, mode, out, stats):
        H, N, M = q.shape[1], q.shape[2], k.shape[2]
        t = cuda.threadIdx.x
        i = cuda.blockIdx.x * T + t
        b, h = cuda.blockIdx.y // H, cuda.blockIdx.y % H
        ks = cuda.shared.array((T, d), dtype)
        vs = cuda.shared.array((T, dv), dtype)
        band = cuda.shared.array(2, np.int64)
        qi = cuda.local.array(d, dtype)
        acc = cuda.local.array(dv, dtype)
        lo, hi = row_band(i, N, M, causal, window, rlo, rhi, use_ranges)
        for c in range(d):
            qi[c] = q[b, h, i, c] if i < N else zero
        for c in range(dv):
            acc[c] = zero
        jlo, jhi = block_band(band, lo, hi, t, M)
        slope = slopes[h] if use_alibi else zero
        mb, mh = (b if mask.shape[0] > 1 else 0), (h if mask.shape[1] > 1 else 0)
        bb, bh = (b if bias.shape[0] > 1 else 0), (h if bias.shape[1] > 1 else 0)
        mi, bi = min(i, mask.shape[2] - 1), min(i, bias.shape[2] - 1)
        m, l = neg_inf, zero
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
                keep = (j >= lo) and (j < hi)
                if keep and use_mask:
                    keep = mask[mb, mh, mi, min(j, mask.shape[3] - 1)]
                if not keep:
                    continue
                x = zero
                for c in range(d):
                    x += qi[c] * ks[jj, c]
                x *= scale
                if use_bias:
                    x += bias[bb, bh, bi, min(j, bias.shape[3] - 1)]
                if use_alibi:
                    x -= slope * f(abs(i - j))   # f(): an int64 factor would promote x to float64
                if x == neg_inf:
                    continue
                if mode == 0:
                    mnew = x if x > m else m  # noqa: FURB136  (keeps the select branch-free)
                    alpha = math.exp(m - mnew)
                    p = math.exp(x - mnew)
                    m = mnew
                    l = l * alpha + p
                    for c in range(dv):
                        acc[c] = acc[c] * alpha + p * vs[jj, c]
                else:
                    l += x
                    for c in range(dv):
                        acc[c] += x * vs[jj, c]
            cuda.syncthreads()
        if i < N:
            if mode == 0:
                good = l != zero
                stats[b, h, i] = m + math.log(l) if good else neg_inf
            else:
                good = mode == 2 or l != zero
                stats[b, h, i] = l
            inv = (f(1) / l if mode != 2 else f(1)) if good else zero
            for c in range(dv):
                out[b, h, i, c] = acc[c] * inv

    return forward


def launch(args, q, k, v, xp):
    """Run the forward on prepared arguments (_attention_args.prepare); returns (out, stats)."""
    B, H, N, d = q.shape
    dv = v.shape[3]
    out = xp.zeros((B, H, N, dv), q.dtype)
    stats = xp.full((B, H, N), -np.inf if args.mode == 0 else 0, q.dtype)
    if N and k.shape[2]:
        fn = kernel(q.dtype, d, dv)
        fn[(blocks(N), B * H), TILE](q, k, v, args.scale, args.mask, args.use_mask, args.bias,
                                    args.use_bias, args.slopes, args.use_alibi, args.causal,
                                    args.window, args.rlo, args.rhi, args.use_ranges, args.mode, out,
                                    stats)
    return out, stats
