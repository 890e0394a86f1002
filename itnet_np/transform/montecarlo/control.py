"""The low-rank control variate: integrate a rank-R part of the kernel exactly, sample the residual.

With G^h_ij = phi^h_i . psi^h_j a rank-R approximation of the score s^h_ij and u_j = w_j v_j (and
u_j = [w_j v_j | w_j] for 'sum', whose ratio is taken afterwards),

    sum_{j in S(i)} s_ij u_j  =  sum_{j in S(i)} G_ij u_j  +  sum_{j in S(i)} (s_ij - G_ij) u_j
                              ~  phi_i . (P_hi_i - P_lo_i)  +  sum_s c_s (s_ij_s - G_ij_s) u_j_s

with P_l = sum_{j < l} psi_j u_j^T (prefix sums over the sources: O(M R d), any band or per-row
ranges lo_i, hi_i non-decreasing in i). The second term is unbiased for the residual (draws.py (1)),
so the whole estimate stays unbiased for 'none' and self-normalised for 'sum'; its variance is the
residual's, small when G captures the kernel. The drawn part of G is again a prefix sum, over each
tile's sorted draws. Cost O((N + M) R d) beyond the plain estimator.

G is the skeleton (CUR) approximation from R landmark queries I and sources J (evenly spaced,
lowrank/approx.py): G = s[:, J] s[I, J]^+ s[I, :], from 2 R kernel rows and columns (never the
N x M matrix). phi and psi are constants (detached, like the proposals): the
estimate is unbiased for any fixed G, and the gradient reaches u (values, weights) through both
terms and the kernel through the sampled term.

``lowrank_correction(u; phi, psi, lo, hi, draws)`` = phi_i . (P_hi_i - P_lo_i) - sum_s c_s G_ij_s u_j_s,
one engine node, linear in u; its VJP is the transposed prefix sums (over the rows that contain j).
"""
import numpy as np

from ...autograd.ops._util import raw as _raw
from ...autograd.primitive import primitive
from ..fused._tiles import ACTIVATIONS
from ..lowrank.approx import kernel_entries, skeleton

__all__ = ["lowrank_correction", "plan_control_variate"]


def _prefix(x):
    """Prefix sums along axis 2 with a leading zero: (B, H, n, ...) -> (B, H, n + 1, ...)."""
    out = np.zeros(x.shape[:2] + (x.shape[2] + 1,) + x.shape[3:], x.dtype)
    np.cumsum(x, axis=2, out=out[:, :, 1:])
    return out


def _tiles(row_lo, row_hi, tile):
    """Per query tile: its rows and its slice [start, stop) of the concatenated draws."""
    n = row_lo.shape[0]
    for i0 in range(0, n, tile):
        rows = slice(i0, min(i0 + tile, n))
        lo, hi = row_lo[rows], row_hi[rows]
        live = hi > lo
        if live.any():
            yield rows, int(lo[live].min()), int(hi[live].max())


def _forward(u, *, phi, psi, lo, hi, draws):
    idx, coef, row_lo, row_hi = draws.realise()
    P = _prefix(np.einsum("bhmr,bhmd->bhmrd", psi, u))
    out = np.einsum("bhnr,bhnrd->bhnd", phi, P[:, :, hi] - P[:, :, lo])
    for rows, start, stop in _tiles(row_lo, row_hi, draws.method.tile):
        J, c = idx[start:stop], coef[start:stop].astype(u.dtype)
        Pt = _prefix(np.einsum("s,bhsr,bhsd->bhsrd", c, psi[:, :, J], u[:, :, J]))
        out[:, :, rows] -= np.einsum("bhnr,bhnrd->bhnd", phi[:, :, rows],
                                     Pt[:, :, row_hi[rows] - start] - Pt[:, :, row_lo[rows] - start])
    return out


