"""The fused MLP-kernel transform over CSR neighbour lists (Numba, CPU): the ITNet kernel evaluated
only at the listed pairs (pair_lists.PairLists, e.g. a radius ball on a point cloud), O(nnz (K (1 + R)
+ H K + H dv)) work and O(N + M) memory besides the lists; no (N, M) or (N, M, K) array.

The formula is mlp_numba.py's, with S(i) the listed sources of query i (one list for every head):

    pre_ijk = a_ik + b_jk + sum_r W_kr x_ir y_jr,   s^h_ij = sum_k W2_hk act(pre_ijk) + b2_h
    'none':     y^h_i = sum_j w_j s^h_ij v^h_j                                 stats = Z^h_i
    'sum':      y^h_i = sum_j w_j s^h_ij v^h_j / Z^h_i,  Z^h_i = sum_j w_j s^h_ij
    'softmax':  y^h_i = sum_j w_j exp(s^h_ij) v^h_j / sum_j w_j exp(s^h_ij)     stats = log sum_j w_j e^s

with a (B, N, K), b (B, M, K), x (B, N, R), y (B, M, R), W (K, R), W2 (H, K), b2 (H,), v (B, H, M, dv),
w (B, M) or (B, H, M) (w >= 0 for softmax). An empty row, or Z = 0 for 'sum', gives y = 0.

Forward: one task per (b, block of RB query rows); a row's list is walked in blocks of CH pairs
(pre and act of a block are CH rows of K contiguous values, one activation call per block), and all
heads share the block, with the online softmax per head.

Backward (recomputes the blocks; P, ds = dL/ds^h_ij, dw from pair_lists.pair_terms):
dpre_ijk = act'(pre_ijk) sum_h W2_hk ds^h_ij. By query rows: da_i = sum_j dpre_ij,
dx_ir = sum_j (dpre_ij W)_r y_jr and the weights dW_kr = sum dpre_ijk x_ir y_jr, dW2_hk = sum ds^h act_k,
db2_h = sum ds^h (partial sums per thread, added at the end). By source columns over the transposed
lists: db_j = sum_i dpre_ij, dy_jr = sum_i (dpre_ij W)_r x_ir, dv^h_j = sum_i P^h_ij dout^h_i,
dw_j = sum_i dw_ij. Each task owns the rows it writes: no atomics.
"""
import math

import numba as nb
import numpy as np

from ..._numba import JIT, fexp, run_tasks
from ._arguments import check_mlp_arguments, check_saved
from ._tiles import activate_row, scale_by_activation_grad
from .neighbour_attention_numba import _dot
from .pair_lists import group, pair_terms, row_is_empty

RB = 16   # query (or source) rows per task
CH = 32   # pairs per block

__all__ = ["neighbour_mlp_backward", "neighbour_mlp_forward"]


@nb.njit(**JIT)
def _block(a, b, x, y, WT, W2, b2, bi, rows, cols, cnt, code, pre, act, sc):
    """pre, act (CH, K) and sc (CH, H) = s^h of the pairs (rows[p], cols[p]), p < cnt (the rows
    past cnt keep finite stale values, so one activation call covers the block)."""
    K, R, H = a.shape[2], x.shape[2], b2.shape[0]
    for p in range(cnt):
        ai, bj, xi, yj = a[bi, rows[p]], b[bi, cols[p]], x[bi, rows[p]], y[bi, cols[p]]
        pr = pre[p]
        for kk in range(K):
            pr[kk] = ai[kk] + bj[kk]
        for r in range(R):
            c, wr = xi[r] * yj[r], WT[r]
            for kk in range(K):
                pr[kk] += c * wr[kk]
    act[:] = pre
    activate_row(act.reshape(-1), code)
    for p in range(cnt):
        for h in range(H):
            sc[p, h] = _dot(W2[h], act[p]) + b2[h]


