"""Softmax attention references: PyTorch SDPA, nn.MultiheadAttention, ALiBi and T5 relative buckets.

Sources:
- torch.nn.functional.scaled_dot_product_attention, reference pseudo-code in the PyTorch docs:
  ``scale = 1/sqrt(E)``; ``is_causal`` keeps ``ones(L, S).tril(0)``; a boolean mask with True = TAKE PART
  becomes -inf where False; a float mask is added; ``softmax(Q K^T * scale + bias) @ V``.
- torch.nn.MultiheadAttention docs: in_proj_weight = [W_q; W_k; W_v] (3E, E), per-head scale
  1/sqrt(E/num_heads); a boolean attn_mask / key_padding_mask with True = NOT allowed to attend (the
  opposite polarity of SDPA); float masks are added.
- ALiBi: Press, Smith & Lewis, "Train Short, Test Long" (ICLR 2022), bias -m_h * (i - j).
- T5 relative buckets: Raffel et al. 2020, Mesh-TF / HF ``_relative_position_bucket``.

Fully masked rows. A query row whose every score is -inf (all keys masked) has no softmax; we define its
output to be ZERO. PyTorch 2.5+ SDPA (math path) and nn.MultiheadAttention(need_weights=False) return
zeros too; nn.MultiheadAttention(need_weights=True) returns NaN.
"""
import math

import numpy as np

__all__ = ["alibi_bias", "alibi_slopes", "mha_ref", "sdpa_ref", "t5_bias", "t5_relative_bucket"]


def _softmax_rows_zero_if_empty(scores):
    """softmax over the last axis with the row max subtracted; rows that are all -inf give zeros."""
    row_max = np.max(scores, axis=-1, keepdims=True)
    empty = np.isneginf(row_max)
    e = np.exp(scores - np.where(empty, 0.0, row_max))     # exp(-inf) = 0 for masked entries
    total = np.sum(e, axis=-1, keepdims=True)
    return np.where(empty, 0.0, e / np.where(empty, 1.0, total))


def sdpa_ref(q, k, v, attn_mask=None, is_causal=False, scale=None):
    """torch.nn.functional.scaled_dot_product_attention (no dropout), from the doc pseudo-code.

        bias[i, j] = 0, then
            is_causal:        bias[i, j] = -inf where j > i          (keep ones(L, S).tril(0))
            bool attn_mask:   bias[i, j] = -inf where mask is False  (True = ATTEND)
            float attn_mask:  bias += attn_mask
        out = softmax(q k^T * scale + bias, axis=-1) @ v,   scale = 1/sqrt(E) by default.

    Shapes: q (..., L, E), k (..., S, E), v (..., S, Ev); attn_mask broadcastable to (..., L, S).
    Returns (..., L, Ev) float64. ``is_causal`` together with ``attn_mask`` is an error, as in the doc
    pseudo-code (torch itself raises on most paths). Fully masked rows return zeros (module docstring).
    """
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"sdpa_ref: expected q (..., L, E), k (..., S, E), v (..., S, Ev), got "
                         f"{q.shape}, {k.shape}, {v.shape}")
    if is_causal and attn_mask is not None:
        raise ValueError("sdpa_ref: pass either attn_mask or is_causal=True, not both")
    n_q, n_k = q.shape[-2], k.shape[-2]
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale)
    bias = np.zeros((n_q, n_k))
    if is_causal:
        bias = np.where(np.tril(np.ones((n_q, n_k), dtype=bool)), bias, -np.inf)
    if attn_mask is not None:
        attn_mask = np.asarray(attn_mask)
        if attn_mask.dtype == bool:
            bias = np.where(attn_mask, bias, -np.inf)
        else:
            bias = bias + attn_mask.astype(np.float64)
    scores = np.einsum("...le,...se->...ls", q, k) * scale + bias
    return np.einsum("...ls,...sv->...lv", _softmax_rows_zero_if_empty(scores), v)


def _mha_mask_to_bias(mask):
    """MultiheadAttention mask -> additive float bias: bool True = NOT allowed (-inf), float added."""
    mask = np.asarray(mask)
    if mask.dtype == bool:
        return np.where(mask, -np.inf, 0.0)
    return mask.astype(np.float64)


