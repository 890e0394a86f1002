"""The 'montecarlo' backend (planner.py contract): the planner sends it every call that asks to be
sampled (``call.integration`` set); it declines the rest, and says why.

Estimators (S draws per query tile, coefficients c_s from draws.py, so that sum_s c_s f(j_s) is an
unbiased estimate of sum_j f(j) over the tile's support):

    'none':     y_i = sum_s c_s w_js s_ij_s v_js                                   unbiased
    'sum':      y_i = sum_s c_s w_js s_ij_s v_js / sum_s c_s w_js s_ij_s           self-normalised
    'softmax':  y_i = sum_s c_s w_js e^s_ij_s v_js / sum_s c_s w_js e^s_ij_s       self-normalised (SNIS)

(sums over row i's draws inside its support). The self-normalised forms are ratios of two unbiased
estimates, so they are consistent but biased: with numerator and denominator means (N, Z), a delta
expansion gives E[y] - N / Z = (y Var[Z] - Cov[N, Z]) / (S Z^2) + O(S^-2), a bias of order 1/S
(its square, order 1/S^2, is below the variance, order 1/S, for large S). A row with no draw in its
support gives y = 0 (the fused kernels' empty-row convention).

Gradients: the draws are constants of the computation (detached proposals, no score-function term).
That keeps the gradient of 'none' unbiased: for a fixed proposal q, E_q[grad of sum_s f_theta(j_s) /
(S q(j_s))] = grad sum_j f_theta(j), whatever q is, so q may depend on the parameters as long as it
is not differentiated. The self-normalised gradients are the exact gradients of the consistent ratio.

Accepted: MLPKernel (activations the fused kernel runs) and DotProductKernel (no relative position
bias; softmax needs scale != 0 and weights > 0), NumPy arrays, supports that are index bands or
per-row source ranges (full, causal, strictly causal, window, 1-D radius on sorted positions).
Declined with the reason: exact calls, other kernels, a user mask, a score bias, other supports.
``control_variate=True`` goes to control.py (the low-rank control variate, 'none' and 'sum').
"""
import numpy as np

from ...autograd import ops
from ...autograd.ops._util import raw
from ..fused._tiles import ACTIVATIONS
from ..kernels.dot import DotProductKernel
from ..kernels.mlp import MLPKernel
from ..normalization import ratio_or_zero
from ..planner import Decline, Plan
from .draws import Draws
from .engine_ops import sampled_attention, sampled_mlp

NAME = "montecarlo"


def support_ranges(support):
    """(lo, hi) int64 (N,): each query's source range [lo_i, hi_i), from the index band or the
    descriptor's row ranges; None for supports that are neither (or carry a user mask)."""
    if support.mask is not None:
        return None
    n, m = support.n, support.m
    band = support.index_band()
    if band is None:
        ranges = support.row_ranges()
        return None if ranges is None else tuple(np.asarray(r, np.int64) for r in ranges)
    causal, window = band
    i = np.arange(n, dtype=np.int64)
    lo, hi = np.zeros(n, np.int64), np.full(n, m, np.int64)
    if causal:
        hi = np.minimum(i + 1, m)
    if window is not None:
        lo, hi = np.maximum(i - window, 0), np.minimum(hi, i + window + 1)
    return np.minimum(lo, m), np.maximum(hi, np.minimum(lo, m))


def plan(call):
    """A Plan running one sampled engine op, or a Decline (module docstring)."""
    sampling = getattr(call, "integration", None)
    if sampling is None:
        return Decline(NAME, "the call asks for exact evaluation (integration='exact', or the layer is "
                             "in eval mode)")
    if not call.on_numpy:
        return Decline(NAME, "arrays that are not NumPy arrays: the sampled kernels run on the CPU")
    if call.score_bias is not None:
        return Decline(NAME, "a score_bias (an N x M table; it cannot be sampled without forming it)")
    ranges = support_ranges(call.support)
    if ranges is None:
        return Decline(NAME, "a support that is neither an index band nor per-row source ranges (a user "
                             "mask, a local support in D > 1, unsorted or per-batch positions)")
    kernel, method = call.kernel, sampling.method
    if method.control_variate:
        from .control import plan_control_variate
        return plan_control_variate(call, ranges, sampling)
    if isinstance(kernel, MLPKernel):
        if kernel.activation_name not in ACTIVATIONS:
            return Decline(NAME, f"MLPKernel activation {kernel.activation_name or 'a callable'!r} (the "
                                 f"fused tiles run {sorted(ACTIVATIONS)})")
        run = _mlp
    elif isinstance(kernel, DotProductKernel):
        if kernel.position_bias is not None:
            return Decline(NAME, "DotProductKernel with a relative position bias (it reads indices, not "
                                 "the drawn sources)")
        if call.normalization == "softmax" and (kernel.scale == 0 or (
                call.weights is not None and not (raw(call.weights) > 0).all())):
            return Decline(NAME, "softmax with scale = 0 or quadrature weights that are not all > 0")
        run = _dot
    else:
        return Decline(NAME, f"{type(kernel).__name__} (sampled: MLPKernel, DotProductKernel)")
    note = (f"Monte Carlo: {method.samples} {method.proposal} draws per {method.tile}-query tile "
            f"({'unbiased' if call.normalization == 'none' else 'self-normalised'}), fused tiles on the draws")
    return Plan(NAME, lambda: run(call, ranges, sampling), note)