@nb.njit(**JIT)
def _dpre(ds, W2, pre, cnt, code, dact):
    """dact (CH, K) <- act'(pre) sum_h W2_hk ds[p, h] (zero past cnt)."""
    H, K = W2.shape
    dact[:] = 0
    for p in range(cnt):
        for h in range(H):
            g, w2 = ds[p, h], W2[h]
            for kk in range(K):
                dact[p, kk] += g * w2[kk]
    scale_by_activation_grad(dact.reshape(-1), pre.reshape(-1), code)


@nb.njit(**JIT)
def _scratch(a, H):
    K = a.shape[2]
    return (np.zeros((CH, K), a.dtype), np.zeros((CH, K), a.dtype), np.zeros((CH, K), a.dtype),
            np.zeros((CH, H), a.dtype), np.zeros((CH, H), a.dtype), np.empty(CH, np.int64), np.empty(CH, np.int64))


@nb.njit(**JIT)
def _forward(first, step, n_tasks, a, b, x, y, WT, W2, b2, v, w, code, mode, indptr, indices, out, stats):
    """Tasks first, first + step, ... of (b, query block)."""
    N, H, dv = a.shape[1], b2.shape[0], v.shape[3]
    blocks = -(-N // RB)
    pre, act, _, sc, _, rows, cols = _scratch(a, H)
    m, l, acc = np.empty(H, a.dtype), np.empty(H, a.dtype), np.empty((H, dv), a.dtype)
    one = b2[0] * 0 + 1
    for t in range(first, n_tasks, step):
        bi, i0 = t // blocks, (t % blocks) * RB
        ptr = group(indptr, bi, 0)
        for i in range(i0, min(i0 + RB, N)):
            m[:] = -np.inf
            l[:] = 0
            acc[:] = 0
            rows[:] = i
            for p0 in range(ptr[i], ptr[i + 1], CH):
                cnt = min(CH, ptr[i + 1] - p0)
                cols[:cnt] = indices[p0:p0 + cnt]
                _block(a, b, x, y, WT, W2, b2, bi, rows, cols, cnt, code, pre, act, sc)
                for h in range(H):
                    wh, vh, acch = w[bi, h if w.shape[1] > 1 else 0], v[bi, h], acc[h]
                    shift = one * 0
                    if mode == 0:
                        mx = m[h]
                        for p in range(cnt):
                            s = sc[p, h]
                            mx = s if (s > mx) | math.isnan(s) else mx  # NaN sticks
                        alpha = fexp(m[h] - mx) if mx > m[h] else one    # 0 on the first block
                        m[h], shift = mx, mx
                        l[h] *= alpha
                        for c in range(dv):
                            acch[c] *= alpha
                    for p in range(cnt):
                        j = cols[p]
                        e = wh[j] * (fexp(sc[p, h] - shift) if mode == 0 else sc[p, h])
                        l[h] += e
                        vj = vh[j]
                        for c in range(dv):
                            acch[c] += e * vj[c]
            for h in range(H):
                if mode == 0:
                    good = l[h] != 0                 # NaN propagates
                    stats[bi, h, i] = m[h] + np.log(l[h]) if good else -np.inf
                else:
                    good = mode == 2 or l[h] != 0
                    stats[bi, h, i] = l[h]
                inv = (one / l[h] if mode != 2 else one) if good else one * 0
                for c in range(dv):
                    out[bi, h, i, c] = acc[h, c] * inv


@nb.njit(**JIT)
def _backward_rows(first, step, n_tasks, a, b, x, y, WT, W2, b2, v, w, do, dd, stats, code, mode, indptr,
                   indices, da, dx, dWT, dW2, db2):
    """Query-side gradients by rows; weight gradients into the partial sums of thread ``first``."""
    N, K, R, H = a.shape[1], a.shape[2], x.shape[2], b2.shape[0]
    blocks = -(-N // RB)
    pre, act, dact, sc, ds, rows, cols = _scratch(a, H)
    zero = np.zeros(1, a.dtype)[0]
    for t in range(first, n_tasks, step):
        bi, i0 = t // blocks, (t % blocks) * RB
        ptr = group(indptr, bi, 0)
        for i in range(i0, min(i0 + RB, N)):
            rows[:] = i
            dai, dxi, xi = da[bi, i], dx[bi, i], x[bi, i]
            for p0 in range(ptr[i], ptr[i + 1], CH):
                cnt = min(CH, ptr[i + 1] - p0)
                cols[:cnt] = indices[p0:p0 + cnt]
                _block(a, b, x, y, WT, W2, b2, bi, rows, cols, cnt, code, pre, act, sc)
                for h in range(H):
                    st, wh, doi = stats[bi, h, i], w[bi, h if w.shape[1] > 1 else 0], do[bi, h, i]
                    for p in range(cnt):
                        j = cols[p]
                        g = zero                        # (0 * st is NaN for st = -inf)
                        if not row_is_empty(st, mode):
                            _, g, _ = pair_terms(sc[p, h], _dot(doi, v[bi, h, j]), st, dd[bi, h, i], wh[j], mode)
                        ds[p, h] = g
                        db2[first, h] += g
                        for kk in range(K):
                            dW2[first, h, kk] += g * act[p, kk]
                _dpre(ds, W2, pre, cnt, code, dact)
                for p in range(cnt):
                    g, yj = dact[p], y[bi, cols[p]]
                    for kk in range(K):
                        dai[kk] += g[kk]
                    for r in range(R):
                        dxi[r] += _dot(g, WT[r]) * yj[r]
                        c = xi[r] * yj[r]
                        for kk in range(K):
                            dWT[first, r, kk] += g[kk] * c


@nb.njit(**JIT)
def _backward_cols(first, step, n_tasks, a, b, x, y, WT, W2, b2, v, w, do, dd, stats, code, mode, tindptr,
                   tindices, db, dy, dv, dw):
    """Source-side gradients by columns over the transposed lists."""
    M, K, R, H, dvd = b.shape[1], a.shape[2], x.shape[2], b2.shape[0], v.shape[3]
    blocks = -(-M // RB)
    pre, act, dact, sc, ds, rows, cols = _scratch(a, H)
    zero = np.zeros(1, a.dtype)[0]
    for t in range(first, n_tasks, step):
        bi, j0 = t // blocks, (t % blocks) * RB
        ptr = group(tindptr, bi, 0)
        for j in range(j0, min(j0 + RB, M)):
            cols[:] = j
            dbj, dyj = db[bi, j], dy[bi, j]
            for p0 in range(ptr[j], ptr[j + 1], CH):
                cnt = min(CH, ptr[j + 1] - p0)
                rows[:cnt] = tindices[p0:p0 + cnt]
                _block(a, b, x, y, WT, W2, b2, bi, rows, cols, cnt, code, pre, act, sc)
                for h in range(H):
                    hw = h if w.shape[1] > 1 else 0
                    wj, vj, dvj = w[bi, hw, j], v[bi, h, j], dv[bi, h, j]
                    for p in range(cnt):
                        i = rows[p]
                        st, doi = stats[bi, h, i], do[bi, h, i]
                        g = zero                        # (0 * st is NaN for st = -inf)
                        if not row_is_empty(st, mode):
                            pij, g, gw = pair_terms(sc[p, h], _dot(doi, vj), st, dd[bi, h, i], wj, mode)
                            dw[bi, hw, j] += gw
                            for c in range(dvd):
                                dvj[c] += pij * doi[c]
                        ds[p, h] = g
                _dpre(ds, W2, pre, cnt, code, dact)
                for p in range(cnt):
                    g, xi = dact[p], x[bi, rows[p]]
                    for kk in range(K):
                        dbj[kk] += g[kk]
                    for r in range(R):
                        dyj[r] += _dot(g, WT[r]) * xi[r]


def _prepare(op, a, b, x, y, W, W2, b2, v, w, act, lists, normalization):
    """Checked kernel arguments shared by forward and backward."""
    (a, b, x, y, W, W2, b2, v, w), code, mode = check_mlp_arguments(op, a, b, x, y, W, W2, b2, v, w, act,
                                                                     normalization)
    B, N, M = a.shape[0], a.shape[1], b.shape[1]
    lists.check(op, B, 1, N, M)
    arrays = (a, b, x, y, np.ascontiguousarray(W.T), W2, b2, v, w.reshape(B, -1, M))
    return arrays, code, mode


def neighbour_mlp_forward(a, b, x, y, W, W2, b2, v, w, lists, act="gelu_tanh", normalization="softmax"):
    """The MLP-kernel transform over ``lists`` (pair_lists.PairLists with one list per batch item or
    one for all: indptr (1|B, 1, N + 1)). Returns (out (B, H, N, dv), stats (B, H, N))."""
    arrays, code, mode = _prepare("neighbour_mlp_forward", a, b, x, y, W, W2, b2, v, w, act, lists,
                                  normalization)
    a, v = arrays[0], arrays[7]
    B, N = a.shape[:2]
    H, dv = v.shape[1], v.shape[3]
    out = np.zeros((B, H, N, dv), a.dtype)
    stats = np.full((B, H, N), -np.inf if mode == 0 else 0, a.dtype)
    if N and v.shape[2] and H:
        run_tasks(_forward, B * -(-N // RB), *arrays, code, mode, lists.indptr, lists.indices, out, stats,
                  family="neighbour mlp forward")
    return out, stats


def neighbour_mlp_backward(a, b, x, y, W, W2, b2, v, w, out, stats, dout, lists, act="gelu_tanh",
                           normalization="softmax", transposed=None):
    """Gradients of neighbour_mlp_forward: a dict with keys a, b, x, y, W, W2, b2, v, w (each its
    input's shape). ``transposed``: lists.transposed() if the caller has it (built here otherwise)."""
    op = "neighbour_mlp_backward"
    arrays, code, mode = _prepare(op, a, b, x, y, W, W2, b2, v, w, act, lists, normalization)
    a, b, x, y, _, W2, _, v, wr = arrays
    dt = a.dtype
    (B, N, K), M, R, H, dvd = a.shape, b.shape[1], x.shape[2], W2.shape[0], v.shape[3]
    out, stats, dout = check_saved(op, out, stats, dout, (B, H, N, dvd), dt)
    threads = max(1, min(nb.get_num_threads(), B * -(-N // RB)))
    grads = {"a": np.zeros_like(a), "x": np.zeros_like(x), "b": np.zeros_like(b), "y": np.zeros_like(y),
             "v": np.zeros_like(v), "w": np.zeros_like(wr)}
    dWT, dW2, db2 = np.zeros((threads, R, K), dt), np.zeros((threads, H, K), dt), np.zeros((threads, H), dt)
    if N and M and H:
        dd = np.zeros((B, H, N), dt) if mode == 2 else np.einsum("bhnc,bhnc->bhn", dout, out)
        t = lists.transposed() if transposed is None else transposed
        run_tasks(_backward_rows, B * -(-N // RB), *arrays, dout, dd, stats, code, mode, lists.indptr,
                  lists.indices, grads["a"], grads["x"], dWT, dW2, db2, family="neighbour mlp backward")
        run_tasks(_backward_cols, B * -(-M // RB), *arrays, dout, dd, stats, code, mode, t.indptr, t.indices,
                  grads["b"], grads["y"], grads["v"], grads["w"], family="neighbour mlp backward")
    grads.update(W=np.ascontiguousarray(dWT.sum(0).T), W2=dW2.sum(0), b2=db2.sum(0),
                 w=grads["w"].reshape(np.shape(w)))
    return grads
