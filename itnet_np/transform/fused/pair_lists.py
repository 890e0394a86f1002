"""CSR pair lists, the support as the neighbour-list kernels take it, and the per-pair rules they share.

For batch item b and head h the support is a list of sources per query row:

    S_bh(i) = indices[indptr[b', h', i] : indptr[b', h', i + 1]],   b' = b if Bc > 1 else 0, h' likewise

``indptr`` (Bc, Hc, N + 1) int64 holds offsets into one flat ``indices`` (nnz,) int64 (group (b', h')
starts where the previous one ends; rows ascending). Bc = 1 when every batch item shares the
lists (positions shared by the batch), Hc = 1 unless a per-head mask made them differ per head.
:meth:`PairLists.transposed` gives the same pairs by source, T_bh(j) = {i : j in S_bh(i)}, with
rows ascending: the backward walks it for the source-side gradients (dk, dv, ...), so that every
task owns the rows it writes (no atomics). Both are O(nnz) memory; nothing of size N x M exists.

Built from a radius support's neighbour lists (support.SupportPlan.neighbours(), neighbours.py)
with :func:`pair_lists`, which also ANDs in a bool mask read at the listed pairs only (the user's
mask, softmax's w_j = 0 exclusions).

:func:`pair_terms` is the backward's per-pair rule of both kernels (attention and MLP), with
dP_ij = dout_i . v_j, D_i = dout_i . y_i, the row statistic st_i (log-sum-exp / row sum Z_i) and
the quadrature weight w_j (1 for attention):

    'softmax':  e = exp(s - st_i), u = e (dP - D_i):   P = w e,      ds = w u,  dw = u
    'sum':      u = (dP - D_i) / Z_i:                  P = w s / Z,  ds = w u,  dw = s u
    'none':     u = dP:                                P = w s,      ds = w u,  dw = s u

P is the normalised weight A_ij (dv_j = sum_i P_ij dout_i), ds = dL/ds_ij, dw = dL/dw_j.
"""
from typing import NamedTuple

import numba as nb
import numpy as np

from ..._numba import JIT, fexp
from ...errors import ShapeError


class PairLists(NamedTuple):
    """CSR lists of (query, source) pairs per (batch, head) group (see the module docstring);
    ``n``, ``m``: the query and source counts (the transposed lists swap them)."""

    indptr: np.ndarray
    indices: np.ndarray
    n: int
    m: int

    @property
    def nnz(self):
        return int(self.indices.size)

    def transposed(self):
        """The lists by source: indptr (Bc, Hc, M + 1), indices = the query rows, ascending. O(nnz)."""
        from scipy.sparse import csr_matrix

        groups = self.indptr.reshape(-1, self.n + 1)
        tindptr = np.zeros((groups.shape[0], self.m + 1), np.int64)
        tindices = np.empty_like(self.indices)
        for g, ptr in enumerate(groups):
            start, stop = int(ptr[0]), int(ptr[-1])
            # CSR -> CSC is a counting sort in scipy's C++ (O(nnz); 4x faster than a stable argsort)
            csc = csr_matrix((np.ones(stop - start, np.int8), self.indices[start:stop], ptr - start),
                             shape=(self.n, self.m)).tocsc()
            csc.sort_indices()                                         # rows ascending per source
            tindices[start:stop] = csc.indices
            tindptr[g] = start + csc.indptr
        return PairLists(tindptr.reshape(self.indptr.shape[:2] + (self.m + 1,)), tindices, self.m, self.n)

    def check(self, op, batch, heads, n, m):
        """ShapeError unless these lists fit B = batch, H = heads, N = n, M = m."""
        bc, hc = self.indptr.shape[:2]
        if self.indptr.ndim != 3 or bc not in (1, batch) or hc not in (1, heads) \
                or self.indptr.shape[2] != n + 1 or (self.n, self.m) != (n, m):
            raise ShapeError(f"{op}: lists must have indptr (1|{batch}, 1|{heads}, {n + 1}) for N = {n}, "
                             f"M = {m}; got indptr {self.indptr.shape}, N = {self.n}, M = {self.m}")
        if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= m):
            raise ShapeError(f"{op}: list indices must lie in [0, {m})")


def pair_lists(neighbours, *masks):
    """:class:`PairLists` from ``neighbours.Neighbours`` (indptr (B', N + 1), global offsets), with
    each given mask (raw bool, broadcastable to (B, H, N, M) with each dim 1 or full, e.g. the user's
    (1|B, N, M) or (1|B, H, N, M), softmax's (B|1, H|1, 1, M) w_j != 0; None = keep) ANDed in at the
    listed pairs only: O(Hc nnz), no N x M array."""
    indptr, indices, m = neighbours
    n = indptr.shape[1] - 1
    masks = [np.asarray(x).reshape((1,) * (4 - np.ndim(x)) + np.shape(x)) for x in masks if x is not None]
    if not masks:
        return PairLists(np.ascontiguousarray(indptr[:, None]), indices, n, m)
    bc = max([indptr.shape[0]] + [x.shape[0] for x in masks])
    hc = max(x.shape[1] for x in masks)
    out_ptr = np.zeros((bc, hc, n + 1), np.int64)
    chunks, total = [], 0
    for b in range(bc):
        ptr = indptr[min(b, indptr.shape[0] - 1)]
        cols = indices[ptr[0]:ptr[-1]]
        rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(ptr))
        for h in range(hc):
            keep = np.ones(cols.shape, bool)
            for x in masks:
                plane = x[min(b, x.shape[0] - 1), min(h, x.shape[1] - 1)]
                keep &= plane[rows if plane.shape[0] > 1 else 0, cols if plane.shape[1] > 1 else 0]
            out_ptr[b, h, 0] = total
            out_ptr[b, h, 1:] = total + np.cumsum(np.bincount(rows[keep], minlength=n))
            total = int(out_ptr[b, h, -1])
            chunks.append(cols[keep])
    return PairLists(out_ptr, np.concatenate(chunks) if chunks else np.zeros(0, np.int64), n, m)


# --------------------------------------------------------------------------- shared Numba helpers

@nb.njit(inline="always", **JIT)
def group(indptr, b, h):
    """The (N + 1,) row pointer of batch item b, head h (size-1 group axes broadcast)."""
    return indptr[b if indptr.shape[0] > 1 else 0, h if indptr.shape[1] > 1 else 0]


@nb.njit(inline="always", **JIT)
def row_is_empty(st, mode):
    """True for a row whose output is 0 with gradient 0: softmax over an empty set (st = -inf),
    'sum' with Z = 0."""
    return (mode == 0 and st == -np.inf) or (mode == 1 and st == 0)


@nb.njit(inline="always", **JIT)
def pair_terms(s, dp, st, dd, w, mode):
    """(P, ds, dw) of one pair (module docstring); s, dp: the pair's score and dout_i . v_j."""
    if mode == 0:
        e = fexp(s - st)
        u = e * (dp - dd)
        return w * e, w * u, u
    if mode == 1:
        u = (dp - dd) / st
        return w * s / st, w * u, s * u
    return w * s, w * dp, s * dp
