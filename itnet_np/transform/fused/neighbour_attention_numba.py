"""Fused attention over CSR neighbour lists (Numba, CPU): the support is a list of sources per query
(pair_lists.PairLists, e.g. a radius ball on a point cloud from a k-d tree), so the work and the
memory are O(nnz d), with nnz = N k for k neighbours per query, and nothing of size N x M exists.

Inputs q (B, H, N, d), k (B, H, M, d), v (B, H, M, dv), one float dtype; per head, query i and
its listed sources j in S(i):

    x_ij = scale * q_i . k_j
    'softmax':  y_i = sum_{j in S(i)} exp(x_ij) v_j / sum_{j in S(i)} exp(x_ij);  stats_i = logsumexp_j x_ij
    'sum':      y_i = sum_{j in S(i)} x_ij v_j / Z_i,  Z_i = sum_{j in S(i)} x_ij;  stats_i = Z_i
    'none':     y_i = sum_{j in S(i)} x_ij v_j;                                   stats_i = Z_i

An empty S(i) gives y_i = 0 and stats_i = -inf ('softmax') or 0; 'sum' gives y_i = 0 where Z_i = 0
(the conventions of attention_numba.py and of the dense reference).

Forward: one task per (b, h, block of RB query rows); each row walks its list once with the
online softmax (running max m, running sum l, accumulator rescaled by exp(m_old - m_new) when the
max grows) and saves stats_i for the backward.

Backward (FlashAttention-2 split, recomputing x_ij; D_i = dout_i . y_i; P, dX from
pair_lists.pair_terms): dq_i = scale sum_{j in S(i)} dX_ij k_j by rows over S, then
dk_j = scale sum_{i in T(j)} dX_ij q_i and dv_j = sum_{i in T(j)} P_ij dout_i by source columns
over the transposed lists T (built once per backward, O(nnz)). Each task owns the rows it writes:
no atomics, no per-thread copies, deterministic.
"""
import numba as nb
import numpy as np

from ..._numba import JIT, fexp, run_tasks
from ._arguments import check_attention_arguments, check_saved
from .pair_lists import group, pair_terms, row_is_empty

RB = 32   # query (or source) rows per task

__all__ = ["neighbour_attention_backward", "neighbour_attention_forward"]


@nb.njit(inline="always", **JIT)
def _dot(a, b):
    s = a[0] * 0
    for c in range(a.shape[0]):
        s += a[c] * b[c]
    return s


