"""Tiled fused MLP-kernel integral transform on raw arrays (Numba, CPU): the ITNet kernel evaluated
pair by pair inside (TQ, TK) tiles; no (N, M) or (N, M, K) array is ever formed.

Per-point projections are computed outside (dense and cheap); the kernel does the per-pair part:

    pre_ijk = a_ik + b_jk + sum_r W_kr x_ir y_jr          a (B, N, K), b (B, M, K), x (B, N, R),
                                                          y (B, M, R), W (K, R); R may be 0
    s^h_ij  = sum_k W2_hk act(pre_ijk) + b2_h             W2 (H, K), b2 (H,), act in ACTIVATIONS

and per head h, with values v (B, H, M, dv), quadrature weights w (B, M) or (B, H, M) and the
support S(i) (causal j <= i, |i - j| <= window, bool mask (B, H, N, M)-broadcastable, True = attend):

    'none':     y^h_i = sum_j w_j s^h_ij v^h_j                               stats = Z^h_i
    'sum':      y^h_i = sum_j w_j s^h_ij v^h_j / Z^h_i,  Z^h_i = sum_j w_j s^h_ij
    'softmax':  y^h_i = sum_j w_j exp(s^h_ij) v^h_j / sum_j w_j exp(s^h_ij)    stats = log sum_j w_j e^s

(sums over j in S(i); 'softmax' is the softmax of the logits s + log w, computed online without the
log; it needs w >= 0). An empty row, or Z = 0 for 'sum', gives y = 0.

Per pair the cost is O(K (1 + R) + H K + H dv): pre and act of a (TQ, TK) block are rows of K
contiguous values (vectorised loops, one activation call per block), s = W2 act^T and the value
products are BLAS gemms. One task per (b, query tile); all heads share the pair block.

Backward recomputes the blocks. With dP^h_ij = dout^h_i . v^h_j, D^h_i = dout^h_i . y^h_i and
e_ij = exp(s_ij - stats_i):
    'softmax':  dX_ij = w_j e_ij (dP_ij - D_i),   dw_j += e_ij (dP_ij - D_i)
    'sum':      dX_ij = w_j (dP_ij - D_i) / Z_i,  dw_j += s_ij (dP_ij - D_i) / Z_i
    'none':     dX_ij = w_j dP_ij,                dw_j += s_ij dP_ij
then, with dpre_ijk = act'(pre_ijk) sum_h W2_hk dX^h_ij:
    db2_h = sum dX^h,  dW2_hk = sum dX^h act_k,  da_i = sum_j dpre_ij,  db_j = sum_i dpre_ij,
    dW_kr = sum_ij dpre_ijk x_ir y_jr,  dx_ir = sum_j (dpre_ij W)_r y_jr,  dy_jr = sum_i (dpre_ij W)_r x_ir.
One task per (b, query chunk): query-side gradients belong to the task's rows, source-side ones go
to a per-chunk copy, W / W2 / b2 to per-task partial sums, all reduced at the end (no races, no
N x M buffers; see chunks_for).
"""
import math

import numba as nb
import numpy as np

from ..._numba import run_tasks
from ...errors import ConfigError, ShapeError
from ._tiles import (
    ACTIVATIONS,
    JIT,
    NORMALIZATIONS,
    activate_row,
    aligned_empty,
    broadcast4,
    check_float,
    chunks_for,
    clipped_row_bands,
    code_of,
    fexp,
    pad_rows,
    ranges_of,
    scale_by_activation_grad,
    tile_band,
    window_of,
)

TQ = 16   # query rows per tile
TK = 32   # source rows per tile: TQ*TK pairs of K values in scratch

__all__ = ["mlp_backward", "mlp_forward"]


@nb.njit(**JIT)
def _pairs(a, b, x, y, WT, bi, i0, j0, lo, hi, code, pre, act):
    """pre and act(pre) of the (TQ, TK) block, pair ii*TK + jj in row ii*TK + jj (K contiguous);
    pairs outside the band stay 0 (act(0) = 0 for every activation)."""
    K, R = a.shape[2], x.shape[2]
    for ii in range(TQ):
        ai, xi = a[bi, i0 + ii], x[bi, i0 + ii]
        for jj in range(TK):
            p = pre[ii * TK + jj]
            j = j0 + jj
            if j < lo[ii] or j >= hi[ii]:
                p[:] = 0
                continue
            bj, yj = b[bi, j], y[bi, j]
            for kk in range(K):
                p[kk] = ai[kk] + bj[kk]
            for r in range(R):
                c = xi[r] * yj[r]
                wr = WT[r]
                for kk in range(K):
                    p[kk] += c * wr[kk]
    act[:] = pre
    activate_row(act.reshape(-1), code)     # one call over the block: vectorised, no per-pair calls


