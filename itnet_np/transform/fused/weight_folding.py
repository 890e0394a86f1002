"""Quadrature weights folded into the fused kernels' operands, for the 'numba' and the 'cuda' plans
(numba_plans.py holds the algebra in its docstring; gpu/plan.py follows it).

DotProductKernel (``dot_operands``), q, k (B, H, N|M, d), w (B|1, H|1, M):
    'none':     A_ij v_j = s_ij (w_j v_j)                          -> v' = w v
    'sum':      y_i = sum_j s_ij w_j v_j / sum_j s_ij w_j          -> 'none' on v' = [w v | w], then
                ``unfold`` divides (normalization.ratio_or_zero: 0, with derivative 0, where the sum is 0)
    'softmax':  w_j e^{s_ij} = e^{s_ij + log w_j}                   -> q' = [q | 1], k' = [k | log w / scale],
                and the sources with w_j = 0 excluded (``keep``; NaN stays and propagates)
MLPKernel (``mlp_weights``): w (B, M) or (B, H, M), ones when None; under softmax w = 0 goes through
``where``, so its gradient is 0 as in the dense path.

Engine Tensors in, engine Tensors out, on the values' array module (NumPy or CuPy).
"""
from ...autograd import ops
from ...autograd.backend import xp_of
from ...autograd.ops._util import raw
from ..normalization import ratio_or_zero


def dot_operands(call):
    """(q, k, v, mode, keep) for the attention kernel: q, k transposed to (B, H, N|M, d), the weights
    folded in (module docstring), ``mode`` the normalization the kernel runs, ``keep`` the sources with
    w != 0 under softmax with weights, (B|1, H|1, 1, M) bool (None otherwise): the caller excludes them
    (mask, or the pair lists)."""
    kernel, proj, values, weights, norm = call.kernel, call.proj, call.values, call.weights, call.normalization
    q = ops.transpose(proj.query["q"], (0, 2, 1, 3))
    k = ops.transpose(proj.source["k"], (0, 2, 1, 3))
    v, mode, keep = values, norm, None
    if weights is not None:
        w4 = ops.reshape(weights, tuple(weights.shape) + (1,))          # (B|1, H|1, M, 1)
        if norm == "none":
            v = values * w4
        elif norm == "sum":
            wide = ops.broadcast_to(w4, tuple(values.shape[:3]) + (1,))
            v, mode = ops.concatenate([values * w4, wide], axis=-1), "none"
        else:
            present = raw(weights) != 0
            logw = ops.where(present, ops.log(ops.where(present, weights, 1.0)), 0.0)
            B, H, M, _ = k.shape
            column = ops.broadcast_to(ops.reshape(logw, tuple(logw.shape) + (1,)), (B, H, M, 1))
            k = ops.concatenate([k, column * (1.0 / kernel.scale)], axis=-1)
            ones = xp_of(raw(q)).ones(tuple(q.shape[:3]) + (1,), raw(q).dtype)
            q = ops.concatenate([q, ones], axis=-1)
            keep = present[:, :, None, :]
    return q, k, v, mode, keep


def unfold(out, mode, normalization):
    """The attention kernel's output back to ``normalization``: for 'sum' with weights (run as 'none'
    on [w v | w]) the numerator over the denominator column."""
    return ratio_or_zero(out[..., :-1], out[..., -1:]) if mode != normalization else out


def mlp_weights(call):
    """The MLP kernel's w: (B, H, M) for per-head weights, else (B, M); ones when there are none."""
    values, weights = call.values, call.weights
    B, H, M = values.shape[0], values.shape[1], values.shape[2]
    if weights is None:
        return xp_of(raw(values)).ones((B, M), raw(values).dtype)
    if call.normalization == "softmax":                # w = 0: excluded, derivative 0 (as dense)
        weights = ops.where(raw(weights) != 0, weights, 0.0)
    if weights.shape[1] > 1:
        return ops.broadcast_to(weights, (B, H, M))
    return ops.broadcast_to(ops.reshape(weights, (weights.shape[0], M)), (B, M))
