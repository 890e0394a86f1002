"""Banded fused StencilKernel: the backend call as one engine op over tap indices, no N x M buffer.

A StencilKernel scores s^h_ij = sum_a table[h, a] 1[p_j - q_i = o_a]. When every position is an
integer grid point (any D) and no two sources share a position, each (query, tap) pair hits at most
one source j(i, a), found by a sorted search over linearised source keys; the transform is then

    y^h_i = sum_a table[h, a] keep_{i j} w^h_j v^h_j,        j = j(i, a)      ('none')
    y^h_i = (the same with v -> [v | 1]): numerator / denominator            ('sum', 0 -> 1)

which is the dense reference exactly (the dense A has no other nonzero entry), at O(B H N T d) cost.
The configured support (causal, window, radius) is evaluated on the T tap offsets, the user's mask
(1|B, N, M) only at the tap pairs, so both apply exactly and nothing of size N x M is formed. The engine op takes (table, w, v), so
gradients reach the kernel's table, the quadrature weights and the values; positions are
constants (as in the dense indicator).

Declined (``supports`` False, or at call time ``decline_reason``): other kernels, 'softmax' (the
off-tap pairs have e^0 = 1, so the sum is not banded), non-NumPy arrays, positions that are not
integer-valued, sources sharing a position, position grids too large to linearise in int64.

The preparation (declines, tap indices, the support on the taps, 'sum' as an appended ones column)
is array-module generic: ``plan_stencil(call, name, op)`` with the GPU's engine op (same arguments as
``fused_stencil``) is the 'cuda' backend's StencilKernel plan (itnet_np.gpu.plan).
"""
import numpy as np

from ...autograd.backend import xp_of
from ...autograd.ops import concatenate
from ...autograd.ops._util import raw
from ...autograd.primitive import primitive
from ..kernels.stencil import StencilKernel
from ..normalization import ratio_or_zero
from ..positions import as_integers
from .stencil_numba import stencil_backward, stencil_forward

__all__ = ["STENCIL_OP", "decline_reason", "fused_stencil", "plan_stencil", "stencil_indices"]

STENCIL_OP = "fused_stencil"
# 'auto' runs banded from this many (query, source) pairs N M on: forward + backward of
# IntegralTransform(16 -> 16, H = 2, 9 taps, B = 1) on a 2-core CPU, banded/dense time 1.0 / 1.2
# (f64 / f32) at N = 32, 0.8 / 0.95 at 64, 0.02 at 256, 0.01 / 0.02 at 2048.
MIN_PAIRS = 48 * 48
_TOL = 1e-6              # the dense indicator's matching tolerance


def stencil_indices(query_positions, source_positions, offsets, mask=None):
    """idx int64 (1|B, N, T): the source j with p_j = q_i + o_a and mask[b, i, j], else -1.

    Raw positions (1|B, N, D), (1|B, M, D), integer offsets (T, D), mask bool (1|B, N, M) or None.
    Returns None (with no partial work kept) when positions are not integers, sources repeat a
    position, or the source box is too large to linearise in int64.
    """
    xp = xp_of(source_positions)
    q, s = as_integers(xp.asarray(query_positions)), as_integers(xp.asarray(source_positions))
    if q is None or s is None:
        return None
    off = xp.asarray(offsets).astype(np.int64)
    N, M, T = q.shape[1], s.shape[1], off.shape[0]
    batch = max(q.shape[0], s.shape[0])
    idx = xp.full((batch, N, T), -1, np.int64)
    for b in range(batch):
        src, qry = s[min(b, s.shape[0] - 1)], q[min(b, q.shape[0] - 1)]
        lo, hi = src.min(axis=0), src.max(axis=0)
        ext = [int(e) for e in hi - lo + 1]                      # D host integers
        if np.prod([float(e) for e in ext]) >= 2.0 ** 62:
            return None
        strides = [1] * len(ext)
        for d in range(len(ext) - 2, -1, -1):
            strides[d] = strides[d + 1] * ext[d + 1]
        keys = sum((src[:, d] - lo[d]) * strides[d] for d in range(len(ext)))   # no host -> device copy
        order = xp.argsort(keys)                                 # keys are distinct, or we decline
        sk = keys[order]
        if M > 1 and bool(xp.any(sk[1:] == sk[:-1])):
            return None
        t = qry[:, None, :] + off[None]                          # (N, T, D) target positions
        inside = xp.all((t >= lo) & (t <= hi), axis=-1)
        tk = sum(xp.clip(t[..., d] - lo[d], 0, ext[d] - 1) * strides[d] for d in range(len(ext)))
        pos = xp.minimum(xp.searchsorted(sk, tk), M - 1)
        hit = inside & (sk[pos] == tk)
        idx[b] = xp.where(hit, order[pos], -1)
    if mask is not None:
        mask = xp.asarray(mask)
        batch = max(batch, mask.shape[0])
        idx = xp.broadcast_to(idx, (batch, N, T))
        rows = xp.arange(N)[:, None]
        keep = xp.stack([mask[min(b, mask.shape[0] - 1)][rows, xp.maximum(idx[b], 0)]
                         for b in range(batch)])
        idx = xp.where(keep, idx, -1)
    return xp.ascontiguousarray(idx)