def _vjp(g, out, needs, u, *, phi, psi, lo, hi, draws):
    idx, coef, row_lo, row_hi = draws.realise()
    M = u.shape[2]
    j = np.arange(M)
    Q = _prefix(np.einsum("bhnr,bhnd->bhnrd", phi, g))        # rows i containing j: [a_j, b_j)
    a, b = np.searchsorted(hi, j, "right"), np.searchsorted(lo, j, "right")
    du = np.einsum("bhmr,bhmrd->bhmd", psi, Q[:, :, np.maximum(a, b)] - Q[:, :, a])
    for rows, start, stop in _tiles(row_lo, row_hi, draws.method.tile):
        J, c = idx[start:stop], coef[start:stop].astype(u.dtype)
        Qt = _prefix(np.einsum("bhnr,bhnd->bhnrd", phi[:, :, rows], g[:, :, rows]))
        s = np.arange(start, stop)
        a_s, b_s = np.searchsorted(row_hi[rows], s, "right"), np.searchsorted(row_lo[rows], s, "right")
        contrib = np.einsum("s,bhsr,bhsrd->bhsd", c, psi[:, :, J], Qt[:, :, np.maximum(a_s, b_s)] - Qt[:, :, a_s])
        np.add.at(du, (slice(None), slice(None), J), -contrib)
    return (du,)


_correction = primitive(_forward, "lowrank_correction", twice_differentiable=False).defvjp_all(_vjp)


def lowrank_correction(u, *, phi, psi, lo, hi, draws):
    """The control variate's correction (module docstring): u (B, H, M, d) -> (B, H, N, d)."""
    return _correction(u, phi=phi, psi=psi, lo=lo, hi=hi, draws=draws)


def plan_control_variate(call, ranges, sampling):
    """The 'montecarlo' Plan (or Decline) of a call with control_variate=True."""
    from ...autograd import ops
    from ..kernels.dot import DotProductKernel
    from ..kernels.mlp import MLPKernel
    from ..normalization import ratio_or_zero
    from ..planner import Decline, Plan
    from .engine_ops import sampled_attention, sampled_mlp
    from .plan import NAME, _draws, dot_operands
    norm, kernel, method = call.normalization, call.kernel, sampling.method
    lo, hi = ranges
    if norm == "softmax":
        return Decline(NAME, "control_variate=True under softmax (the variate needs an integrand linear in "
                             "the scores: 'none' or 'sum')")
    if not (np.all(np.diff(lo) >= 0) and np.all(np.diff(hi) >= 0)):
        return Decline(NAME, "control_variate=True on source ranges that are not non-decreasing in i")
    if method.proposal == "proxy":
        return Decline(NAME, "control_variate=True with proposal='proxy' (the proxy would be the residual's "
                             "magnitude; use 'uniform', 'stratified' or 'locality')")
    if not isinstance(kernel, (MLPKernel, DotProductKernel)) or getattr(kernel, "position_bias", None) is not None \
            or getattr(kernel, "activation_name", "relu") not in ACTIVATIONS:
        return Decline(NAME, f"control_variate=True with {type(kernel).__name__} (MLPKernel with a fused "
                             "activation, DotProductKernel without a position bias)")

    def run():
        values, weights = call.values, call.weights
        dt = _raw(values).dtype
        phi, psi = (f.astype(dt) for f in skeleton(kernel_entries(kernel, call.proj), call.support.n,
                                                     call.support.m, method.rank))
        draws = _draws(call, ranges, sampling, None)
        B, H, M = values.shape[0], values.shape[1], values.shape[2]
        if isinstance(kernel, DotProductKernel):
            q, k, u, _ = dot_operands(call)
            sampled = sampled_attention(q, k, u, scale=kernel.scale, normalization="none", draws=draws)
        else:
            w = np.ones((B, H, M), _raw(values).dtype) if weights is None else ops.broadcast_to(weights, (B, H, M))
            v = values if norm == "none" else ops.concatenate(
                [values, np.ones((B, H, M, 1), _raw(values).dtype)], axis=-1)
            a, b, x, y, W, W2, b2, act = kernel.factors(call.proj)
            sampled = sampled_mlp(a, b, x, y, W, W2, b2, v, w, act=act, normalization="none", draws=draws)
            u = v * ops.reshape(w, (B, H, M, 1))
        out = sampled + lowrank_correction(u, phi=phi, psi=psi, lo=lo, hi=hi, draws=draws)
        return out if norm == "none" else ratio_or_zero(out[..., :-1], out[..., -1:])
    note = (f"Monte Carlo with a rank-{method.rank} skeleton control variate: {method.samples} "
            f"{method.proposal} draws per {method.tile}-query tile on the residual")
    return Plan(NAME, run, note)