@nb.njit(**JIT)
def _forward(first, step, n_tasks, q, k, v, scale, mode, indptr, indices, out, stats):
    """Tasks first, first + step, ... of (b, h, query block)."""
    H, N, dv = q.shape[1], q.shape[2], v.shape[3]
    blocks = -(-N // RB)
    acc = np.empty(dv, q.dtype)
    ninf = np.full(1, -np.inf, q.dtype)[0]
    zero, one = scale * 0, scale * 0 + 1
    for t in range(first, n_tasks, step):
        b, h, i0 = t // (H * blocks), (t // blocks) % H, (t % blocks) * RB
        ptr = group(indptr, b, h)
        kb, vb = k[b, h], v[b, h]
        for i in range(i0, min(i0 + RB, N)):
            qi = q[b, h, i]
            m, l = ninf, zero
            acc[:] = 0
            for p in range(ptr[i], ptr[i + 1]):
                j = indices[p]
                x = _dot(qi, kb[j]) * scale
                if mode == 0:
                    if x > m:                        # the max grows: rescale what was summed
                        alpha = fexp(m - x)
                        m = x
                        l *= alpha
                        for c in range(dv):
                            acc[c] *= alpha
                    x = fexp(x - m)
                l += x
                vj = vb[j]
                for c in range(dv):
                    acc[c] += x * vj[c]
            if mode == 0:
                good = l != 0                        # NaN propagates
                stats[b, h, i] = m + np.log(l) if good else ninf
            else:
                good = mode == 2 or l != 0
                stats[b, h, i] = l
            inv = (one / l if mode != 2 else one) if good else zero
            for c in range(dv):
                out[b, h, i, c] = acc[c] * inv


@nb.njit(**JIT)
def _backward_rows(first, step, n_tasks, q, k, v, do, dd, stats, scale, mode, indptr, indices, dq):
    """dq by query rows: tasks (b, h, query block)."""
    H, N, d = q.shape[1], q.shape[2], q.shape[3]
    blocks = -(-N // RB)
    one = scale * 0 + 1
    for t in range(first, n_tasks, step):
        b, h, i0 = t // (H * blocks), (t // blocks) % H, (t % blocks) * RB
        ptr = group(indptr, b, h)
        for i in range(i0, min(i0 + RB, N)):
            st = stats[b, h, i]
            if row_is_empty(st, mode):
                continue
            qi, doi, dqi = q[b, h, i], do[b, h, i], dq[b, h, i]
            for p in range(ptr[i], ptr[i + 1]):
                j = indices[p]
                kj = k[b, h, j]
                _, dx, _ = pair_terms(_dot(qi, kj) * scale, _dot(doi, v[b, h, j]), st, dd[b, h, i], one, mode)
                dx *= scale
                for c in range(d):
                    dqi[c] += dx * kj[c]


@nb.njit(**JIT)
def _backward_cols(first, step, n_tasks, q, k, v, do, dd, stats, scale, mode, tindptr, tindices, dk, dv):
    """dk, dv by source columns over the transposed lists: tasks (b, h, source block)."""
    H, M, d, dvd = k.shape[1], k.shape[2], k.shape[3], v.shape[3]
    blocks = -(-M // RB)
    one = scale * 0 + 1
    for t in range(first, n_tasks, step):
        b, h, j0 = t // (H * blocks), (t // blocks) % H, (t % blocks) * RB
        ptr = group(tindptr, b, h)
        for j in range(j0, min(j0 + RB, M)):
            kj, vj, dkj, dvj = k[b, h, j], v[b, h, j], dk[b, h, j], dv[b, h, j]
            for p in range(ptr[j], ptr[j + 1]):
                i = tindices[p]
                st = stats[b, h, i]
                if row_is_empty(st, mode):
                    continue
                qi, doi = q[b, h, i], do[b, h, i]
                pij, dx, _ = pair_terms(_dot(qi, kj) * scale, _dot(doi, vj), st, dd[b, h, i], one, mode)
                dx *= scale
                for c in range(d):
                    dkj[c] += dx * qi[c]
                for c in range(dvd):
                    dvj[c] += pij * doi[c]


def _prepare(op, q, k, v, scale, lists, normalization):
    """Checked kernel arguments shared by forward and backward."""
    q, k, v, scale, mode = check_attention_arguments(op, q, k, v, scale, normalization)
    B, H, N, _ = q.shape
    lists.check(op, B, H, N, k.shape[2])
    return q, k, v, scale, mode


def neighbour_attention_forward(q, k, v, scale, lists, normalization="softmax"):
    """Attention of each query over its listed sources (module docstring); ``lists`` a
    pair_lists.PairLists for these N, M. Returns (out (B, H, N, dv), stats (B, H, N))."""
    q, k, v, scale, mode = _prepare("neighbour_attention_forward", q, k, v, scale, lists, normalization)
    B, H, N, _ = q.shape
    out = np.zeros((B, H, N, v.shape[3]), q.dtype)
    stats = np.full((B, H, N), -np.inf if mode == 0 else 0, q.dtype)
    if N and k.shape[2]:
        run_tasks(_forward, B * H * -(-N // RB), q, k, v, scale, mode, lists.indptr, lists.indices, out, stats,
                  family="neighbour attention forward")
    return out, stats


def neighbour_attention_backward(q, k, v, out, stats, dout, scale, lists, normalization="softmax",
                                 transposed=None):
    """Gradients (dq, dk, dv) of neighbour_attention_forward. ``transposed``: lists.transposed() if
    the caller has it already (built here otherwise, once)."""
    op = "neighbour_attention_backward"
    q, k, v, scale, mode = _prepare(op, q, k, v, scale, lists, normalization)
    B, H, N, _ = q.shape
    M, dvd = v.shape[2], v.shape[3]
    out, stats, dout = check_saved(op, out, stats, dout, (B, H, N, dvd), q.dtype)
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    if N and M:
        dd = np.zeros((B, H, N), q.dtype) if mode == 2 else np.einsum("bhnc,bhnc->bhn", dout, out)
        t = lists.transposed() if transposed is None else transposed
        run_tasks(_backward_rows, B * H * -(-N // RB), q, k, v, dout, dd, stats, scale, mode, lists.indptr,
                  lists.indices, dq, family="neighbour attention backward")
        run_tasks(_backward_cols, B * H * -(-M // RB), q, k, v, dout, dd, stats, scale, mode, t.indptr,
                  t.indices, dk, dv, family="neighbour attention backward")
    return dq, dk, dv
