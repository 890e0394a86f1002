"""Causal linear attention (Katharopoulos et al. 2020, "Transformers are RNNs"), both forms.

Source: arXiv:2006.16236, eqs. (the causal case) and idiap/fast-transformers; docs/theory.md §7:

    V'_i = phi(Q_i)^T sum_{j<=i} phi(K_j) V_j^T / (phi(Q_i)^T sum_{j<=i} phi(K_j) + eps),   phi = elu + 1

Recurrent form: S_i = S_{i-1} + phi(K_i) V_i^T, Z_i = Z_{i-1} + phi(K_i),
V'_i = phi(Q_i)^T S_i / (phi(Q_i)^T Z_i + eps). The normaliser includes the current token; eps is added to
the denominator as fast-transformers does (default here 0.0, which makes both forms exactly equal).
Shapes: q, k (B, H, L, d), v (B, H, L, d_v); output (B, H, L, d_v). No 1/sqrt(d) scaling.
The layer around it (projections, heads, output map): :func:`linear_attention_layer_ref`.
"""
import numpy as np

__all__ = ["causal_linear_attention_recurrent_ref", "causal_linear_attention_ref", "elu_plus_one",
           "linear_attention_layer_ref"]


def elu_plus_one(x):
    """phi(x) = elu(x) + 1 = x + 1 for x > 0, exp(x) for x <= 0 (strictly positive)."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 0, x + 1.0, np.exp(np.minimum(x, 0.0)))


def _features(q, k, v, feature_map):
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    if q.ndim != 4 or k.shape != q.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"causal_linear_attention: expected q, k (B, H, L, d) and v (B, H, L, d_v); got "
                         f"{q.shape}, {k.shape}, {v.shape}")
    phi = elu_plus_one if feature_map is None else feature_map
    return np.asarray(phi(q), dtype=np.float64), np.asarray(phi(k), dtype=np.float64), v


def causal_linear_attention_ref(q, k, v, feature_map=None, eps=0.0):
    """Parallel (masked quadratic) form:

        A[i, j] = phi(Q_i) . phi(K_j) * 1[j <= i],   V'_i = sum_j A[i, j] V_j / (sum_j A[i, j] + eps)

    feature_map: callable on (..., d) arrays, default elu + 1. Shapes in the module docstring.
    """
    fq, fk, v = _features(q, k, v, feature_map)
    length = fq.shape[2]
    scores = np.einsum("bhid,bhjd->bhij", fq, fk) * np.tril(np.ones((length, length)))
    return np.einsum("bhij,bhjv->bhiv", scores, v) / (np.sum(scores, axis=-1, keepdims=True) + eps)


def causal_linear_attention_recurrent_ref(q, k, v, feature_map=None, eps=0.0):
    """Recurrent (RNN) form, explicit loop over i:

        S_i = S_{i-1} + phi(K_i) V_i^T   (d x d_v),   Z_i = Z_{i-1} + phi(K_i)   (d),   S_{-1} = Z_{-1} = 0
        V'_i = phi(Q_i)^T S_i / (phi(Q_i)^T Z_i + eps)

    Same arguments, shapes and output as causal_linear_attention_ref.
    """
    fq, fk, v = _features(q, k, v, feature_map)
    n_batch, heads, length, d = fq.shape
    S = np.zeros((n_batch, heads, d, v.shape[-1]))
    Z = np.zeros((n_batch, heads, d))
    out = np.zeros(v.shape)
    for i in range(length):
        S = S + fk[:, :, i, :, None] * v[:, :, i, None, :]
        Z = Z + fk[:, :, i]
        numerator = np.einsum("bhd,bhdv->bhv", fq[:, :, i], S)
        denominator = np.einsum("bhd,bhd->bh", fq[:, :, i], Z)[..., None] + eps
        out[:, :, i] = numerator / denominator
    return out


def linear_attention_layer_ref(x, weights, num_heads, attention=causal_linear_attention_recurrent_ref):
    """The linear-attention layer in torch Linear layout: q = x W_q^T + b_q, k = x W_k^T + b_k,
    v = x W_v^T + b_v, split into num_heads heads (rows grouped by head, as nn.MultiheadAttention),
    ``attention(q, k, v)`` per head on (B, H, L, d), heads concatenated, out = y W_o^T + b_o.

    x (B, L, C); ``weights``: dict with q_weight, k_weight (H r, C), v_weight (H d_v, C) and optional
    out_weight (C_out, H d_v), q_bias, k_bias, v_bias, out_bias (missing or None: absent; no output
    map means the identity). Returns (B, L, C_out).
    """
    x = np.asarray(x, dtype=np.float64)

    def project(name):
        y = x @ np.asarray(weights[name + "_weight"], dtype=np.float64).T
        bias = weights.get(name + "_bias")
        y = y if bias is None else y + np.asarray(bias, dtype=np.float64)
        return np.moveaxis(y.reshape(y.shape[:2] + (num_heads, -1)), 2, 1)

    heads = attention(project("q"), project("k"), project("v"))
    y = np.moveaxis(heads, 1, 2).reshape(x.shape[:2] + (-1,))
    if weights.get("out_weight") is not None:
        y = y @ np.asarray(weights["out_weight"], dtype=np.float64).T
    return y if weights.get("out_bias") is None else y + np.asarray(weights["out_bias"], dtype=np.float64)