@nb.njit(**JIT)
def _logits(row, srow, b2h, j0, lo_i, hi_i, mrow, mstep, use_mask):
    """row[jj] = s_ij + b2_h for the source j0 + jj in S(i), else -inf."""
    for jj in range(TK):
        j = j0 + jj
        keep = (j >= lo_i) & (j < hi_i)
        if use_mask:
            keep = keep & mrow[min(j, mrow.shape[0] - 1) * mstep]
        row[jj] = srow[jj] + b2h if keep else -np.inf


@nb.njit(**JIT)
def _mask_row(mask, bi, h, i):
    """The mask row of (b, h, i) over the sources, and its stride (0 when broadcast over j)."""
    mrow = mask[bi if mask.shape[0] > 1 else 0, h if mask.shape[1] > 1 else 0,
                min(i, mask.shape[2] - 1) if mask.shape[2] > 1 else 0]
    return mrow, (1 if mask.shape[3] > 1 else 0)


@nb.njit(**JIT)
def _forward_tile(a, b, x, y, WT, W2, b2, v, w, bi, i0, cfg, mask, out, stats):
    """One (b, query tile): pair blocks -> per-head logits -> online softmax / sums -> values."""
    n_rows, n_cols, code, causal, window, mode, use_mask, ranges = cfg
    K, H, dv = a.shape[2], b2.shape[0], v.shape[3]
    rows = min(TQ, n_rows - i0)
    pre = aligned_empty(TQ * TK, K, a)
    act = aligned_empty(TQ * TK, K, a)
    sc = aligned_empty(H, TQ * TK, a)       # s^h of pair p at sc[h, p]: contiguous over sources
    p = aligned_empty(TQ, TK, a)
    pv = aligned_empty(TQ, dv, a)
    acc = np.zeros((H, TQ, dv), a.dtype)
    m = np.full((H, TQ), -np.inf, a.dtype)
    l = np.zeros((H, TQ), a.dtype)
    alpha = np.ones(TQ, a.dtype)
    lo, hi = np.empty(TQ, np.int64), np.empty(TQ, np.int64)
    clipped_row_bands(i0, n_rows, n_cols, causal, window, ranges, lo, hi)
    jlo, jhi = tile_band(lo, hi, rows)
    for j0 in range((jlo // TK) * TK, jhi, TK):
        _pairs(a, b, x, y, WT, bi, i0, j0, lo, hi, code, pre, act)
        np.dot(W2, act.T, sc)
        for h in range(H):
            wrow = w[bi, h if w.shape[1] > 1 else 0, j0:j0 + TK]
            for ii in range(TQ):
                row = p[ii]
                alpha[ii] = 1
                if ii >= rows:
                    row[:] = 0
                    continue
                mrow, mstep = _mask_row(mask, bi, h, i0 + ii)
                _logits(row, sc[h, ii * TK:(ii + 1) * TK], b2[h], j0, lo[ii], hi[ii], mrow, mstep,
                        use_mask)
                tot = l[h, ii] * 0
                if mode == 0:
                    mx = row[0]
                    for jj in range(1, TK):
                        r = row[jj]
                        mx = r if (r > mx) | math.isnan(r) else mx  # NaN sticks (max() drops it)
                    if mx == -np.inf:
                        row[:] = 0
                        continue
                    mnew = m[h, ii] if mx <= m[h, ii] else mx  # noqa: FURB136  (max() drops a NaN mx)
                    alpha[ii] = fexp(m[h, ii] - mnew)       # 0 on the first seen tile
                    m[h, ii] = mnew
                    for jj in range(TK):
                        e = wrow[jj] * fexp(row[jj] - mnew)
                        row[jj] = e
                        tot += e
                    l[h, ii] = l[h, ii] * alpha[ii] + tot
                else:
                    for jj in range(TK):
                        s = row[jj]
                        s = wrow[jj] * s if s > -np.inf else 0
                        row[jj] = s
                        tot += s
                    l[h, ii] += tot
            np.dot(p, v[bi, h, j0:j0 + TK], pv)
            for ii in range(rows):
                for c in range(dv):
                    acc[h, ii, c] = acc[h, ii, c] * alpha[ii] + pv[ii, c]
    for h in range(H):
        for ii in range(rows):
            i = i0 + ii
            if mode == 0:
                good = l[h, ii] != 0            # NaN propagates
                stats[bi, h, i] = m[h, ii] + np.log(l[h, ii]) if good else -np.inf
            else:
                good = mode == 2 or l[h, ii] != 0
                stats[bi, h, i] = l[h, ii]
            inv = (1 / l[h, ii] if mode != 2 else 1) if good else 0
            for c in range(dv):
                out[bi, h, i, c] = acc[h, ii, c] * inv


@nb.njit(**JIT)
def _forward(first, step, n_tasks, a, b, x, y, WT, W2, b2, v, w, cfg, mask, out, stats):
    """Tasks first, first + step, ... of (b, query tile)."""
    nqt = a.shape[1] // TQ
    for t in range(first, n_tasks, step):
        _forward_tile(a, b, x, y, WT, W2, b2, v, w, t // nqt, (t % nqt) * TQ, cfg, mask, out, stats)


@nb.njit(**JIT)
def _backward_chunk(a, b, x, y, W, WT, W2, b2, v, w, do, dd, stats, bi, c, t, chunks, cfg, mask, grads):
    """Gradients from the query tiles of chunk c: query-side rows owned, source side into copy c,
    weights into the partial sums of task t."""
    n_rows, n_cols, code, causal, window, mode, use_mask, ranges = cfg
    da, dx, db, dy, dv, dw, dW, dW2, db2 = grads
    K, R, H, dvd = a.shape[2], x.shape[2], b2.shape[0], v.shape[3]
    nqt = a.shape[1] // TQ
    per = -(-nqt // chunks)
    pre = aligned_empty(TQ * TK, K, a)
    act = aligned_empty(TQ * TK, K, a)
    dact = aligned_empty(TQ * TK, K, a)
    sc = aligned_empty(H, TQ * TK, a)
    ds = aligned_empty(H, TQ * TK, a)       # dL/ds^h for pair p at ds[h, p]
    p = aligned_empty(TQ, TK, a)
    dp = aligned_empty(TQ, TK, a)
    tv = aligned_empty(TK, dvd, a)
    tw2 = aligned_empty(H, K, a)
    tr = aligned_empty(TQ * TK, R, a)
    xy = aligned_empty(TQ * TK, R, a)
    tw = aligned_empty(K, R, a)
    lo, hi = np.empty(TQ, np.int64), np.empty(TQ, np.int64)
    for qtile in range(c * per, min(nqt, (c + 1) * per)):
        i0 = qtile * TQ
        rows = min(TQ, n_rows - i0)
        clipped_row_bands(i0, n_rows, n_cols, causal, window, ranges, lo, hi)
        jlo, jhi = tile_band(lo, hi, rows)
        for j0 in range((jlo // TK) * TK, jhi, TK):
            _pairs(a, b, x, y, WT, bi, i0, j0, lo, hi, code, pre, act)
            np.dot(W2, act.T, sc)
            for h in range(H):
                hw = h if w.shape[1] > 1 else 0
                wrow = w[bi, hw, j0:j0 + TK]
                dot = do[bi, h, i0:i0 + TQ]
                np.dot(dot, v[bi, h, j0:j0 + TK].T, dp)
                for ii in range(TQ):
                    prow, grow, drow = p[ii], dp[ii], ds[h, ii * TK:(ii + 1) * TK]
                    st = stats[bi, h, i0 + ii]
                    if ii >= rows or (mode == 0 and st == -np.inf) or (mode == 1 and st == 0):
                        prow[:] = 0
                        drow[:] = 0
                        continue
                    mrow, mstep = _mask_row(mask, bi, h, i0 + ii)
                    _logits(prow, sc[h, ii * TK:(ii + 1) * TK], b2[h], j0, lo[ii], hi[ii], mrow,
                            mstep, use_mask)
                    D = dd[bi, h, i0 + ii]
                    for jj in range(TK):
                        s = prow[jj]
                        keep = s > -np.inf
                        wj = wrow[jj]
                        if mode == 0:
                            e = fexp(s - st)
                            gw = e * (grow[jj] - D)        # dL/dw_j
                            g, pij = wj * gw, wj * e       # dL/ds_ij, normalised weight
                        elif mode == 1:
                            gz = (grow[jj] - D) / st
                            gw, g, pij = s * gz, wj * gz, wj * s / st
                        else:
                            gw, g, pij = s * grow[jj], wj * grow[jj], wj * s
                        prow[jj] = pij if keep else 0
                        drow[jj] = g if keep else 0
                        dw[c, bi, hw, j0 + jj] += gw if keep else 0
                np.dot(p.T, dot, tv)
                for jj in range(TK):
                    for e in range(dvd):
                        dv[c, bi, h, j0 + jj, e] += tv[jj, e]
            for h in range(H):
                db2[t, h] += ds[h].sum()
            np.dot(ds, act, tw2)
            dW2[t] += tw2
            np.dot(ds.T, W2, dact)
            scale_by_activation_grad(dact.reshape(-1), pre.reshape(-1), code)
            for ii in range(rows):
                dai = da[bi, i0 + ii]
                for jj in range(TK):
                    g, dbj = dact[ii * TK + jj], db[c, bi, j0 + jj]
                    for kk in range(K):
                        dai[kk] += g[kk]
                        dbj[kk] += g[kk]
            if R > 0:
                np.dot(dact, W, tr)
                for ii in range(TQ):
                    for jj in range(TK):
                        for r in range(R):
                            xi, yj, g = x[bi, i0 + ii, r], y[bi, j0 + jj, r], tr[ii * TK + jj, r]
                            dx[bi, i0 + ii, r] += g * yj
                            dy[c, bi, j0 + jj, r] += g * xi
                            xy[ii * TK + jj, r] = xi * yj
                np.dot(dact.T, xy, tw)
                dW[t] += tw


@nb.njit(**JIT)
def _backward(first, step, n_tasks, a, b, x, y, W, WT, W2, b2, v, w, do, dd, stats, chunks, cfg, mask,
              grads):
    """Tasks first, first + step, ... of (b, query chunk)."""
    for t in range(first, n_tasks, step):
        _backward_chunk(a, b, x, y, W, WT, W2, b2, v, w, do, dd, stats, t // chunks, t % chunks, t,
                        chunks, cfg, mask, grads)


def _prepare(op, a, b, x, y, W, W2, b2, v, w, act, causal, mask, window, normalization, ranges):
    """Checked, padded kernel arguments shared by forward and backward."""
    a = check_float(op, "a", a, 3)
    dt = a.dtype
    b, x, y = (check_float(op, n, z, 3, dt) for n, z in (("b", b), ("x", x), ("y", y)))
    W, W2 = check_float(op, "W", W, 2, dt), check_float(op, "W2", W2, 2, dt)
    b2, v = check_float(op, "b2", b2, 1, dt), check_float(op, "v", v, 4, dt)
    B, N, K = a.shape
    M, R, H = b.shape[1], x.shape[2], W2.shape[0]
    want = {"b": (B, M, K), "x": (B, N, R), "y": (B, M, R), "W": (K, R), "W2": (H, K), "b2": (H,)}
    for name, z in (("b", b), ("x", x), ("y", y), ("W", W), ("W2", W2), ("b2", b2)):
        if z.shape != want[name]:
            raise ShapeError(f"{op}: {name} must have shape {want[name]} (from a {a.shape}, b "
                             f"{b.shape}, x {x.shape}, W2 {W2.shape}), got {z.shape}")
    if v.shape[:3] != (B, H, M):
        raise ShapeError(f"{op}: v must have shape ({B}, {H}, {M}, dv), got {v.shape}")
    w = check_float(op, "w", w, np.ndim(w), dt)
    if w.shape not in ((B, M), (B, H, M)):
        raise ShapeError(f"{op}: w must have shape ({B}, {M}) or ({B}, {H}, {M}), got {w.shape}")
    mode = code_of(op, "normalization", normalization, NORMALIZATIONS)
    if mode == 0 and np.any(w < 0):
        raise ConfigError(f"{op}: normalization='softmax' needs quadrature weights w >= 0")
    use_mask = mask is not None
    mask4 = (broadcast4(op, "mask", mask, (B, H, N, M), bool) if use_mask
             else np.ones((1, 1, 1, 1), bool))
    arrays = (pad_rows(a, 1, TQ), pad_rows(b, 1, TK), pad_rows(x, 1, TQ), pad_rows(y, 1, TK), W,
              np.ascontiguousarray(W.T), W2, b2, pad_rows(v, 2, TK),
              pad_rows(w.reshape(B, 1 if w.ndim == 2 else H, M), 2, TK))
    cfg = (N, M, code_of(op, "act", act, ACTIVATIONS), bool(causal), window_of(op, window), mode,
           use_mask, ranges_of(op, ranges, N, M))
    return arrays, cfg, mask4, (B, N, M, K, R, H, v.shape[3], w.shape)


def mlp_forward(a, b, x, y, W, W2, b2, v, w, act="gelu_tanh", causal=False, mask=None, window=None,
                normalization="softmax", ranges=None):
    """Fused MLP-kernel transform forward (module docstring). Returns (out (B, H, N, dv), stats (B, H, N))."""
    arrays, cfg, mask4, (B, N, M, _, _, H, dvd, _) = _prepare(
        "mlp_forward", a, b, x, y, W, W2, b2, v, w, act, causal, mask, window, normalization, ranges)
    ap, bp, xp, yp, _, WT, W2, b2, vp, wp = arrays
    out = np.zeros((B, H, N, dvd), ap.dtype)
    stats = np.full((B, H, N), -np.inf if cfg[5] == 0 else 0, ap.dtype)
    if N and M:
        run_tasks(_forward, B * (ap.shape[1] // TQ), ap, bp, xp, yp, WT, W2, b2, vp, wp, cfg, mask4,
                  out, stats, family="mlp forward", blas=True)
    return out, stats


def mlp_backward(a, b, x, y, W, W2, b2, v, w, out, stats, dout, act="gelu_tanh", causal=False,
                 mask=None, window=None, normalization="softmax", ranges=None):
    """Gradients of mlp_forward: a dict with keys a, b, x, y, W, W2, b2, v, w (each its input's shape)."""
    op = "mlp_backward"
    arrays, cfg, mask4, (B, N, M, K, R, H, dvd, wshape) = _prepare(
        op, a, b, x, y, W, W2, b2, v, w, act, causal, mask, window, normalization, ranges)
    ap, bp, xp, yp, W, WT, W2, b2, vp, wp = arrays
    dt = ap.dtype
    out, dout = check_float(op, "out", out, 4, dt), check_float(op, "dout", dout, 4, dt)
    stats = check_float(op, "stats", stats, 3, dt)
    for name, z, shape in (("out", out, (B, H, N, dvd)), ("dout", dout, (B, H, N, dvd)),
                           ("stats", stats, (B, H, N))):
        if z.shape != shape:
            raise ShapeError(f"{op}: {name} must have shape {shape}, got {z.shape}")
    n_pad, m_pad = ap.shape[1], bp.shape[1]
    chunks = chunks_for(B, n_pad // TQ)
    tasks = B * chunks
    da, dx = np.zeros((B, n_pad, K), dt), np.zeros((B, n_pad, R), dt)
    db, dy = np.zeros((chunks, B, m_pad, K), dt), np.zeros((chunks, B, m_pad, R), dt)
    dv = np.zeros((chunks, B, H, m_pad, dvd), dt)
    dw = np.zeros((chunks,) + wp.shape, dt)
    dW, dW2, db2 = np.zeros((tasks, K, R), dt), np.zeros((tasks, H, K), dt), np.zeros((tasks, H), dt)
    if N and M:
        dd = np.zeros((B, H, N), dt) if cfg[5] == 2 else np.einsum("bhnc,bhnc->bhn", dout, out)
        run_tasks(_backward, tasks, ap, bp, xp, yp, W, WT, W2, b2, vp, wp, pad_rows(dout, 2, TQ),
                  pad_rows(dd, 2, TQ), pad_rows(stats, 2, TQ), chunks, cfg, mask4,
                  (da, dx, db, dy, dv, dw, dW, dW2, db2), family="mlp backward", blas=True)
    return {"a": da[:, :N].copy(), "b": db.sum(0)[:, :M].copy(), "x": dx[:, :N].copy(),
            "y": dy.sum(0)[:, :M].copy(), "W": dW.sum(0), "W2": dW2.sum(0), "b2": db2.sum(0),
            "v": dv.sum(0)[:, :, :M].copy(), "w": dw.sum(0)[:, :, :M].reshape(wshape).copy()}
