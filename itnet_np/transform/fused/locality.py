"""Neighbour lists in a cache-friendly order: the points sorted by grid cell before the kernels run.

The neighbour-list kernels gather k_j, v_j (the MLP kernel: b_j, y_j, v_j) of every listed source.
On a point cloud stored in random order these reads jump over the whole (M, d) arrays; at N = 65,536
(2-D, 32 neighbours, d = 64, float32) the attention kernels ran 4-5x slower than on the same cloud
sorted by cell (forward 1.56 -> 0.36 s, backward 4.3 -> 0.8 s, measured on a loaded 2-core machine).

So the plan evaluates the call on queries and sources permuted into lexicographic order of their
cells floor((p - p_min) / c), c the support's reach (radius, else window), with the lists relabelled
(O(nnz)) and the user's mask permuted, then puts the output rows back. The integral does not depend
on how the points are numbered; the permutations are differentiable gathers (their gradients
scatter back), so values and gradients are unchanged. One order for the batch when the positions
are shared, one per batch item otherwise.
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


def relabel(lists, q_orders, s_orders):
    """The lists (neighbours.Neighbours, G batch groups; orders (1|G, N) and (1|G, M)) with row r of
    group g = old row q_orders[g, r] and each source j renamed to its place in s_orders[g]. O(nnz)."""
    indptr, indices = np.empty_like(lists.indptr), np.empty_like(lists.indices)
    for g, ptr in enumerate(lists.indptr):
        q_order, s_order = q_orders[min(g, len(q_orders) - 1)], s_orders[min(g, len(s_orders) - 1)]
        counts = np.diff(ptr)[q_order]
        new = ptr[0] + np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        where = np.repeat(ptr[:-1][q_order] - new[:-1], counts) + np.arange(new[0], new[-1])   # old slots
        rename = np.empty_like(s_order)
        rename[s_order] = np.arange(s_order.size)
        indices[new[0]:new[-1]] = rename[lists.indices[where]]
        indptr[g] = new
    return Neighbours(indptr, indices, lists.m)


def _orders(positions, groups, reach):
    """(1|G, N) cell orders of positions (1|B, N, D), one per group when they differ per item."""
    return np.stack([cell_order(positions[g], reach) for g in range(min(positions.shape[0], groups))])


def _gather(a, orders, axis):
    """a (1|B, ...) with its ``axis`` permuted by orders (1|G, L): one order for all, or one per item."""
    if a is None:
        return None
    if orders.shape[0] == 1:
        return ops.take(a, orders[0], axis=axis)
    shape = [1] * np.ndim(a)
    shape[0], shape[axis] = orders.shape
    return ops.take_along_axis(a, orders.reshape(shape), axis=axis)


def _gather_raw(a, orders, axis):
    shape = [1] * a.ndim
    shape[0], shape[axis] = orders.shape
    return np.take_along_axis(a, orders.reshape(shape), axis=axis)


def run_in_cell_order(call, lists, mask, run):
    """``run(permuted_call, lists', mask')`` -> (B, H, N, dv) with the rows put back (module docstring)."""
    sup = call.support
    pq, ps = sup.query_positions, sup.source_positions
    reach = sup.support.radius if sup.support.radius is not None else sup.support.window
    q_orders = _orders(pq, lists.batch, reach)
    s_orders = q_orders if ps is pq else _orders(ps, lists.batch, reach)
    proj = Projection({k: _gather(v, q_orders, 1) for k, v in call.proj.query.items()},
                      {k: _gather(v, s_orders, 1) for k, v in call.proj.source.items()}, call.proj.extra)
    moved = TransformCall(call.kernel, proj, _gather(call.values, s_orders, 2), _gather(call.weights, s_orders, 2),
                          sup, call.normalization, call.score_bias)
    if mask is not None:
        mask = _gather_raw(mask, q_orders, 2) if mask.shape[2] > 1 else mask
        mask = _gather_raw(mask, s_orders, 3)
    out = run(moved, relabel(lists, q_orders, s_orders), mask)
    back = np.empty_like(q_orders)
    np.put_along_axis(back, q_orders, np.arange(q_orders.shape[1])[None], axis=1)
    return _gather(out, back, 2)