def mha_ref(query, key, value, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, num_heads,
            attn_mask=None, is_causal=False, key_padding_mask=None):
    """torch.nn.MultiheadAttention(E, num_heads, batch_first=True)(query, key, value)[0], no dropout.

        [W_q; W_k; W_v] = in_proj_weight (3E, E),  [b_q; b_k; b_v] = in_proj_bias (3E,) or None
        Q = query W_q^T + b_q,  K = key W_k^T + b_k,  V = value W_v^T + b_v      (B, L|S, E)
        split E into num_heads heads of size E_h = E / num_heads
        head_h = softmax(Q_h K_h^T / sqrt(E_h) + bias) V_h                        (B, L, E_h)
        out = concat_h(head_h) W_o^T + b_o,   W_o = out_proj_weight (E, E), b_o = out_proj_bias (E,)

    bias = attn_mask term + key_padding_mask term (+ causal -inf above the diagonal if is_causal):
    - attn_mask (L, S) or (B*num_heads, L, S) (row index b*num_heads + h, torch order): bool True =
      NOT allowed, float added.
    - key_padding_mask (B, S): bool True = ignore that key, float added.
    - is_causal=True masks j > i. (torch treats is_causal only as a hint and requires attn_mask to be the
      causal mask as well; passing both here is harmless.)
    Shapes: query (B, L, E), key/value (B, S, E). Returns (B, L, E) float64; fully masked rows give zeros
    before the output projection (so out = b_o there), as torch's need_weights=False path does.
    """
    query, key, value = (np.asarray(a, dtype=np.float64) for a in (query, key, value))
    w_in = np.asarray(in_proj_weight, dtype=np.float64)
    n_batch, n_q, embed = query.shape
    n_k = key.shape[1]
    if embed % num_heads:
        raise ValueError(f"mha_ref: embed_dim {embed} must be divisible by num_heads {num_heads}")
    if w_in.shape != (3 * embed, embed) or key.shape != (n_batch, n_k, embed) or value.shape != key.shape:
        raise ValueError(f"mha_ref: expected in_proj_weight (3E, E) = {(3 * embed, embed)}, key/value "
                         f"(B, S, E); got {w_in.shape}, {key.shape}, {value.shape}")
    b_in = np.zeros(3 * embed) if in_proj_bias is None else np.asarray(in_proj_bias, dtype=np.float64)
    w_q, w_k, w_v = w_in[:embed], w_in[embed:2 * embed], w_in[2 * embed:]
    b_q, b_k, b_v = b_in[:embed], b_in[embed:2 * embed], b_in[2 * embed:]
    head = embed // num_heads

    def split_heads(t):                     # (B, T, E) -> (B, num_heads, T, E_h)
        return t.reshape(t.shape[0], t.shape[1], num_heads, head).transpose(0, 2, 1, 3)

    q = split_heads(query @ w_q.T + b_q)
    k = split_heads(key @ w_k.T + b_k)
    v = split_heads(value @ w_v.T + b_v)

    bias = np.zeros((n_batch, num_heads, n_q, n_k))
    if attn_mask is not None:
        m = _mha_mask_to_bias(attn_mask)
        if m.ndim == 3:
            if m.shape != (n_batch * num_heads, n_q, n_k):
                raise ValueError(f"mha_ref: 3-D attn_mask must be (B*num_heads, L, S) = "
                                 f"{(n_batch * num_heads, n_q, n_k)}, got {m.shape}")
            m = m.reshape(n_batch, num_heads, n_q, n_k)
        elif m.shape != (n_q, n_k):
            raise ValueError(f"mha_ref: 2-D attn_mask must be (L, S) = {(n_q, n_k)}, got {m.shape}")
        bias = bias + m
    if key_padding_mask is not None:
        m = _mha_mask_to_bias(key_padding_mask)
        if m.shape != (n_batch, n_k):
            raise ValueError(f"mha_ref: key_padding_mask must be (B, S) = {(n_batch, n_k)}, got {m.shape}")
        bias = bias + m[:, None, None, :]
    if is_causal:
        bias = np.where(np.tril(np.ones((n_q, n_k), dtype=bool)), bias, -np.inf)
    heads = sdpa_ref(q, k, v, attn_mask=bias, scale=1.0 / math.sqrt(head))
    concat = heads.transpose(0, 2, 1, 3).reshape(n_batch, n_q, embed)
    out = concat @ np.asarray(out_proj_weight, dtype=np.float64).T
    if out_proj_bias is not None:
        out = out + np.asarray(out_proj_bias, dtype=np.float64)
    return out


