"""Softmax attention is the ITNet operator with a dot-product kernel and softmax normalisation.

    y_i = sum_h W_O^h sum_{j in S(i)} A^h_ij (W_V^h f_j + b_V^h) + b,   A^h_ij = softmax_j(s^h_ij)

The derivation, the mask conventions and the relative biases are in docs/theory.md §3 and §4; here
is the construction.

1. nn.MultiheadAttention (batch_first). With [W_q; W_k; W_v] = in_proj_weight, head h scores
   s^h_ij = (W_q^h x_i + b_q^h).(W_k^h k_j + b_k^h)/sqrt(E/H) + m^h_ij (m: the masks as additive
   scores). Each head has its own softmax, so MHA is a SUM OF H SEPARATELY NORMALISED TRANSFORMS,
   which is what IntegralTransform computes with a kernel of H heads. Keys and values are two
   source arrays but the operator has one feature vector per source point: f_j = [k_j ; v_j] (2E),
   and the maps select their halves, W_k' = [W_k | 0], W_V = [0 | W_v] (exact zeros change no bit);
   W_O = out_proj_weight.
2. torch SDPA over (B, H, L, E): the same kernel with identity maps, f_i = [q_i^1 .. q_i^H],
   f_j = [k_j^1 .. k_j^H ; v_j^1 .. v_j^H]; ALiBi and T5 biases are DotProductKernel(position_bias=...).

Both layers keep the conventional weights (Parameters when given as arrays, the caller's Tensors
else); :meth:`maps` derives the operator's parameters from them with engine ops at every call
(``functional_call`` fills the empty slots of the IntegralTransform), so backward reaches the
weights; ``itnet()`` exports the bound transform as a standalone module. torch's calling
conventions (mask polarity, head layout) are converted in :mod:`itnet_np.proofs._adapters`.
Attention as a Nadaraya-Watson smoother is :mod:`itnet_np.proofs.nadaraya_watson`, Cordonnier's
convolution-as-attention limit :mod:`itnet_np.proofs.cordonnier`.

Proof: tests/proofs/test_attention.py; suite checks in :mod:`itnet_np.proofs.checks.attention`.
"""
import math

import numpy as np

from itnet_np.autograd import ops
from itnet_np.autograd.ops._util import raw
from itnet_np.errors import ConfigError, ShapeError, describe
from itnet_np.nn.module import Module, functional_call
from itnet_np.transform import DotProductKernel, IntegralTransform

from ._adapters import as_array, causal_block, check_shape, heads_first, heads_last, torch_masks
from ._common import materialize, shape_of, template, weight

__all__ = [
    "SDPA",
    "MultiheadAttention",
    "mha_as_itnet",
    "mha_from_itnet",
    "scaled_dot_product_attention",
    "sdpa_as_itnet",
]