# ----------------------------------------------------------------------------------- engine op

def _stencil_forward(table, w, v, *, idx):
    return stencil_forward(idx, table, w, v)


def _stencil_vjp(g, out, needs, table, w, v, *, idx):
    return stencil_backward(idx, table, w, v, g, want_w=needs[1])


_stencil = primitive(_stencil_forward, STENCIL_OP, twice_differentiable=False).defvjp_all(_stencil_vjp)


def fused_stencil(table, w, v, idx):
    """One engine node: y (B, H, N, d) = sum_a table[h, a] w[b, h, j] v[b, h, j], j = idx[b, i, a]
    (stencil_numba.py). table (H, T), w (1|B, 1|H, M), v (B, H, M, d): arrays or Tensors; idx a
    raw int64 constant (1|B, N, T), -1 = no source."""
    return _stencil(table, w, v, idx=idx)


# ------------------------------------------------------------------------------------- backend

def decline_reason(kernel, proj, values, normalization, host=True):
    """Why this call cannot run banded (a string), or None; needs the data (positions). ``host``:
    the engine op runs on NumPy arrays (the CPU kernel); a device plan checks its arrays itself."""
    if not isinstance(kernel, StencilKernel):
        return f"{type(kernel).__name__} (banded: StencilKernel only)"
    if normalization not in ("none", "sum"):
        return f"normalization={normalization!r} (banded: 'none', 'sum'; softmax weighs off-tap pairs)"
    if host and type(raw(values)) is not np.ndarray:
        return "arrays that are not NumPy arrays (the banded kernel runs on the CPU)"
    pq, ps = raw(proj.query["p"]), raw(proj.source["p"])
    if pq.shape[-1] != kernel.position_dim or ps.shape[-1] != kernel.position_dim:
        return f"positions of D = {pq.shape[-1]} for {kernel.position_dim}-D offsets"
    if as_integers(pq) is None or as_integers(ps) is None:
        return "positions that are not integer-valued"
    return None


def plan_stencil(call, name="numba", op=None):
    """The banded stencil's answer to a planner.TransformCall: a Plan or a Decline (with the reason).

    ``op``: the engine op to run, with fused_stencil's arguments; None for fused_stencil (the CPU
    kernel: NumPy arrays only, pays from MIN_PAIRS pairs), else a device op (the 'cuda' backend's
    cuda_stencil: any array module, always pays, as every GPU plan so far)."""
    from ..planner import Decline, Plan
    kernel, proj, values = call.kernel, call.proj, call.values
    reason = decline_reason(kernel, proj, values, call.normalization, host=op is None)
    idx = None
    if reason is None:
        xp = xp_of(raw(proj.source["p"]))                   # the offsets on the positions' device
        offsets = xp.rint(xp.asarray(raw(kernel.offsets))).astype(np.int64)
        taps, mask = tap_support(call.support, offsets)
        idx = stencil_indices(raw(proj.query["p"]), raw(proj.source["p"]), offsets, mask)
        if idx is None:
            reason = "source positions that repeat or span more than 2^62 grid points"
        elif not bool(taps.all()):
            idx[..., ~taps] = -1
    if reason:
        return Decline(name, reason)
    pays = op is not None or call.pairs >= MIN_PAIRS
    run = op or fused_stencil
    return Plan(name, lambda: _banded(kernel, values, call.weights, call.normalization, idx, run),
                f"a banded gather over the {idx.shape[-1]} taps", pays,
                f"N M = {call.pairs} pairs < {MIN_PAIRS}, where the dense path is faster")


def tap_support(support, offsets):
    """(taps, mask) for stencil_indices: ``taps`` bool (T,), the configured support on the tap
    offsets (a tap pair has p_j - p_i = o_a exactly when positions are integers), and the user's
    mask; when positions are only near-integers (within GRID_TOL), the support's dense mask instead,
    which compares the positions themselves, as the dense reference does."""
    pq, ps = support.query_positions, support.source_positions
    if support.support.is_full or (as_integers(pq, exact=True) is not None
                                   and as_integers(ps, exact=True) is not None):
        return support.keep_offsets(offsets.astype(np.float64)), support.mask
    return xp_of(offsets).ones(offsets.shape[0], bool), support.dense_mask()


def _banded(kernel, values, weights, normalization, idx, op):
    v = values
    xp, dtype = xp_of(raw(values)), raw(values).dtype
    w = weights if weights is not None else xp.ones((1, 1, values.shape[2]), dtype)
    if normalization == "sum":
        ones = xp.ones(tuple(values.shape[:3]) + (1,), dtype)
        v = concatenate([values, ones], axis=-1)
    out = op(kernel.table, w, v, idx)
    if normalization == "sum":
        out = ratio_or_zero(out[..., :-1], out[..., -1:])
    return out
