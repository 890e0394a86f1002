"""Causal linear attention (Katharopoulos et al. 2020, "Transformers are RNNs"), both forms.

Source: arXiv:2006.16236, eqs. (the causal case) and idiap/fast-transformers; theory.md §5:

    V'_i = phi(Q_i)^T sum_{j<=i} phi(K_j) V_j^T / (phi(Q_i)^T sum_{j<=i} phi(K_j) + eps),   phi = elu + 1

Recurrent form: S_i = S_{i-1} + phi(K_i) V_i^T, Z_i = Z_{i-1} + phi(K_i),
V'_i = phi(Q_i)^T S_i / (phi(Q_i)^T Z_i + eps). The normaliser includes the current token; eps is added to
the denominator as fast-transformers does (default here 0.0, which makes both forms exactly equal).
Shapes: q, k (B, H, L, d), v (B, H, L, d_v); output (B, H, L, d_v). No 1/sqrt(d) scaling.
"""
import numpy as np

__all__ = ["causal_linear_attention_recurrent_ref", "causal_linear_attention_ref", "elu_plus_one"]


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
