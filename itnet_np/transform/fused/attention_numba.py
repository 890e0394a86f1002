"""Tiled fused attention on raw arrays (FlashAttention-2 on the CPU, Numba): the (N, M) score matrix
is never formed; only (BQ, BK) tiles live in per-task scratch.

Inputs q (B, H, N, d), k (B, H, M, d), v (B, H, M, dv), one float dtype. Per head, query row i and
source j:

    x_ij = scale * q_i . k_j  + bias[b, h, i, j]  - slope_h * |i - j|          (bias, ALiBi optional)
    S(i) = { j : mask[b, h, i, j] (True = attend), j <= i if causal, |i - j| <= window }

    'softmax':  y_i = sum_{j in S(i)} exp(x_ij) v_j / sum_{j in S(i)} exp(x_ij);  stats_i = logsumexp_j x_ij
    'sum':      y_i = sum_{j in S(i)} x_ij v_j / Z_i,  Z_i = sum_{j in S(i)} x_ij;  stats_i = Z_i
    'none':     y_i = sum_{j in S(i)} x_ij v_j;                                   stats_i = Z_i (unused)

Conventions: causal is torch SDPA's top-left aligned tril (j <= i, also when N != M). An empty S(i)
gives y_i = 0 and stats_i = -inf ('softmax') or 0; 'sum' gives y_i = 0 wherever Z_i == 0. A -inf
bias entry is treated like a masked one.

Forward: one task per (b, h, query tile), source tiles streamed with the online softmax (running
max m_i, running sum l_i, accumulator rescaled by exp(m_old - m_new)); source tiles outside the
causal/window band are skipped whole. Tile products (q k^T, p v) are BLAS gemms on 64x64 tiles;
the scale is folded into q once (k (scale q)^T), and a tile with no mask, bias or ALiBi that lies
inside every row's band takes no logits pass at all: per tile there is one max pass and one exp
pass (both vectorised, in the data's dtype: every constant is typed, since a Python float would
promote the float32 loops to float64). On one thread the two gemms are about 80% of the forward.

Backward (recomputes tiles; D_i = dout_i . y_i):
    dP_ij = dout_i . v_j;  dX_ij = P_ij (dP_ij - D_i)  | (dP_ij - D_i) / Z_i  | dP_ij
    dv_j = sum_i P_ij dout_i,  dq_i = scale sum_j dX_ij k_j,  dk_j = scale sum_i dX_ij q_i,
    dbias_ij = dX_ij,  dslope_h = -sum_ij dX_ij |i - j|
with P_ij the normalised weight (exp(x_ij - stats_i), x_ij / Z_i or x_ij). One task per (b, h,
query chunk); each chunk owns dq rows and a private dk/dv copy summed at the end (see chunks_for).
"""
import numba as nb
import numpy as np

from ..._numba import run_tasks, typed
from ._arguments import (
    attention_support,
    check_attention_arguments,
    check_saved,
    ranges_of,
    unbroadcast,
    window_of,
)
from ._tiles import JIT, aligned_empty, chunks_for, clipped_row_bands, fexp, pad_rows, tile_band

BQ = 64   # query rows per tile
BK = 64   # source rows per tile (BLAS is held at one thread while the kernels run)

__all__ = ["attention_backward", "attention_forward"]