def _positions(support):
    """Raw (N, D), (M, D) positions averaged over the batch (the tiles' draws are shared by it)."""
    return tuple(np.asarray(raw(p)).mean(0) for p in (support.query_positions, support.source_positions))


def magnitude(s, factor, softmax):
    """The proposal mass of the sources from one query's scores s (B, H, n): w e^s (softmax) or
    |s| times ``factor`` (B|1, H|1, n) (w |v_j|), normalised per (batch, head) and averaged."""
    s = np.asarray(s, np.float64)
    if softmax:
        m = np.exp(s - s.max(-1, keepdims=True))
    else:
        m = np.abs(s)
    if factor is not None:
        m = m * factor
    total = m.sum(-1, keepdims=True)
    m = np.where(total > 0, m / np.where(total > 0, total, 1.0), 0.0)
    return m.reshape(-1, m.shape[-1]).mean(0)


def _draws(call, ranges, sampling, proxy):
    method = sampling.method
    positions = _positions(call.support) if method.proposal == "locality" else None
    return Draws(method, sampling.counter, *ranges, positions=positions,
                 proxy=proxy if method.proposal == "proxy" else None)


def _mlp(call, ranges, sampling):
    kernel, values, weights, norm = call.kernel, call.values, call.weights, call.normalization
    a, b, x, y, W, W2, b2, act = kernel.factors(call.proj)
    B, H, M = values.shape[0], values.shape[1], values.shape[2]
    if weights is None:
        w = np.ones((B, M), raw(values).dtype)
    else:
        if norm == "softmax":
            weights = ops.where(raw(weights) != 0, weights, 0.0)
        w = ops.broadcast_to(weights, (B, H, M)) if weights.shape[1] > 1 else \
            ops.broadcast_to(ops.reshape(weights, (weights.shape[0], M)), (B, M))
    ra, rb, rx, ry, rW, rW2, rb2 = (raw(t) for t in (a, b, x, y, W, W2, b2))
    rw = raw(w)
    rw = rw if rw.ndim == 3 else rw[:, None]
    factor = rw if norm == "softmax" else rw * np.linalg.norm(raw(values), axis=-1)

    def proxy(i, L, H_):
        pre = ra[:, i, None] + rb[:, L:H_] + (rx[:, i, None] * ry[:, L:H_]) @ rW.T
        s = np.moveaxis(raw(kernel.activation(pre)) @ rW2.T + rb2, -1, 1)      # (B, H, n)
        return magnitude(s, factor[..., L:H_], norm == "softmax")

    return sampled_mlp(a, b, x, y, W, W2, b2, values, w, act=act, normalization=norm,
                       draws=_draws(call, ranges, sampling, proxy))


def dot_operands(call):
    """(q, k, v, mode) of the dot kernel with the weights folded in: softmax q' = [q | 1],
    k' = [k | log w / scale]; 'none' v' = w v; 'sum' v' = [w v | w] evaluated as 'none' (ratio after)."""
    kernel, values, weights, norm = call.kernel, call.values, call.weights, call.normalization
    q = ops.transpose(call.proj.query["q"], (0, 2, 1, 3))
    k = ops.transpose(call.proj.source["k"], (0, 2, 1, 3))
    dt = raw(q).dtype
    B, H, M = values.shape[0], values.shape[1], values.shape[2]
    if norm == "softmax":
        column = np.zeros((B, H, M, 1), dt) if weights is None else ops.broadcast_to(
            ops.reshape(ops.log(weights), tuple(weights.shape) + (1,)) * (1.0 / kernel.scale), (B, H, M, 1))
        k = ops.concatenate([k, column], axis=-1)
        q = ops.concatenate([q, np.ones(tuple(q.shape[:3]) + (1,), dt)], axis=-1)
        return q, k, values, norm
    v = values
    if weights is not None:
        v = v * ops.reshape(weights, tuple(weights.shape) + (1,))
    if norm == "sum":
        w = np.ones((B, H, M, 1), dt) if weights is None else ops.broadcast_to(
            ops.reshape(weights, tuple(weights.shape) + (1,)), (B, H, M, 1))
        v = ops.concatenate([v, w], axis=-1)
    return q, k, v, "none"


def _dot(call, ranges, sampling):
    q, k, v, mode = dot_operands(call)
    scale, softmax = call.kernel.scale, mode == "softmax"
    rq, rk, rv = raw(q), raw(k), raw(v)
    factor = None if softmax else np.linalg.norm(rv, axis=-1)

    def proxy(i, L, H_):
        s = np.einsum("bhd,bhnd->bhn", rq[:, :, i], rk[:, :, L:H_]) * scale
        return magnitude(s, None if softmax else factor[..., L:H_], softmax)

    out = sampled_attention(q, k, v, scale=scale, normalization=mode,
                            draws=_draws(call, ranges, sampling, proxy))
    if call.normalization == "sum":
        out = ratio_or_zero(out[..., :-1], out[..., -1:])
    return out
