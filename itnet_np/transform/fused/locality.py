"""Neighbour lists in a cache-friendly order: the points sorted by grid cell before the kernels run.

The neighbour-list kernels gather k_j, v_j (the MLP kernel: b_j, y_j, v_j) of every listed source.
On a point cloud stored in random order these reads jump over the whole (M, d) arrays; at N = 65,536
(2-D, 32 neighbours, d = 64, float32) the attention kernels ran 4-5x slower than on the same cloud
sorted by cell (forward 1.56 -> 0.36 s, backward 4.3 -> 0.8 s, measured on a loaded 2-core machine).

So the plan evaluates the call on queries and sources permuted into lexicographic order of their
cells floor((p - p_min) / c), c the support's reach (radius, else window), with the lists relabelled
(O(nnz)) and the user's mask permuted, then puts the output rows back. The integral does not depend
on how the points are numbered; the permutations are differentiable gathers (their gradients
scatter back), so values and gradients are unchanged. Shared positions only (one order for the
batch); positions per batch item keep their order.
"""
import numpy as np

from ...autograd import ops
from ..kernels.base import Projection
from ..neighbours import Neighbours
from ..planner import TransformCall


def cell_order(points, cell):
    """perm (N,): points (N, D) sorted by cell floor((p - p_min) / cell), first coordinate first."""
    if points.shape[0] < 2:
        return np.arange(points.shape[0])
    low = points.min(0)
    cell = max(float(cell), float((points.max(0) - low).max()) / 2**20, 1e-300)   # at most 2^20 cells per axis
    cells = np.floor((points - low) / cell).astype(np.int64)
    return np.lexsort(cells.T[::-1])


def relabel(lists, q_order, s_order):
    """The lists (neighbours.Neighbours, one batch group) with row r = old row q_order[r] and each
    source j renamed to its place in s_order. O(nnz)."""
    ptr = lists.indptr[0]
    counts = np.diff(ptr)[q_order]
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    where = np.repeat(ptr[:-1][q_order] - indptr[:-1], counts) + np.arange(indptr[-1])   # old slots
    rename = np.empty_like(s_order)
    rename[s_order] = np.arange(s_order.size)
    return Neighbours(indptr[None], rename[lists.indices[where]], lists.m)


def applies(support, lists):
    """True when the call's points can be put in cell order (shared positions, one list group)."""
    return lists.batch == 1 and support.query_positions.shape[0] == 1 and support.source_positions.shape[0] == 1


def run_in_cell_order(call, lists, mask, run):
    """``run(permuted_call, lists', mask')`` -> (B, H, N, dv) with the rows put back (module docstring)."""
    sup = call.support
    pq, ps = sup.query_positions[0], sup.source_positions[0]
    reach = sup.support.radius if sup.support.radius is not None else sup.support.window
    q_order = cell_order(pq, reach)
    s_order = q_order if ps is pq else cell_order(ps, reach)
    proj = Projection({k: ops.take(v, q_order, axis=1) for k, v in call.proj.query.items()},
                      {k: ops.take(v, s_order, axis=1) for k, v in call.proj.source.items()}, call.proj.extra)
    weights = None if call.weights is None else ops.take(call.weights, s_order, axis=2)
    moved = TransformCall(call.kernel, proj, ops.take(call.values, s_order, axis=2), weights, sup,
                          call.normalization, call.score_bias)
    if mask is not None:
        mask = np.take(np.take(mask, q_order, axis=-2) if mask.shape[-2] > 1 else mask, s_order, axis=-1)
    out = run(moved, relabel(lists, q_order, s_order), mask)
    back = np.empty_like(q_order)
    back[q_order] = np.arange(q_order.size)
    return ops.take(out, back, axis=2)
