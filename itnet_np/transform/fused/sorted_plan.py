"""1-D band supports on unsorted or per-batch positions: sort the sources, then per-row ranges.

A causal, strictly causal or window support on 1-D positions (without a radius: that one goes as
neighbour lists) keeps, for query i, the sources whose position lies in an interval around p_i:

    causal p_j <= p_i,   strictly causal p_j < p_i,   window |p_j - p_i| <= w

so once the sources are sorted by position, S(i) is a contiguous range [lo_i, hi_i) of them
(SupportPlan.row_ranges, by binary search). The integral sum_{j in S(i)} A_ij v_j does not depend on
the order of the sources, so a call whose sources are unsorted, or whose positions differ per batch
item, is evaluated as one call per batch item (one call for all when the positions are shared) with
the sources permuted into sorted order: their projections, values, quadrature weights and the
columns of the user's mask and score bias, gathered with differentiable ops (the gradients scatter
back through the permutation). Each such call has sorted, shared positions, so the 'numba' plan
runs it on row ranges; the outputs are concatenated over the batch. O(B (N + M) log M) besides the
kernels; nothing of size N x M is formed (a user's mask is permuted, as given).
"""
import numpy as np

from ...autograd import ops
from ..kernels.base import Projection
from ..planner import TransformCall


def sorts_into_ranges(support):
    """True when ``support`` (a SupportPlan) is a 1-D band support without a radius that has neither
    an index band nor row ranges as given (unsorted sources, positions per batch item) but finite
    positions, so that sorting the sources gives row ranges."""
    sup, pq, ps = support.support, support.query_positions, support.source_positions
    return (pq.shape[-1] == 1 and sup.radius is None and not sup.is_full and type(ps) is np.ndarray
            and type(pq) is np.ndarray and bool(np.isfinite(pq).all() and np.isfinite(ps).all())
            and support.index_band() is None and support.row_ranges() is None)


def _take(a, items, b, order, axis):
    """a[b] (kept as a batch of 1; a batch axis of size 1 is shared) with ``order`` on ``axis``."""
    if a is None:
        return None
    if items > 1 and a.shape[0] > 1:
        a = a[b:b + 1]
    return ops.take(a, order, axis=axis)


def _item(a, items, b):
    return a if items == 1 or a.shape[0] == 1 else a[b:b + 1]


def sorted_calls(call):
    """The calls (see the module docstring) whose outputs, concatenated on axis 0, give ``call``'s:
    one per batch item when positions differ per item, else one."""
    sup = call.support
    pq, ps = sup.query_positions, sup.source_positions
    items = max(pq.shape[0], ps.shape[0])
    calls = []
    for b in range(items):
        order = np.argsort(ps[min(b, ps.shape[0] - 1), :, 0], kind="stable")
        proj = Projection({k: _item(v, items, b) for k, v in call.proj.query.items()},
                          {k: _take(v, items, b, order, 1) for k, v in call.proj.source.items()},
                          call.proj.extra)
        mask = None if sup.mask is None else np.take(_item(sup.mask, items, b), order, axis=-1)
        plan = sup.support.plan(_item(pq, items, b), _take(ps, items, b, order, 1), mask)
        calls.append(TransformCall(call.kernel, proj, _take(call.values, items, b, order, 2),
                                   _take(call.weights, items, b, order, 2), plan, call.normalization,
                                   _take(call.score_bias, items, b, order, 3)))
    return calls


def run_sorted(call, run):
    """``call``'s output from ``run(sub_call)`` on each of :func:`sorted_calls`."""
    outs = [run(sub) for sub in sorted_calls(call)]
    return outs[0] if len(outs) == 1 else ops.concatenate(outs, axis=0)