def alibi_slopes(num_heads):
    """ALiBi head slopes m_1..m_n (Press et al. 2022, and the authors' reference code).

    n a power of two: m_h = 2^(-8h/n), h = 1..n, a geometric sequence starting at 2^(-8/n) with ratio
    2^(-8/n) (n = 8: 1/2, 1/4, ..., 1/256).
    Otherwise ("standard interpolation rule" of the reference code): with c = 2^floor(log2 n),
    take the c slopes of c heads, then the slopes of 2c heads at the odd positions h = 1, 3, 5, ...
    (every other one, i.e. the values between consecutive c-head slopes), the first n - c of them.
    """
    if num_heads < 1:
        raise ValueError(f"alibi_slopes: num_heads must be >= 1, got {num_heads}")

    def power_of_two(n):
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

    c = 2 ** math.floor(math.log2(num_heads))
    slopes = power_of_two(c)
    if c < num_heads:
        slopes += power_of_two(2 * c)[0::2][:num_heads - c]
    return np.array(slopes, dtype=np.float64)


def alibi_bias(num_heads, L, S, causal):
    """ALiBi additive attention bias (num_heads, L, S), query i in 0..L-1, key j in 0..S-1.

        bias[h, i, j] = -m_h * (i - j)   for j <= i
        bias[h, i, j] = -inf             for j > i   if causal (the causal mask is part of the bias)
        bias[h, i, j] = -m_h * (j - i)   for j > i   if not causal (symmetric -m_h |i - j|)

    Positions are aligned at the start (top-left), as SDPA's is_causal. Add it to the scores (SDPA float
    attn_mask). The paper only defines the causal case; the symmetric form is the common encoder variant.
    """
    m = alibi_slopes(num_heads)[:, None, None]
    dist = np.arange(L)[:, None] - np.arange(S)[None, :]      # i - j
    bias = -m * np.abs(dist)
    if causal:
        bias = np.where(dist[None] >= 0, bias, -np.inf)
    return bias.astype(np.float64)


def t5_relative_bucket(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    """T5 relative-position bucket (Raffel et al. 2020; Mesh-TF / HF ``_relative_position_bucket``).

    relative_position = key_position - query_position (int array). With n = relative_position:
    - bidirectional: num_buckets //= 2; offset = num_buckets if n > 0 else 0; r = |n|.
      unidirectional: offset = 0; r = max(-n, 0) (future keys all fall in bucket 0).
    - max_exact = num_buckets // 2. If r < max_exact the bucket is r (one bucket per distance).
    - else bucket = min(max_exact + trunc(log(r / max_exact) / log(max_distance / max_exact)
                                          * (num_buckets - max_exact)), num_buckets - 1)
      (logarithmic buckets up to max_distance, everything farther shares the last one).
    Returns offset + bucket, int64, same shape. The log is taken in float32 as in HF/Mesh-TF (its
    truncation decides which bucket a boundary distance falls in).
    """
    n = np.asarray(relative_position, dtype=np.int64)
    offset = np.zeros_like(n)
    if bidirectional:
        num_buckets //= 2
        offset = np.where(n > 0, num_buckets, 0)
        r = np.abs(n)
    else:
        r = np.maximum(-n, 0)
    max_exact = num_buckets // 2
    # r < max_exact never uses the log; maximum(r, 1) only keeps log(0) out of the unused branch.
    ratio = np.maximum(r, 1).astype(np.float32) / np.float32(max_exact)
    scaled = np.log(ratio) / np.float32(math.log(max_distance / max_exact)) * np.float32(num_buckets - max_exact)
    large = np.minimum(max_exact + scaled.astype(np.int64), num_buckets - 1)
    return (offset + np.where(r < max_exact, r, large)).astype(np.int64)


def t5_bias(table, L, S, bidirectional=True, num_buckets=32, max_distance=128):
    """T5's additive score bias (H, L, S): bias[h, i, j] = table[h, bucket(j - i)] for queries i < L and
    keys j < S, with :func:`t5_relative_bucket` (key minus query, as HF / Mesh-TF). table (H, num_buckets)."""
    rel = np.arange(S)[None, :] - np.arange(L)[:, None]
    buckets = t5_relative_bucket(rel, bidirectional, num_buckets, max_distance)
    return np.asarray(table, dtype=np.float64)[:, buckets]