@nb.njit(**JIT)
def _logits(st, b, h, i0, j0, lo, hi, sup, ones, zeros):
    """st (BK, BQ) holds k_j . (scale q_i) (row jj: source j0 + jj; column ii: query i0 + ii);
    add bias / ALiBi and set -inf outside S(i). Only called on tiles that need it (``_plain``).

    Queries run along the contiguous axis, so the per-query statistics are plain vector updates
    (no horizontal reductions). mask / bias come transposed, (.., M or 1, N_pad or 1): a source j
    reads one contiguous run over the queries, or one scalar when the plane is constant in i
    (ones / zeros then stand in for the run); per-element gathers made this loop ~5x slower.
    Constants are typed: a Python float (-np.inf, 0) would make the loop run in float64.
    """
    mask, use_mask, bias, use_bias, slopes, use_alibi = sup
    zero, ninf = typed(0, st), typed(-np.inf, st)
    mplane = mask[b if mask.shape[0] > 1 else 0, h if mask.shape[1] > 1 else 0]
    bplane = bias[b if bias.shape[0] > 1 else 0, h if bias.shape[1] > 1 else 0]
    slope = slopes[h] if use_alibi else zero
    nq = st.shape[1]
    for jj in range(st.shape[0]):
        j = j0 + jj
        row = st[jj]
        # One branch-free loop per case: LLVM vectorises these, and does not unswitch the runtime
        # flags by itself.
        if not (use_mask or use_bias or use_alibi):
            for ii in range(nq):
                row[ii] = row[ii] if (j >= lo[ii]) & (j < hi[ii]) else ninf
            continue
        jm = min(j, mplane.shape[0] - 1)             # padding sources read a valid, unused entry
        jb = min(j, bplane.shape[0] - 1)
        mrow, brow = mplane[jm], bplane[jb]
        mvec, mconst = (mrow[i0:i0 + nq], True) if mask.shape[3] > 1 else (ones, mrow[0])
        bvec, bconst = (brow[i0:i0 + nq], zero) if bias.shape[3] > 1 else (zeros, brow[0])
        for ii in range(nq):
            x = row[ii] + bvec[ii] + bconst - slope * typed(abs(i0 + ii - j), st)
            keep = (j >= lo[ii]) & (j < hi[ii]) & mvec[ii] & mconst
            row[ii] = x if keep else ninf


@nb.njit(**JIT)
def _plain(j0, lo, hi, rows, sup):
    """Whether the tile at source j0 needs no _logits pass: no mask, bias or ALiBi, and every row of
    the query tile attends to all of sources j0 .. j0 + BK - 1."""
    if sup[1] or sup[3] or sup[5] or rows < lo.shape[0]:
        return False
    for ii in range(rows):
        if lo[ii] > j0 or hi[ii] < j0 + BK:
            return False
    return True


