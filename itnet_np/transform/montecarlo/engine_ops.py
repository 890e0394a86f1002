"""The sampled transforms as engine primitives: one graph node per call; forward and backward both
regenerate the draws (draws.Draws.realise) and run the fused Numba tile kernels on them.

Monte Carlo here is a random quadrature: the estimate of sum_j w_j K(i, j) v_j is the same fused
transform evaluated on the drawn sources J (concatenated over tiles, sorted) with the weights
w_J c (c the draw coefficients), each row restricted to its own draws by per-row source ranges:

    sampled_mlp(a, b, x, y, W, W2, b2, v, w)  = mlp_forward(a, b[:, J], x, y[:, J], W, W2, b2,
                                                            v[:, :, J], w[..., J] c, ranges=rows)
    sampled_attention(q, k, v)                = attention_forward(q, k'[:, :, J], v'[:, :, J], ranges=rows)
        'softmax': k' = k with log(c) / scale added to its last column (the caller appends the
                   column [log w / scale] to k and [1] to q, so the logit gains log(w c));
        'none':    v' = v c (the caller folds w into v, and [v w | w] for 'sum').

Backward: the fused backward on the same gathered arrays, then the source-side gradients are
scattered back to their M rows (np.add.at: duplicated draws add up) with the chain factor c where
c multiplied the input. Residuals: the per-row statistic of the fused forward ((B, H, N)); no
index arrays are kept. The VJPs are raw code, so the ops are first-order only.
"""
import numpy as np

from ...autograd.primitive import primitive
from ..fused.attention_numba import attention_backward, attention_forward
from ..fused.mlp_numba import mlp_backward, mlp_forward

__all__ = ["sampled_attention", "sampled_mlp"]


def _take(array, idx, axis):
    return np.take(array, idx, axis=axis)


def _scatter(grad, idx, axis, m):
    """sum of grad's slices over duplicate indices, into an array with m rows on ``axis``."""
    shape = list(grad.shape)
    shape[axis] = m
    out = np.zeros(shape, grad.dtype)
    np.add.at(out, (slice(None),) * axis + (idx,), grad)
    return out


# ------------------------------------------------------------------------------------------- MLP

def _mlp_inputs(b, y, v, w, draws):
    idx, coef, lo, hi = draws.realise()
    c = coef.astype(w.dtype)
    return idx, c, (lo, hi), _take(b, idx, 1), _take(y, idx, 1), _take(v, idx, 2), _take(w, idx, -1) * c


def _mlp_forward(a, b, x, y, W, W2, b2, v, w, *, act, normalization, draws):
    _, _, ranges, bg, yg, vg, wg = _mlp_inputs(b, y, v, w, draws)
    return mlp_forward(a, bg, x, yg, W, W2, b2, vg, wg, act=act, normalization=normalization, ranges=ranges)


def _mlp_vjp(g, out, needs, a, b, x, y, W, W2, b2, v, w, *, act, normalization, draws, residuals):
    idx, c, ranges, bg, yg, vg, wg = _mlp_inputs(b, y, v, w, draws)
    d = mlp_backward(a, bg, x, yg, W, W2, b2, vg, wg, out, residuals, g, act=act,
                     normalization=normalization, ranges=ranges)
    M = b.shape[1]
    return (d["a"], _scatter(d["b"], idx, 1, M), d["x"], _scatter(d["y"], idx, 1, M), d["W"], d["W2"],
            d["b2"], _scatter(d["v"], idx, 2, M), _scatter(d["w"] * c, idx, w.ndim - 1, M))


_mlp = primitive(_mlp_forward, "sampled_mlp", save_output=True, saves_residuals=True,
                 twice_differentiable=False).defvjp_all(_mlp_vjp)


def sampled_mlp(a, b, x, y, W, W2, b2, v, w, *, act, normalization, draws):
    """The Monte Carlo estimate of fused_mlp's transform (module docstring): a (B, N, K), b (B, M, K),
    x (B, N, R), y (B, M, R), W (K, R), W2 (H, K), b2 (H,), v (B, H, M, dv), w (B, M) or (B, H, M);
    returns (B, H, N, dv). Arrays or Tensors."""
    return _mlp(a, b, x, y, W, W2, b2, v, w, act=act, normalization=normalization, draws=draws)


# ------------------------------------------------------------------------------------- attention

def _attention_inputs(k, v, scale, normalization, draws):
    idx, coef, lo, hi = draws.realise()
    kg, vg = _take(k, idx, 2), _take(v, idx, 2)
    c = coef.astype(k.dtype)
    if normalization == "softmax":
        kg[..., -1] += np.log(c) / k.dtype.type(scale)
    else:
        vg = vg * c[:, None]
    return idx, c, (lo, hi), kg, vg


def _attention_forward(q, k, v, *, scale, normalization, draws):
    _, _, ranges, kg, vg = _attention_inputs(k, v, scale, normalization, draws)
    return attention_forward(q, kg, vg, scale, normalization=normalization, ranges=ranges)


def _attention_vjp(g, out, needs, q, k, v, *, scale, normalization, draws, residuals):
    idx, c, ranges, kg, vg = _attention_inputs(k, v, scale, normalization, draws)
    dq, dk, dv, _, _ = attention_backward(q, kg, vg, out, residuals, g, scale, normalization=normalization,
                                          ranges=ranges)
    if normalization != "softmax":
        dv = dv * c[:, None]
    M = k.shape[2]
    return dq, _scatter(dk, idx, 2, M), _scatter(dv, idx, 2, M)


_attention = primitive(_attention_forward, "sampled_attention", save_output=True, saves_residuals=True,
                       twice_differentiable=False).defvjp_all(_attention_vjp)


def sampled_attention(q, k, v, *, scale, normalization, draws):
    """The Monte Carlo estimate of fused_attention's transform (module docstring): q (B, H, N, d),
    k (B, H, M, d) whose last column carries log w / scale under softmax, v (B, H, M, dv)."""
    return _attention(q, k, v, scale=scale, normalization=normalization, draws=draws)
