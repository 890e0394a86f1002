"""Radius neighbour lists: the support ||p_i - p_j||_2 <= r of a point cloud as CSR, not as N x M.

    S(i) = {j : ||p_j - p_i||_2 <= r} = indices[indptr[b, i] : indptr[b, i + 1]]   (sorted ascending)

built per batch item with a k-d tree over the sources (scipy.spatial.cKDTree): O((N + M) log M)
time and O(N k) memory for k neighbours per query on average, as neural-operator libraries build
their graphs. ``indptr`` (B', N + 1) holds offsets into the one flat ``indices`` array (all batch
items in order; row b starts where row b - 1 ends), B' = max(B_query, B_source) (1 when both position sets are shared by the batch).
CPU (NumPy) positions only.
"""
from typing import NamedTuple

import numpy as np


class Neighbours(NamedTuple):
    """CSR neighbour lists (see the module docstring)."""

    indptr: np.ndarray
    indices: np.ndarray
    m: int

    @property
    def batch(self):
        return self.indptr.shape[0]

    def pairs(self):
        """(b, i, j) int64 arrays of every listed pair, O(nnz)."""
        counts = np.diff(self.indptr, axis=1)                            # (B', N)
        b, i = np.nonzero(counts)
        reps = counts[b, i]
        return np.repeat(b, reps), np.repeat(i, reps), self.indices

    def select(self, keep):
        """The lists with only the pairs where ``keep`` (bool, one entry per listed pair) holds."""
        b, i, _ = self.pairs()
        n = self.indptr.shape[1] - 1
        counts = np.bincount(b[keep] * n + i[keep], minlength=self.batch * n).reshape(self.batch, n)
        starts = np.concatenate([[0], np.cumsum(counts.reshape(-1))]).astype(np.int64)   # (B' N + 1)
        indptr = starts[np.arange(self.batch)[:, None] * n + np.arange(n + 1)]
        return Neighbours(indptr, self.indices[keep], self.m)

    def dense(self):
        """keep (B', N, M) bool: the lists materialised (for the dense reference only)."""
        b, i, j = self.pairs()
        keep = np.zeros((self.batch, self.indptr.shape[1] - 1, self.m), bool)
        keep[b, i, j] = True
        return keep


def radius_neighbours(query_positions, source_positions, radius):
    """Neighbours of each query within ``radius`` (closed ball) among the sources.

    query_positions (1|B, N, D), source_positions (1|B, M, D): finite NumPy arrays. Per batch item,
    two k-d trees find the candidate pairs as flat index arrays (no Python list per query), slightly
    beyond r so that no pair on the sphere is lost to the trees' rounding; the definition
    sum_d (p_jd - p_id)^2 <= r^2 then decides each candidate exactly as the dense support does.
    """
    from scipy.sparse import coo_matrix
    from scipy.spatial import cKDTree

    pq, ps = np.asarray(query_positions, np.float64), np.asarray(source_positions, np.float64)
    batch, n, m = max(pq.shape[0], ps.shape[0]), pq.shape[1], ps.shape[1]
    reach = np.nextafter(radius * (1 + 1e-9), np.inf)
    indptr = np.zeros((batch, n + 1), np.int64)
    chunks, total = [], 0
    trees = {}
    for b in range(batch):
        bq, bs = min(b, pq.shape[0] - 1), min(b, ps.shape[0] - 1)
        counts, j = np.zeros(n, np.int64), np.zeros(0, np.int64)
        if m and n:
            for side, k, pts in (("q", bq, pq), ("s", bs, ps)):
                if (side, k) not in trees:
                    trees[side, k] = cKDTree(pts[k])
            found = trees["q", bq].sparse_distance_matrix(trees["s", bs], reach, output_type="ndarray")
            i, j = found["i"].astype(np.int64), found["j"].astype(np.int64)
            delta = ps[bs, j] - pq[bq, i]
            inside = np.einsum("pd,pd->p", delta, delta) <= radius * radius
            rows = coo_matrix((np.ones(inside.sum(), np.int8), (i[inside], j[inside])), (n, m)).tocsr()
            rows.sort_indices()                                   # a counting sort by row, then by j
            counts, j = np.diff(rows.indptr), rows.indices.astype(np.int64)
        indptr[b, 0] = total
        indptr[b, 1:] = total + np.cumsum(counts)
        total = int(indptr[b, -1])
        chunks.append(j)
    indices = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
    return Neighbours(indptr, indices, m)