@nb.njit(**JIT)
def _forward_tile(qtb, k, v, b, h, i0, cfg, sup, out, stats):
    """Online-softmax (or plain) accumulation of one query tile over its band of source tiles."""
    n_rows, n_cols, _, causal, window, mode, ranges = cfg
    dv = v.shape[3]
    rows = min(BQ, n_rows - i0)
    zero, one, ninf = typed(0, k), typed(1, k), typed(-np.inf, k)
    st = aligned_empty(BK, BQ, k)
    pv = aligned_empty(BQ, dv, k)
    acc = aligned_empty(BQ, dv, k)
    acc[:] = zero
    vec = aligned_empty(6, BQ, k)
    m, l, alpha, shift, mx, tot = vec[0], vec[1], vec[2], vec[3], vec[4], vec[5]
    m[:] = ninf
    l[:] = zero
    alpha[:] = one
    lo, hi = np.empty(BQ, np.int64), np.empty(BQ, np.int64)
    ones, zeros = np.ones(BQ, np.bool_), np.zeros(BQ, k.dtype)
    clipped_row_bands(i0, n_rows, n_cols, causal, window, ranges, lo, hi)
    jlo, jhi = tile_band(lo, hi, rows)
    qtt = qtb[b, h, i0 // BQ]                          # (d, BQ): k q^T as a plain gemm (2x faster)
    for j0 in range((jlo // BK) * BK, jhi, BK):        # tiles outside the band are skipped
        np.dot(k[b, h, j0:j0 + BK], qtt, st)
        if not _plain(j0, lo, hi, rows, sup):
            _logits(st, b, h, i0, j0, lo, hi, sup, ones, zeros)
        tot[:] = zero
        if mode == 0:
            mx[:] = ninf
            for jj in range(BK):                       # select-based max: vectorises
                row = st[jj]
                for ii in range(BQ):
                    mx[ii] = row[ii] if row[ii] > mx[ii] else mx[ii]  # noqa: FURB136
            for ii in range(BQ):
                mnew = mx[ii] if mx[ii] > m[ii] else m[ii]  # noqa: FURB136
                seen = mnew > ninf
                alpha[ii] = fexp(m[ii] - mnew) if seen else one   # 0 on the first seen tile
                shift[ii] = mnew if seen else zero                # keeps exp(-inf - shift) = 0
                m[ii] = mnew
            for jj in range(BK):
                row = st[jj]
                for ii in range(BQ):
                    e = fexp(row[ii] - shift[ii])
                    row[ii] = e
                    tot[ii] += e
            for ii in range(BQ):
                l[ii] = l[ii] * alpha[ii] + tot[ii]
        else:
            for jj in range(BK):
                row = st[jj]
                for ii in range(BQ):
                    x = row[ii]
                    x = x if x > ninf else zero
                    row[ii] = x
                    tot[ii] += x
            for ii in range(BQ):
                l[ii] += tot[ii]
        np.dot(st.T, v[b, h, j0:j0 + BK], pv)
        for ii in range(rows):
            for c in range(dv):
                acc[ii, c] = acc[ii, c] * alpha[ii] + pv[ii, c]
    for ii in range(rows):
        i = i0 + ii
        if mode == 0:
            good = l[ii] != 0               # NaN propagates
            stats[b, h, i] = m[ii] + np.log(l[ii]) if good else ninf
        else:
            good = mode == 2 or l[ii] != 0
            stats[b, h, i] = l[ii]
        inv = (one / l[ii] if mode != 2 else one) if good else zero
        for c in range(dv):
            out[b, h, i, c] = acc[ii, c] * inv


@nb.njit(**JIT)
def _forward(first, step, n_tasks, qtb, k, v, cfg, sup, out, stats):
    """Tasks first, first + step, ... of (b, h, query tile)."""
    H, nqt = qtb.shape[1], qtb.shape[2]
    for t in range(first, n_tasks, step):
        _forward_tile(qtb, k, v, t // (H * nqt), (t // nqt) % H, (t % nqt) * BQ, cfg, sup, out, stats)


@nb.njit(**JIT)
def _backward_chunk(q, qtb, k, v, do, dotb, dd, stats, b, h, c, chunks, cfg, sup, dq, dk, dv, dbias,
                    want_dbias, dslope):
    """Gradients from the query tiles of chunk c: dq rows (owned), dk / dv into copy c."""
    n_rows, n_cols, scale, causal, window, mode, ranges = cfg
    d, dvd = q.shape[3], v.shape[3]
    nqt = q.shape[2] // BQ
    per = -(-nqt // chunks)
    st = aligned_empty(BK, BQ, q)     # logits, then P^T
    gt = aligned_empty(BK, BQ, q)     # dP^T, then dX^T
    tq = aligned_empty(BQ, d, q)
    tk = aligned_empty(BK, d, q)
    tv = aligned_empty(BK, dvd, q)
    vec = aligned_empty(3, BQ, q)
    shift, inv, D = vec[0], vec[1], vec[2]
    lo, hi = np.empty(BQ, np.int64), np.empty(BQ, np.int64)
    ones, zeros = np.ones(BQ, np.bool_), np.zeros(BQ, q.dtype)
    zero, one, ninf = typed(0, q), typed(1, q), typed(-np.inf, q)
    slope_acc = 0.0
    for qtile in range(c * per, min(nqt, (c + 1) * per)):
        i0 = qtile * BQ
        rows = min(BQ, n_rows - i0)
        clipped_row_bands(i0, n_rows, n_cols, causal, window, ranges, lo, hi)
        for ii in range(BQ):
            s_i = stats[b, h, i0 + ii]
            shift[ii] = s_i if s_i > ninf else zero     # an empty row attends nothing anyway
            inv[ii] = one / s_i if s_i != 0 else zero    # 'sum': Z = 0 gives y = 0 and grad 0
            D[ii] = dd[b, h, i0 + ii]
        jlo, jhi = tile_band(lo, hi, rows)
        qt, dot = q[b, h, i0:i0 + BQ], do[b, h, i0:i0 + BQ]
        qtt, dott = qtb[b, h, qtile], dotb[b, h, qtile]
        for j0 in range((jlo // BK) * BK, jhi, BK):
            kt, vt = k[b, h, j0:j0 + BK], v[b, h, j0:j0 + BK]
            np.dot(kt, qtt, st)
            np.dot(vt, dott, gt)
            if not _plain(j0, lo, hi, rows, sup):
                _logits(st, b, h, i0, j0, lo, hi, sup, ones, zeros)
            for jj in range(BK):
                prow, grow = st[jj], gt[jj]
                if mode == 0:
                    for ii in range(BQ):
                        p = fexp(prow[ii] - shift[ii])
                        prow[ii] = p
                        grow[ii] = p * (grow[ii] - D[ii])
                elif mode == 1:
                    for ii in range(BQ):
                        x = prow[ii]
                        keep = x > ninf
                        prow[ii] = x * inv[ii] if keep else zero
                        grow[ii] = (grow[ii] - D[ii]) * inv[ii] if keep else zero
                else:
                    for ii in range(BQ):
                        keep = prow[ii] > ninf
                        prow[ii] = prow[ii] if keep else zero
                        grow[ii] = grow[ii] if keep else zero
            if want_dbias:                   # transposed too: (B, H, M, N)
                for jj in range(min(BK, n_cols - j0)):
                    for ii in range(rows):
                        dbias[b, h, j0 + jj, i0 + ii] = gt[jj, ii]
            if sup[5]:
                for jj in range(BK):
                    for ii in range(BQ):
                        slope_acc -= gt[jj, ii] * abs(i0 + ii - j0 - jj)
            np.dot(st, dot, tv)
            np.dot(gt, qt, tk)
            np.dot(gt.T, kt, tq)
            for jj in range(BK):
                for e in range(dvd):
                    dv[c, b, h, j0 + jj, e] += tv[jj, e]
                for e in range(d):
                    dk[c, b, h, j0 + jj, e] += tk[jj, e] * scale
            for ii in range(rows):
                for e in range(d):
                    dq[b, h, i0 + ii, e] += tq[ii, e] * scale
    dslope[c, b, h] = slope_acc


@nb.njit(**JIT)
def _backward(first, step, n_tasks, q, qtb, k, v, do, dotb, dd, stats, chunks, cfg, sup, dq, dk, dv,
              dbias, want_dbias, dslope):
    """Tasks first, first + step, ... of (b, h, query chunk)."""
    H = q.shape[1]
    for t in range(first, n_tasks, step):
        _backward_chunk(q, qtb, k, v, do, dotb, dd, stats, t // (H * chunks), (t // chunks) % H,
                        t % chunks, chunks, cfg, sup, dq, dk, dv, dbias, want_dbias, dslope)


def _tiles_t(x):
    """(B, H, N_pad, c) -> (B, H, N_pad / BQ, c, BQ): each query tile transposed, contiguous."""
    B, H, n, c = x.shape
    return np.ascontiguousarray(x.reshape(B, H, n // BQ, BQ, c).transpose(0, 1, 2, 4, 3))


def _transposed(plane, n):
    """(Bx, Hx, N or 1, M or 1) -> (Bx, Hx, M or 1, N_pad or 1) C-contiguous, queries padded to
    whole tiles, so that the kernel reads contiguous runs over the queries of one source."""
    t = plane.transpose(0, 1, 3, 2)
    return pad_rows(t, 3, BQ) if plane.shape[2] > 1 else np.ascontiguousarray(t)


def _prepare(op, q, k, v, scale, causal, mask, bias, alibi_slopes, window, normalization, ranges):
    """Checked, padded kernel arguments shared by forward and backward."""
    q, k, v, scale, mode = check_attention_arguments(op, q, k, v, scale, normalization)
    B, H, N, _ = q.shape
    M = k.shape[2]
    mask4, use_mask, bias4, use_bias, slopes, use_alibi = attention_support(op, mask, bias, alibi_slopes,
                                                                            (B, H, N, M), q.dtype)
    cfg = (N, M, scale, bool(causal), window_of(op, window), mode, ranges_of(op, ranges, N, M))
    sup = (_transposed(mask4, N), use_mask, _transposed(bias4, N), use_bias, slopes, use_alibi)
    padded = (pad_rows(q, 2, BQ), pad_rows(k, 2, BK), pad_rows(v, 2, BK))
    return (q, k, v), padded, cfg, sup


def attention_forward(q, k, v, scale, causal=False, mask=None, bias=None, alibi_slopes=None,
                      window=None, normalization="softmax", ranges=None):
    """Fused attention forward (see the module docstring). Returns (out (B, H, N, dv), stats (B, H, N)).

    mask: bool, broadcastable to (B, H, N, M), True = attend. bias: float, broadcastable to
    (B, H, N, M) (e.g. (H, N, M)). alibi_slopes: (H,), adds -slope_h |i - j| without a matrix.
    stats is the row log-sum-exp ('softmax') or the row sum Z_i of x_ij ('sum', 'none'); pass it back
    to attention_backward.
    """
    (q, k, v), (qp, kp, vp), cfg, sup = _prepare("attention_forward", q, k, v, scale, causal, mask,
                                                  bias, alibi_slopes, window, normalization, ranges)
    B, H, N, _ = q.shape
    out = np.zeros((B, H, N, v.shape[3]), q.dtype)
    stats = np.full((B, H, N), -np.inf if cfg[5] == 0 else 0, q.dtype)
    if N and k.shape[2]:
        run_tasks(_forward, B * H * (qp.shape[2] // BQ), _tiles_t(qp * cfg[2]), kp, vp, cfg, sup, out, stats,
                  family="attention forward", blas=True)
    return out, stats


def attention_backward(q, k, v, out, stats, dout, scale, causal=False, mask=None, bias=None,
                       alibi_slopes=None, window=None, normalization="softmax", bias_grad=True, ranges=None):
    """Gradients of attention_forward: returns (dq, dk, dv, dbias, dslopes).

    dbias has bias's own shape (None without bias, or with bias_grad=False: it needs a dense
    (B, H, N, M) buffer); dslopes has shape (H,) (None without alibi_slopes). Nothing else of size
    N x M is stored.
    """
    op = "attention_backward"
    (q, k, v), (qp, kp, vp), cfg, sup = _prepare(op, q, k, v, scale, causal, mask, bias,
                                                  alibi_slopes, window, normalization, ranges)
    B, H, N, _ = q.shape
    M, dvd = v.shape[2], v.shape[3]
    out, stats, dout = check_saved(op, out, stats, dout, (B, H, N, dvd), q.dtype)
    want_dbias = bias is not None and bias_grad
    chunks = chunks_for(B * H, qp.shape[2] // BQ)
    dq = np.zeros(qp.shape, q.dtype)
    dk = np.zeros((chunks,) + kp.shape, q.dtype)
    dv = np.zeros((chunks,) + vp.shape, q.dtype)
    dbias = np.zeros((B, H, M, N) if want_dbias else (1, 1, 1, 1), q.dtype)
    dslope = np.zeros((chunks, B, H), q.dtype)
    if N and M:
        dd = np.zeros((B, H, N), q.dtype) if cfg[5] == 2 else np.einsum("bhnc,bhnc->bhn", dout, out)
        dop = pad_rows(dout, 2, BQ)
        run_tasks(_backward, B * H * chunks, qp, _tiles_t(qp * cfg[2]), kp, vp, dop, _tiles_t(dop),
                  pad_rows(dd, 2, BQ), pad_rows(stats, 2, BQ), chunks, cfg, sup, dq, dk, dv, dbias,
                  want_dbias, dslope, family="attention backward", blas=True)
    dq = np.ascontiguousarray(dq[:, :, :N])
    dk = np.ascontiguousarray(dk.sum(0)[:, :, :M])
    dv = np.ascontiguousarray(dv.sum(0)[:, :, :M])
    dbias = unbroadcast(dbias.transpose(0, 1, 3, 2), np.shape(bias)) if want_dbias else None
    dslopes = dslope.sum((0, 1)) if alibi_slopes is not None else None
    return dq, dk, dv, dbias, dslopes