# ----- 1. nn.MultiheadAttention --------------------------------------------------------------------
class MultiheadAttention(Module):
    """torch.nn.MultiheadAttention(E, num_heads, batch_first=True) as an IntegralTransform (item 1 above).

    Holds in_proj_weight (3E, E), in_proj_bias (3E,) | None, out_proj_weight (E, E), out_proj_bias
    (E,) | None. ``layer(query, key, value, attn_mask=None, is_causal=False, key_padding_mask=None)``
    takes (B, L, E), (B, S, E), (B, S, E) and returns (B, L, E). attn_mask (L, S) or (B*H, L, S)
    and key_padding_mask (B, S): bool True = NOT allowed, float added. is_causal masks j > i.
    """

    def __init__(self, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, num_heads):
        super().__init__()
        shape = shape_of(in_proj_weight)
        if len(shape) != 2 or shape[0] != 3 * shape[1]:
            raise ShapeError(f"in_proj_weight: expected shape (3E, E) = [W_q; W_k; W_v], got "
                             f"{describe(raw(in_proj_weight))}")
        E, H = shape[1], int(num_heads)
        if H < 1 or E % H:
            raise ConfigError(f"MultiheadAttention: embed_dim={E} must be divisible by num_heads={num_heads}")
        if in_proj_bias is not None:
            check_shape("in_proj_bias", in_proj_bias, (3 * E,))
        check_shape("out_proj_weight", out_proj_weight, (E, E))
        if out_proj_bias is not None:
            check_shape("out_proj_bias", out_proj_bias, (E,))
        dtype = np.asarray(raw(in_proj_weight)).dtype
        dtype = dtype if dtype.kind == "f" else np.dtype(np.float64)
        self.embed_dim, self.num_heads, self.dtype = E, H, dtype
        for name, w in (("in_proj_weight", in_proj_weight), ("in_proj_bias", in_proj_bias),
                        ("out_proj_weight", out_proj_weight), ("out_proj_bias", out_proj_bias)):
            setattr(self, name, weight(w, name, "MultiheadAttention", dtype))
        biased = in_proj_bias is not None
        score = DotProductKernel(2 * E, heads=H, head_dim=E // H, query_features=E, bias=biased, dtype=dtype)
        # every parameter is a slice of the MHA weights: empty slots, filled per call (maps())
        self.transform = template(IntegralTransform(2 * E, E, score, query_features=E,
                                                    normalization="softmax", value_bias=biased,
                                                    bias=out_proj_bias is not None, dtype=dtype))

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"

    def maps(self):
        """The transform's parameters (functional_call names) from the MHA weights, with engine ops."""
        E, W, b = self.embed_dim, self.in_proj_weight, self.in_proj_bias
        zeros = np.zeros((E, E), self.dtype)
        maps = {"kernel.W_q": W[:E], "kernel.W_k": ops.concatenate([W[E:2 * E], zeros], axis=1),
                "W_V": ops.concatenate([zeros, W[2 * E:]], axis=1), "W_O": self.out_proj_weight}
        if b is not None:
            maps.update({"kernel.b_q": b[:E], "kernel.b_k": b[E:2 * E], "b_V": b[2 * E:]})
        if self.out_proj_bias is not None:
            maps["b"] = self.out_proj_bias
        return maps

    def itnet(self):
        """The IntegralTransform bound to the current weights, as a standalone module (sources
        f_j = [k_j ; v_j])."""
        return materialize(self.transform, self.maps())

    def forward(self, query, key, value, attn_mask=None, is_causal=False, key_padding_mask=None):
        E, H = self.embed_dim, self.num_heads
        qs = shape_of(query)
        if len(qs) != 3 or qs[2] != E:
            raise ShapeError(f"query: expected shape (B, L, {E}), got {describe(raw(query))}")
        B, L = qs[:2]
        ks = shape_of(key)
        if len(ks) != 3 or ks[0] != B or ks[2] != E:
            raise ShapeError(f"key: expected shape ({B}, S, {E}), got {describe(raw(key))}")
        S = ks[1]
        check_shape("value", value, (B, S, E))
        if attn_mask is not None:
            ms = shape_of(attn_mask)
            if ms not in ((L, S), (B * H, L, S)):
                raise ShapeError(f"attn_mask: expected shape ({L}, {S}) or (B*num_heads, L, S) = "
                                 f"{(B * H, L, S)}, got {describe(np.asarray(raw(attn_mask)))}")
            if len(ms) == 3:                       # (B*H, L, S), batch-major as torch
                attn_mask = ops.reshape(as_array(attn_mask), (B, H, L, S))
        if key_padding_mask is not None:
            check_shape("key_padding_mask", key_padding_mask, (B, S))
            key_padding_mask = ops.reshape(as_array(key_padding_mask), (B, 1, 1, S))
        causal = causal_block(L, S) if is_causal else None
        keep, bias = torch_masks([(attn_mask, True, "attn_mask"), (key_padding_mask, True, "key_padding_mask"),
                                  (causal, True, "is_causal")], B, H, L, S, self.dtype)
        source = ops.concatenate([key, value], axis=-1)
        return functional_call(self.transform, self.maps(), query, source=source, mask=keep, score_bias=bias)


def mha_as_itnet(in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, num_heads):
    """The ITNet layer equal to nn.MultiheadAttention(batch_first=True) with these weights."""
    return MultiheadAttention(in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, num_heads)


def mha_from_itnet(transform):
    """Reverse map: (in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, num_heads) arrays
    from a softmax IntegralTransform with a DotProductKernel, sources either [key ; value] with zero
    cross blocks (as built here) or one shared array (self attention)."""
    kernel = transform.kernel
    if not isinstance(kernel, DotProductKernel) or transform.normalization != "softmax":
        raise ConfigError("mha_from_itnet: needs a softmax IntegralTransform with a DotProductKernel")
    if not math.isclose(kernel.scale, 1.0 / math.sqrt(kernel.head_dim)) or kernel.position_bias is not None:
        raise ConfigError("mha_from_itnet: MHA needs scale 1/sqrt(head_dim) and no position bias")
    if transform.W_skip is not None or transform.quadrature != "uniform" or not transform.support.is_full:
        raise ConfigError("mha_from_itnet: MHA has no skip map, uniform quadrature and the full support")
    E = np.asarray(raw(kernel.W_q)).shape[0]
    Wk, Wv = np.asarray(raw(kernel.W_k)), np.asarray(raw(transform.W_V))
    if (transform.query_features, transform.out_features, transform.embed_dim) != (E, E, E) \
            or Wk.shape[1] not in (E, 2 * E):
        raise ConfigError(f"mha_from_itnet: MHA needs query, value and output widths equal to E = {E} and "
                          f"sources of width E or 2E; got {transform.query_features}, {transform.embed_dim}, "
                          f"{transform.out_features} and {Wk.shape[1]}")
    if Wk.shape[1] == 2 * E:
        if np.any(Wk[:, E:]) or np.any(Wv[:, :E]):
            raise ConfigError("mha_from_itnet: the key map must ignore the value half and vice versa")
        Wk, Wv = Wk[:, :E], Wv[:, E:]

    def vec(b):
        return np.zeros(E) if b is None else np.asarray(raw(b))
    biases = [kernel.b_q, kernel.b_k, transform.b_V]
    in_b = None if all(b is None for b in biases) else np.concatenate([vec(b) for b in biases])
    out_b = None if transform.b is None else np.array(raw(transform.b))
    return (np.concatenate([np.asarray(raw(kernel.W_q)), Wk, Wv]), in_b, np.array(raw(transform.W_O)),
            out_b, kernel.heads)


# ----- 2. scaled_dot_product_attention with relative biases ----------------------------------------
class SDPA(Module):
    """torch SDPA over q (B, H, L, E), k (B, H, S, E), v (B, H, S, Ev) -> (B, H, L, Ev) (item 2 above).

    ``SDPA(num_heads, head_dim, value_dim=None, scale=None, position_bias=None|'alibi'|'t5',
    table=None, num_buckets=32, max_distance=128, bidirectional=True, dtype=float64)``; ``table``
    (H, num_buckets) is T5's bias table (array -> Parameter, Tensor kept; random when None).
    ``layer(q, k, v, attn_mask=None, is_causal=False)``: bool mask True = ATTEND, float added,
    broadcastable to (B, H, L, S); is_causal keeps tril(L, S) and excludes attn_mask.
    """

    def __init__(self, num_heads, head_dim, value_dim=None, scale=None, position_bias=None, table=None,
                 num_buckets=32, max_distance=128, bidirectional=True, dtype=np.float64):
        super().__init__()
        H, E = int(num_heads), int(head_dim)
        Ev = int(value_dim or head_dim)
        self.num_heads, self.head_dim, self.value_dim, self.dtype = H, E, Ev, np.dtype(dtype)
        if position_bias not in (None, "alibi", "t5"):
            raise ConfigError(f"SDPA: position_bias must be None, 'alibi' or 't5', got {position_bias!r}")
        score = DotProductKernel(H * (E + Ev), heads=H, head_dim=E, query_features=H * E, scale=scale,
                                 position_bias=position_bias, num_buckets=num_buckets,
                                 max_distance=max_distance, bidirectional=bidirectional, dtype=dtype)
        # identity maps (and T5's table, the layer's own weight) are supplied per call (maps())
        self.transform = template(IntegralTransform(H * (E + Ev), H * Ev, score, query_features=H * E,
                                                    normalization="softmax", bias=False, dtype=dtype))
        self.t5_table = None
        if position_bias == "t5":
            if table is None:
                table = np.random.default_rng(0).uniform(-0.1, 0.1, (H, num_buckets)).astype(dtype)
            check_shape("table", table, (H, num_buckets), " (num_heads, num_buckets)")
            self.t5_table = weight(table, "table", "SDPA", self.dtype)

    def extra_repr(self):
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}, value_dim={self.value_dim}"

    def maps(self):
        """Identity maps: multiplying by 1 and adding exact zeros reproduces q, k, v bit for bit."""
        H, E, Ev, dtype = self.num_heads, self.head_dim, self.value_dim, self.dtype
        eye_k, eye_v = np.eye(H * E, dtype=dtype), np.eye(H * Ev, dtype=dtype)
        maps = {"kernel.W_q": eye_k, "W_O": eye_v,
                "kernel.W_k": np.concatenate([eye_k, np.zeros((H * E, H * Ev), dtype)], 1),
                "W_V": np.concatenate([np.zeros((H * Ev, H * E), dtype), eye_v], 1)}
        if self.t5_table is not None:
            maps["kernel.position_bias.table"] = self.t5_table
        return maps

    def forward(self, query, key, value, attn_mask=None, is_causal=False):
        H, E, Ev = self.num_heads, self.head_dim, self.value_dim
        qs = shape_of(query)
        if len(qs) != 4 or qs[1] != H or qs[3] != E:
            raise ShapeError(f"query: expected shape (B, {H}, L, {E}), got {describe(raw(query))}")
        B, L = qs[0], qs[2]
        ks = shape_of(key)
        if len(ks) != 4 or ks[:2] != (B, H) or ks[3] != E:
            raise ShapeError(f"key: expected shape ({B}, {H}, S, {E}), got {describe(raw(key))}")
        S = ks[2]
        check_shape("value", value, (B, H, S, Ev))
        if is_causal and attn_mask is not None:
            raise ConfigError("SDPA: pass either attn_mask or is_causal=True, not both (as torch)")
        causal = causal_block(L, S) if is_causal else None
        keep, bias = torch_masks([(attn_mask, False, "attn_mask"), (causal, True, "is_causal")],
                                 B, H, L, S, self.dtype)
        source = ops.concatenate([heads_last(key, B, S, H, E), heads_last(value, B, S, H, Ev)], axis=-1)
        y = functional_call(self.transform, self.maps(), heads_last(query, B, L, H, E), source=source,
                            mask=keep, score_bias=bias)
        return heads_first(y, B, L, H, Ev)


def sdpa_as_itnet(num_heads, head_dim, value_dim=None, **options):
    """The ITNet layer equal to torch SDPA (plus an optional ALiBi / T5 relative bias); see :class:`SDPA`."""
    return SDPA(num_heads, head_dim, value_dim, **options)


def scaled_dot_product_attention(query, key, value, attn_mask=None, is_causal=False, scale=None):
    """Functional form: torch.nn.functional.scaled_dot_product_attention computed by the operator."""
    qs, vs = shape_of(query), shape_of(value)
    if len(qs) != 4 or len(vs) != 4:
        raise ShapeError(f"scaled_dot_product_attention: expected q, k, v of shape (B, H, L|S, E), got "
                         f"{qs}, {shape_of(key)}, {vs}")
    layer = SDPA(qs[1], qs[3], vs[3], scale=scale, dtype=np.asarray(raw(query)).dtype)
    return layer(query, key, value, attn_mask=attn_mask, is_causal=is_causal)
