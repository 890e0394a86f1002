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

Per pair the cost is O(K (1 + R) + H K + H dv). Layout: every inner loop runs over a run of sources
(up to TK contiguous j of one query row i), so the loops vectorise whatever K, H and dv are (loops
over K = 16 or dv = 16 would be too short for 8-lane vectors): the sources' b, y and v come
transposed, (K, M), (R, M), (dv, M). Per query row i and source tile: pre[k, :] = a_ik + b_k + sum_r
W_kr x_ir y_r, act(pre) into a second buffer (see _tiles.activate), s[h, :] = b2_h + sum_k W2_hk
act[k, :], the online softmax (or sums) on s[h, :], and y^h_i += sum_j e_j v^h_j as dv dot products
over the run. The softmax shift m moves only when a logit exceeds it by more than LAZY (exp(s - m)
<= e^LAZY, exact after the division by the sum), so a run costs one vectorised compare instead of a
max. No BLAS calls (their per-call cost dominated the small tiles). The TQ query rows of a task
share each source tile while it is in cache. All arithmetic is in the data's dtype (typed
constants).

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
import numba as nb
import numpy as np

from ..._numba import run_tasks, typed
from ._arguments import broadcast4, check_mlp_arguments, check_saved, ranges_of, window_of
from ._tiles import (
    JIT,
    activate,
    aligned_empty,
    chunks_for,
    clipped_row_bands,
    fexp,
    scale_by_activation_grad,
    tile_band,
)

TQ = 16    # query rows per task; they share each source tile while it is in cache
TK = 256   # sources per tile (one run of the vectorised loops)
LAZY = 8   # the online softmax moves its shift only for logits above shift + LAZY

__all__ = ["mlp_backward", "mlp_forward"]


@nb.njit(**JIT)
def _pre(a, bT, x, yT, W, bi, i, js, n, pre):
    """pre[k, :n] = a_ik + b_jk + sum_r W_kr x_ir y_jr for the sources j = js .. js + n - 1."""
    K, R = a.shape[2], x.shape[2]
    for kk in range(K):
        aik, brow, prow = a[bi, i, kk], bT[bi, kk, js:js + n], pre[kk]
        for jj in range(n):
            prow[jj] = aik + brow[jj]
        for r in range(R):
            c, yrow = W[kk, r] * x[bi, i, r], yT[bi, r, js:js + n]
            for jj in range(n):
                prow[jj] += c * yrow[jj]


@nb.njit(**JIT)
def _scores(act, W2, b2, n, s):
    """s[h, :n] = b2_h + sum_k W2_hk act[k, :n]."""
    for h in range(W2.shape[0]):
        srow = s[h]
        for jj in range(n):
            srow[jj] = b2[h]
        for kk in range(W2.shape[1]):
            c, arow = W2[h, kk], act[kk]
            for jj in range(n):
                srow[jj] += c * arow[jj]


@nb.njit(**JIT)
def _apply_mask(mask, srow, bi, h, i, js, n, use_mask):
    """srow[jj] = -inf where the mask excludes source js + jj."""
    if use_mask:
        mrow = mask[bi if mask.shape[0] > 1 else 0, h if mask.shape[1] > 1 else 0,
                    min(i, mask.shape[2] - 1) if mask.shape[2] > 1 else 0]
        ninf = typed(-np.inf, srow)
        if mask.shape[3] > 1:
            mj = mrow[js:js + n]
            for jj in range(n):
                srow[jj] = srow[jj] if mj[jj] else ninf
        elif not mrow[0]:
            srow[:n] = ninf


@nb.njit(**JIT)
def _row_max(row, n):
    """max of row[:n] (-inf when empty); a NaN entry makes it NaN (max() would drop it)."""
    mx = typed(-np.inf, row)
    for jj in range(n):
        r = row[jj]
        mx = r if (r > mx) | (r != r) else mx  # noqa: PLR0124
    return mx


