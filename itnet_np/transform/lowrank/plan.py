"""The 'lowrank' backend (planner.py contract): a LowRankKernel's transform in O((N + M) r d).

With s^h_ij = phi^h_i . psi^h_j, u_j = w_j v_j and per-row source ranges [lo_i, hi_i) (the support):

    'none':  y_i = sum_{lo_i <= j < hi_i} s_ij u_j = phi_i . (P_hi_i - P_lo_i),   P_l = sum_{j < l} psi_j u_j^T
    'sum':   the same with u_j = [w_j v_j | w_j]: numerator and Z_i = sum_j w_j s_ij in one pass, then
             y_i = numerator / Z_i (normalization.ratio_or_zero: 0 where Z_i = 0)

On the full support P_hi - P_lo is the single sum S = sum_j psi_j u_j^T (no prefix array); on a band
it is the prefix-sum (causal linear attention) form, with memory O(M r d) per batch item and head.
Everything is engine ops (cumsum, getitem, einsum), so gradients of every order flow as in the dense
path, and the result equals the dense reference up to rounding (tests/transform/test_lowrank_plan.py).

Declined: other kernels, 'softmax' (e^(phi . psi) is not rank r: use 'sum' with positive feature
maps), a score bias, a user mask, supports without non-decreasing per-row ranges, sampled calls.
'auto' takes it when M > 2 r (fewer flops than forming the scores) and N M >= MIN_PAIRS.
"""
import numpy as np

from ...autograd import ops
from ...autograd.ops._util import raw
from ..kernels.lowrank import LowRankKernel
from ..montecarlo.plan import support_ranges
from ..normalization import ratio_or_zero
from ..planner import Decline, Plan

NAME = "lowrank"
MIN_PAIRS = 64 * 64


def plan(call):
    """A Plan evaluating the factorised transform, or a Decline (module docstring)."""
    kernel = call.kernel
    if not isinstance(kernel, LowRankKernel):
        return Decline(NAME, f"{type(kernel).__name__} (factorised: LowRankKernel)")
    if call.integration is not None:
        return Decline(NAME, "a sampled call (the montecarlo backend evaluates it)")
    if call.normalization == "softmax":
        return Decline(NAME, "softmax: e^(phi . psi) has no rank-r form; use normalization='sum' with "
                             "positive feature maps (linear attention)")
    if call.score_bias is not None:
        return Decline(NAME, "a score_bias (an N x M table)")
    ranges = support_ranges(call.support)
    if ranges is None or not (np.all(np.diff(ranges[0]) >= 0) and np.all(np.diff(ranges[1]) >= 0)):
        return Decline(NAME, "a support without non-decreasing per-row source ranges (a user mask, a local "
                             "support in D > 1, unsorted or per-batch positions)")
    r, _n, m = kernel.feature_dim, call.support.n, call.support.m
    pays = m > 2 * r and call.pairs >= MIN_PAIRS
    why = f"M = {m} <= 2 r = {2 * r} or N M = {call.pairs} < {MIN_PAIRS}: forming the scores is cheaper"
    full = bool(np.all(ranges[0] == 0) and np.all(ranges[1] == m))
    note = f"rank-{r} factorised sums, " + ("one sum over the sources" if full else "prefix sums over the support")
    return Plan(NAME, lambda: factorised(call, None if full else ranges), note, pays, why)


def factorised(call, ranges):
    """(B, H, N, d) from phi (B, N, H, r), psi (B, M, H, r), values (B, H, M, d), weights (module docstring)."""
    phi = ops.transpose(call.proj.query["phi"], (0, 2, 1, 3))
    psi = ops.transpose(call.proj.source["psi"], (0, 2, 1, 3))
    u, w = call.values, call.weights
    B, H, M = u.shape[0], u.shape[1], u.shape[2]
    if w is not None:
        u = u * ops.reshape(w, tuple(w.shape) + (1,))
    if call.normalization == "sum":
        column = np.ones((B, H, M, 1), raw(u).dtype) if w is None else \
            ops.broadcast_to(ops.reshape(w, tuple(w.shape) + (1,)), (B, H, M, 1))
        u = ops.concatenate([u, column], axis=-1)
    if ranges is None:
        out = ops.einsum("bhnr,bhrd->bhnd", phi, ops.einsum("bhmr,bhmd->bhrd", psi, u))
    else:
        lo, hi = ranges
        terms = ops.einsum("bhmr,bhmd->bhmrd", psi, u)
        zero = np.zeros(tuple(terms.shape[:2]) + (1,) + tuple(terms.shape[3:]), raw(u).dtype)
        P = ops.concatenate([zero, ops.cumsum(terms, axis=2)], axis=2)
        window = ops.getitem(P, (slice(None), slice(None), hi)) - ops.getitem(P, (slice(None), slice(None), lo))
        out = ops.einsum("bhnr,bhnrd->bhnd", phi, window)
    if call.normalization == "sum":
        out = ratio_or_zero(out[..., :-1], out[..., -1:])
    return out