@nb.njit(**JIT)
def _forward_tile(a, bT, x, yT, W, W2, b2, vT, w, bi, i0, cfg, mask, out, stats):
    """One (b, query tile): source tiles -> per row pre/act -> per head logits -> online softmax
    (or sums) -> values, accumulated in acc[h, ii, :]."""
    n_rows, n_cols, code, causal, window, mode, use_mask, ranges = cfg
    K, H, dv = a.shape[2], b2.shape[0], vT.shape[2]
    rows = min(TQ, n_rows - i0)
    zero, one, ninf, lazy = typed(0, a), typed(1, a), typed(-np.inf, a), typed(LAZY, a)
    pre = aligned_empty(K, TK, a)
    act = aligned_empty(K, TK, a)
    s = aligned_empty(H, TK, a)
    acc = np.zeros((H, TQ, dv), a.dtype)
    m = np.full((H, TQ), ninf, a.dtype)
    l = np.zeros((H, TQ), a.dtype)
    lo, hi = np.empty(TQ, np.int64), np.empty(TQ, np.int64)
    clipped_row_bands(i0, n_rows, n_cols, causal, window, ranges, lo, hi)
    jlo, jhi = tile_band(lo, hi, rows)
    for j0 in range((jlo // TK) * TK, jhi, TK):
        for ii in range(rows):
            i = i0 + ii
            js, je = max(lo[ii], j0), min(hi[ii], j0 + TK)
            n = je - js
            if n <= 0:
                continue
            _pre(a, bT, x, yT, W, bi, i, js, n, pre)
            for kk in range(K):
                activate(pre[kk, :n], act[kk, :n], code)      # not in place: see activate
            _scores(act, W2, b2, n, s)
            for h in range(H):
                srow = s[h]
                _apply_mask(mask, srow, bi, h, i, js, n, use_mask)
                wrow = w[bi, h if w.shape[1] > 1 else 0, js:je]
                alpha, tot = one, zero
                if mode == 0:
                    # Lazy shift: keep m unless a logit exceeds it by more than LAZY (e^LAZY
                    # headroom; an OR over the run vectorises, a max with NaN semantics does not).
                    thr, over = m[h, ii] + lazy, False
                    for jj in range(n):
                        over |= (srow[jj] > thr) | (srow[jj] != srow[jj])
                    mnew = m[h, ii]
                    if over:
                        mx = _row_max(srow, n)
                        mnew = mnew if mx <= mnew else mx  # noqa: FURB136  (a NaN mx sticks)
                        alpha = fexp(m[h, ii] - mnew)    # 0 on the first row seen
                        m[h, ii] = mnew
                    if mnew == ninf:
                        continue
                    for jj in range(n):
                        e = wrow[jj] * fexp(srow[jj] - mnew)
                        srow[jj] = e
                        tot += e
                    l[h, ii] = l[h, ii] * alpha + tot
                else:
                    for jj in range(n):
                        e = srow[jj]
                        e = wrow[jj] * e if e > ninf else zero
                        srow[jj] = e
                        tot += e
                    l[h, ii] += tot
                arow = acc[h, ii]
                for c in range(dv):
                    vrow, t = vT[bi, h, c, js:je], zero
                    for jj in range(n):
                        t += srow[jj] * vrow[jj]
                    arow[c] = arow[c] * alpha + t
    for h in range(H):
        for ii in range(rows):
            i = i0 + ii
            if mode == 0:
                good = l[h, ii] != 0            # NaN propagates
                stats[bi, h, i] = m[h, ii] + np.log(l[h, ii]) if good else ninf
            else:
                good = mode == 2 or l[h, ii] != 0
                stats[bi, h, i] = l[h, ii]
            inv = (one / l[h, ii] if mode != 2 else one) if good else zero
            for c in range(dv):
                out[bi, h, i, c] = acc[h, ii, c] * inv


@nb.njit(**JIT)
def _forward(first, step, n_tasks, a, bT, x, yT, W, W2, b2, vT, w, cfg, mask, out, stats):
    """Tasks first, first + step, ... of (b, query tile)."""
    nqt = -(-a.shape[1] // TQ)
    for t in range(first, n_tasks, step):
        _forward_tile(a, bT, x, yT, W, W2, b2, vT, w, t // nqt, (t % nqt) * TQ, cfg, mask, out, stats)


@nb.njit(**JIT)
def _backward_chunk(a, bT, x, yT, W, W2, b2, vT, w, do, dd, stats, bi, c, t, chunks, cfg, mask, grads):
    """Gradients from the query rows of chunk c: query-side rows owned, source side into copy c,
    weights into the partial sums of task t."""
    n_rows, n_cols, code, causal, window, mode, use_mask, ranges = cfg
    da, dx, dbT, dyT, dvT, dw, dW, dW2, db2 = grads
    K, R, H, dvd = a.shape[2], x.shape[2], b2.shape[0], vT.shape[2]
    zero, one, ninf = typed(0, a), typed(1, a), typed(-np.inf, a)
    nqt = -(-n_rows // TQ)
    per = -(-nqt // chunks)
    pre = aligned_empty(K, TK, a)
    act = aligned_empty(K, TK, a)
    s = aligned_empty(H, TK, a)
    ds = aligned_empty(H, TK, a)           # dL/ds^h_ij over the run
    dp = aligned_empty(1, TK, a)[0]
    tr = aligned_empty(1, TK, a)[0]
    lo, hi = np.empty(TQ, np.int64), np.empty(TQ, np.int64)
    for qtile in range(c * per, min(nqt, (c + 1) * per)):
        i0 = qtile * TQ
        rows = min(TQ, n_rows - i0)
        clipped_row_bands(i0, n_rows, n_cols, causal, window, ranges, lo, hi)
        jlo, jhi = tile_band(lo, hi, rows)
        for j0 in range((jlo // TK) * TK, jhi, TK):
            for ii in range(rows):
                i = i0 + ii
                js, je = max(lo[ii], j0), min(hi[ii], j0 + TK)
                n = je - js
                if n <= 0:
                    continue
                _pre(a, bT, x, yT, W, bi, i, js, n, pre)
                for kk in range(K):
                    activate(pre[kk, :n], act[kk, :n], code)
                _scores(act, W2, b2, n, s)
                for h in range(H):
                    srow, drow = s[h], ds[h]
                    st = stats[bi, h, i]
                    if (mode == 0 and st == ninf) or (mode == 1 and st == 0):
                        drow[:n] = zero
                        continue
                    _apply_mask(mask, srow, bi, h, i, js, n, use_mask)
                    hw = h if w.shape[1] > 1 else 0
                    wrow, dwrow = w[bi, hw, js:je], dw[c, bi, hw, js:je]
                    dot = do[bi, h, i]
                    D = dd[bi, h, i]
                    dp[:n] = zero
                    for e in range(dvd):                     # dP_j = dout_i . v_j
                        de, vrow = dot[e], vT[bi, h, e, js:je]
                        for jj in range(n):
                            dp[jj] += de * vrow[jj]
                    # one loop per mode (a branch inside would keep LLVM from vectorising it):
                    # gw = dL/dw_j, g = dL/ds_ij, srow <- the normalised weight P_ij
                    if mode == 0:
                        for jj in range(n):
                            ej = fexp(srow[jj] - st)     # 0 for a masked (-inf) logit
                            gw = ej * (dp[jj] - D)
                            srow[jj] = wrow[jj] * ej
                            drow[jj] = wrow[jj] * gw
                            dwrow[jj] += gw
                    else:
                        inv = one / st if mode == 1 else one
                        for jj in range(n):
                            sj = srow[jj]
                            keep = sj > ninf
                            gz = (dp[jj] - D) * inv if mode == 1 else dp[jj]
                            srow[jj] = wrow[jj] * sj * inv if keep else zero
                            drow[jj] = wrow[jj] * gz if keep else zero
                            dwrow[jj] += sj * gz if keep else zero
                    for e in range(dvd):                     # dv_j += P_ij dout_i
                        de, dvrow = dot[e], dvT[c, bi, h, e, js:je]
                        for jj in range(n):
                            dvrow[jj] += srow[jj] * de
                for h in range(H):
                    drow, tot = ds[h], zero
                    for jj in range(n):
                        tot += drow[jj]
                    db2[t, h] += tot
                    for kk in range(K):
                        arow, tot = act[kk], zero
                        for jj in range(n):
                            tot += drow[jj] * arow[jj]
                        dW2[t, h, kk] += tot
                for kk in range(K):                          # dpre = act'(pre) sum_h W2_hk dX^h
                    grow = act[kk]
                    grow[:n] = zero
                    for h in range(H):
                        cw, drow = W2[h, kk], ds[h]
                        for jj in range(n):
                            grow[jj] += cw * drow[jj]
                    scale_by_activation_grad(grow[:n], pre[kk, :n], code)
                    dbrow, tot = dbT[c, bi, kk, js:je], zero
                    for jj in range(n):
                        tot += grow[jj]
                        dbrow[jj] += grow[jj]
                    da[bi, i, kk] += tot
                for r in range(R):
                    xir, yrow, dyrow = x[bi, i, r], yT[bi, r, js:je], dyT[c, bi, r, js:je]
                    tr[:n] = zero
                    for kk in range(K):
                        cw, grow = W[kk, r], act[kk]
                        tot = zero
                        for jj in range(n):
                            tr[jj] += cw * grow[jj]
                            tot += grow[jj] * yrow[jj]
                        dW[t, kk, r] += xir * tot
                    tot = zero
                    for jj in range(n):
                        tot += tr[jj] * yrow[jj]
                        dyrow[jj] += tr[jj] * xir
                    dx[bi, i, r] += tot


@nb.njit(**JIT)
def _backward(first, step, n_tasks, a, bT, x, yT, W, W2, b2, vT, w, do, dd, stats, chunks, cfg, mask,
              grads):
    """Tasks first, first + step, ... of (b, query chunk)."""
    for t in range(first, n_tasks, step):
        _backward_chunk(a, bT, x, yT, W, W2, b2, vT, w, do, dd, stats, t // chunks, t % chunks, t,
                        chunks, cfg, mask, grads)


def _prepare(op, a, b, x, y, W, W2, b2, v, w, act, causal, mask, window, normalization, ranges):
    """Checked, padded kernel arguments shared by forward and backward."""
    (a, b, x, y, W, W2, b2, v, w), code, mode = check_mlp_arguments(op, a, b, x, y, W, W2, b2, v, w, act,
                                                                     normalization)
    B, N, K = a.shape
    M, R, H = b.shape[1], x.shape[2], W2.shape[0]
    use_mask = mask is not None
    mask4 = (broadcast4(op, "mask", mask, (B, H, N, M), bool) if use_mask
             else np.ones((1, 1, 1, 1), bool))
    tr = np.ascontiguousarray
    arrays = (a, tr(b.transpose(0, 2, 1)), x, tr(y.transpose(0, 2, 1)), W, W2, b2,
              tr(v.transpose(0, 1, 3, 2)), tr(w.reshape(B, 1 if w.ndim == 2 else H, M)))
    cfg = (N, M, code, bool(causal), window_of(op, window), mode, use_mask, ranges_of(op, ranges, N, M))
    return arrays, cfg, mask4, (B, N, M, K, R, H, v.shape[3], w.shape)


def mlp_forward(a, b, x, y, W, W2, b2, v, w, act="gelu_tanh", causal=False, mask=None, window=None,
                normalization="softmax", ranges=None):
    """Fused MLP-kernel transform forward (module docstring). Returns (out (B, H, N, dv), stats (B, H, N))."""
    arrays, cfg, mask4, (B, N, M, _, _, H, dvd, _) = _prepare(
        "mlp_forward", a, b, x, y, W, W2, b2, v, w, act, causal, mask, window, normalization, ranges)
    dt = arrays[0].dtype
    out = np.zeros((B, H, N, dvd), dt)
    stats = np.full((B, H, N), -np.inf if cfg[5] == 0 else 0, dt)
    if N and M:
        run_tasks(_forward, B * -(-N // TQ), *arrays, cfg, mask4, out, stats, family="mlp forward")
    return out, stats


def mlp_backward(a, b, x, y, W, W2, b2, v, w, out, stats, dout, act="gelu_tanh", causal=False,
                 mask=None, window=None, normalization="softmax", ranges=None):
    """Gradients of mlp_forward: a dict with keys a, b, x, y, W, W2, b2, v, w (each its input's shape)."""
    op = "mlp_backward"
    arrays, cfg, mask4, (B, N, M, K, R, H, dvd, wshape) = _prepare(
        op, a, b, x, y, W, W2, b2, v, w, act, causal, mask, window, normalization, ranges)
    dt = arrays[0].dtype
    out, stats, dout = check_saved(op, out, stats, dout, (B, H, N, dvd), dt)
    chunks = chunks_for(B, -(-N // TQ))
    tasks = B * chunks
    da, dx = np.zeros((B, N, K), dt), np.zeros((B, N, R), dt)
    dbT, dyT = np.zeros((chunks, B, K, M), dt), np.zeros((chunks, B, R, M), dt)
    dvT = np.zeros((chunks, B, H, dvd, M), dt)
    dw = np.zeros((chunks,) + arrays[-1].shape, dt)
    dW, dW2, db2 = np.zeros((tasks, K, R), dt), np.zeros((tasks, H, K), dt), np.zeros((tasks, H), dt)
    if N and M:
        dd = np.zeros((B, H, N), dt) if cfg[5] == 2 else np.einsum("bhnc,bhnc->bhn", dout, out)
        run_tasks(_backward, tasks, *arrays, dout, np.ascontiguousarray(dd), stats, chunks, cfg, mask4,
                  (da, dx, dbT, dyT, dvT, dw, dW, dW2, db2), family="mlp backward")
    return {"a": da, "b": dbT.sum(0).transpose(0, 2, 1).copy(), "x": dx,
            "y": dyT.sum(0).transpose(0, 2, 1).copy(), "W": dW.sum(0), "W2": dW2.sum(0),
            "b2": db2.sum(0), "v": dvT.sum(0).transpose(0, 1, 3, 2).copy(),
            "w": dw.sum(0).reshape(wshape).copy()}
