"""Softmax attention is the ITNet operator with a dot-product kernel and softmax normalisation.

    y_i = sum_h W_O^h sum_{j in S(i)} A^h_ij (W_V^h f_j + b_V^h) + b,   A^h_ij = softmax_j(s^h_ij)

1. Multi-head attention (theory §2; torch.nn.MultiheadAttention, batch_first). With [W_q; W_k; W_v] =
   in_proj_weight, head h's score is s^h_ij = (W_q^h x_i + b_q^h).(W_k^h k_j + b_k^h)/sqrt(E/H) + m^h_ij,
   m the attention/padding masks as additive scores. The softmax is taken per head, so MHA is a SUM OF
   H SEPARATELY NORMALISED TRANSFORMS, which is what IntegralTransform does with a kernel of H heads.
   Cross attention has two source arrays (key and value) but the operator one feature vector per
   source point: we take f_j = [k_j ; v_j] (2E), and the maps select their halves exactly:
   W_k' = [W_k | 0], W_V = [0 | W_v] (adding exact zeros changes no bit). W_O = out_proj_weight.
   Masks: a bool entry blocks (True = NOT allowed, torch MHA), a float entry is added, a float -inf
   blocks. Blocks become the operator's support mask, per head where they differ by head ((B*H, L, S)
   masks; mask (B, H, L, S)); the finite float entries are its additive ``score_bias``.
2. SDPA (torch.nn.functional.scaled_dot_product_attention) over (B, H, L, E): the same kernel with
   identity maps, f_i = [q_i^1 .. q_i^H], f_j = [k_j^1 .. k_j^H ; v_j^1 .. v_j^H]. Mask polarity is
   the OPPOSITE of MHA: bool True = ATTEND. Relative biases are DotProductKernel(position_bias=...):
   ALiBi b^h = -m_h |j - i| and T5 b^h = table[h, bucket(j - i)] (T5's offset is key minus query;
   the bucket's log is taken in float32 as HF / Mesh-TF do, which decides boundary distances).
Attention as a Nadaraya-Watson kernel smoother is :mod:`itnet_np.proofs.nadaraya_watson`;
Cordonnier et al.'s convolution-as-attention limit is :mod:`itnet_np.proofs.cordonnier`.

Pitfalls: MHA vs SDPA bool polarity; scale is 1/sqrt(head_dim); fully masked rows give zeros
(the reference's convention, torch's need_weights=False path) and out = b_o; is_causal is the
top-left aligned tril(L, S); T5 buckets follow HF's float32 log.
Gradients: each layer keeps the conventional weights (Parameters when given as arrays, the caller's
Tensors else); the operator's parameters are empty slots of its IntegralTransform, filled at every
call with Tensors derived from the weights (``functional_call``), so backward reaches the weights;
``itnet()`` exports the bound transform as a standalone module.
Proof: tests/proofs/test_attention.py; the verification suite registers three checks below.
"""
import math

import numpy as np

from itnet_np.autograd import ops
from itnet_np.autograd.tensor import Tensor
from itnet_np.errors import ConfigError, ShapeError, describe
from itnet_np.nn.module import Module, functional_call
from itnet_np.transform import DotProductKernel, IntegralTransform
from itnet_np.verify import Measurement, directional_gradient_error, max_abs, reduction

from . import reference as R
from ._common import materialize, template, weight

__all__ = [
    "SDPA",
    "MultiheadAttention",
    "mha_as_itnet",
    "mha_from_itnet",
    "scaled_dot_product_attention",
    "sdpa_as_itnet",
]


# ----- small helpers -------------------------------------------------------------------------------
def _raw(a):
    return a.data if isinstance(a, Tensor) else a


def _shape(a):
    return tuple(np.shape(_raw(a)))


def _array(a):
    """A Tensor as given, anything else (nested lists too) as an array."""
    return a if isinstance(a, Tensor) else np.asarray(a)


def _float_dtype(value):
    dtype = np.asarray(_raw(value)).dtype
    return dtype if dtype.kind == "f" else np.dtype(np.float64)


def _check(name, value, expected, why=""):
    got = _shape(value)
    if got != tuple(expected):
        raise ShapeError(f"{name}: expected shape {tuple(expected)}{why}, got {describe(_raw(value))}")


def _split(mask, shape4, true_blocks, name):
    """One mask -> (blocked raw bool, additive float or None), both broadcastable to shape4."""
    data = np.asarray(_raw(mask))
    if data.ndim > 4 or any(a not in (1, b) for a, b in zip(data.shape[::-1], shape4[::-1])):
        raise ShapeError(f"{name}: expected a shape broadcastable to {shape4}, got {describe(data)}")
    view = (1,) * (4 - data.ndim) + data.shape
    if data.dtype == bool:
        blocked = data if true_blocks else ~data
        return blocked.reshape(view), None
    if data.dtype.kind != "f":
        raise ShapeError(f"{name}: expected a bool or floating mask, got {describe(data)}")
    blocked = np.isneginf(data)       # a float -inf is a block too; the rest is an additive score
    additive = ops.where(blocked, 0.0, mask) if blocked.any() else mask
    return blocked.reshape(view), ops.reshape(additive, view)


def _masks(parts, B, H, L, S, dtype):
    """(keep, score_bias) for the operator from torch-style (mask, true_blocks, name) parts, each
    broadcastable to (B, H, L, S): keep (B|1, H|1, L, S) bool (True = attend; the operator reads a
    head axis of 1 as a mask shared by the heads) or None, score_bias (B|1, H|1, L, S) or None."""
    blocked, additive = None, None
    for mask, true_blocks, name in parts:
        if mask is None:
            continue
        b, a = _split(mask, (B, H, L, S), true_blocks, name)
        b = np.broadcast_to(b, b.shape[:2] + (L, S))            # the operator wants full (L, S) axes
        blocked = b if blocked is None else blocked | b
        if a is not None:
            a = ops.broadcast_to(a, _shape(a)[:2] + (L, S))
            additive = a if additive is None else additive + a
    keep = None if blocked is None or not blocked.any() else ~blocked
    if additive is not None and not isinstance(additive, Tensor):
        additive = np.asarray(additive, dtype)
    return keep, additive


def _causal(L, S):
    return ~np.tril(np.ones((L, S), dtype=bool))              # True = blocked: j > i


# ----- 1. nn.MultiheadAttention --------------------------------------------------------------------
class MultiheadAttention(Module):
    """torch.nn.MultiheadAttention(E, num_heads, batch_first=True) as an IntegralTransform (see §1).

    Holds in_proj_weight (3E, E), in_proj_bias (3E,) | None, out_proj_weight (E, E), out_proj_bias
    (E,) | None. ``layer(query, key, value, attn_mask=None, is_causal=False, key_padding_mask=None)``
    takes (B, L, E), (B, S, E), (B, S, E) and returns (B, L, E). attn_mask (L, S) or (B*H, L, S)
    and key_padding_mask (B, S): bool True = NOT allowed, float added. is_causal masks j > i.
    """

    def __init__(self, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, num_heads):
        super().__init__()
        shape = _shape(in_proj_weight)
        if len(shape) != 2 or shape[0] != 3 * shape[1]:
            raise ShapeError(f"in_proj_weight: expected shape (3E, E) = [W_q; W_k; W_v], got "
                             f"{describe(_raw(in_proj_weight))}")
        E, H = shape[1], int(num_heads)
        if H < 1 or E % H:
            raise ConfigError(f"MultiheadAttention: embed_dim={E} must be divisible by num_heads={num_heads}")
        if in_proj_bias is not None:
            _check("in_proj_bias", in_proj_bias, (3 * E,))
        _check("out_proj_weight", out_proj_weight, (E, E))
        if out_proj_bias is not None:
            _check("out_proj_bias", out_proj_bias, (E,))
        dtype = _float_dtype(in_proj_weight)
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
        qs = _shape(query)
        if len(qs) != 3 or qs[2] != E:
            raise ShapeError(f"query: expected shape (B, L, {E}), got {describe(_raw(query))}")
        B, L = qs[:2]
        ks = _shape(key)
        if len(ks) != 3 or ks[0] != B or ks[2] != E:
            raise ShapeError(f"key: expected shape ({B}, S, {E}), got {describe(_raw(key))}")
        S = ks[1]
        _check("value", value, (B, S, E))
        if attn_mask is not None:
            ms = _shape(attn_mask)
            if ms not in ((L, S), (B * H, L, S)):
                raise ShapeError(f"attn_mask: expected shape ({L}, {S}) or (B*num_heads, L, S) = "
                                 f"{(B * H, L, S)}, got {describe(np.asarray(_raw(attn_mask)))}")
            if len(ms) == 3:                       # (B*H, L, S), batch-major as torch
                attn_mask = ops.reshape(_array(attn_mask), (B, H, L, S))
        if key_padding_mask is not None:
            _check("key_padding_mask", key_padding_mask, (B, S))
            key_padding_mask = ops.reshape(_array(key_padding_mask), (B, 1, 1, S))
        keep, bias = _masks([(attn_mask, True, "attn_mask"), (key_padding_mask, True, "key_padding_mask"),
                             (_causal(L, S) if is_causal else None, True, "is_causal")],
                            B, H, L, S, self.dtype)
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
    E = np.asarray(_raw(kernel.W_q)).shape[0]
    Wk, Wv = np.asarray(_raw(kernel.W_k)), np.asarray(_raw(transform.W_V))
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
        return np.zeros(E) if b is None else np.asarray(_raw(b))
    biases = [kernel.b_q, kernel.b_k, transform.b_V]
    in_b = None if all(b is None for b in biases) else np.concatenate([vec(b) for b in biases])
    out_b = None if transform.b is None else np.array(_raw(transform.b))
    return (np.concatenate([np.asarray(_raw(kernel.W_q)), Wk, Wv]), in_b, np.array(_raw(transform.W_O)),
            out_b, kernel.heads)


# ----- 2. scaled_dot_product_attention with relative biases ----------------------------------------
class SDPA(Module):
    """torch SDPA over q (B, H, L, E), k (B, H, S, E), v (B, H, S, Ev) -> (B, H, L, Ev) (see §2).

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
            _check("table", table, (H, num_buckets), " (num_heads, num_buckets)")
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
        qs = _shape(query)
        if len(qs) != 4 or qs[1] != H or qs[3] != E:
            raise ShapeError(f"query: expected shape (B, {H}, L, {E}), got {describe(_raw(query))}")
        B, L = qs[0], qs[2]
        ks = _shape(key)
        if len(ks) != 4 or ks[:2] != (B, H) or ks[3] != E:
            raise ShapeError(f"key: expected shape ({B}, {H}, S, {E}), got {describe(_raw(key))}")
        S = ks[2]
        _check("value", value, (B, H, S, Ev))
        if is_causal and attn_mask is not None:
            raise ConfigError("SDPA: pass either attn_mask or is_causal=True, not both (as torch)")
        keep, bias = _masks([(attn_mask, False, "attn_mask"),
                             (_causal(L, S) if is_causal else None, True, "is_causal")], B, H, L, S, self.dtype)

        def heads_last(t, n, d):                  # (B, H, n, d) -> (B, n, H d), head-major columns
            return ops.reshape(ops.transpose(t, (0, 2, 1, 3)), (B, n, H * d))
        source = ops.concatenate([heads_last(key, S, E), heads_last(value, S, Ev)], axis=-1)
        y = functional_call(self.transform, self.maps(), heads_last(query, L, E), source=source, mask=keep,
                            score_bias=bias)
        return ops.transpose(ops.reshape(y, (B, L, H, Ev)), (0, 2, 1, 3))


def sdpa_as_itnet(num_heads, head_dim, value_dim=None, **options):
    """The ITNet layer equal to torch SDPA (plus an optional ALiBi / T5 relative bias); see :class:`SDPA`."""
    return SDPA(num_heads, head_dim, value_dim, **options)


def scaled_dot_product_attention(query, key, value, attn_mask=None, is_causal=False, scale=None):
    """Functional form: torch.nn.functional.scaled_dot_product_attention computed by the operator."""
    qs, vs = _shape(query), _shape(value)
    if len(qs) != 4 or len(vs) != 4:
        raise ShapeError(f"scaled_dot_product_attention: expected q, k, v of shape (B, H, L|S, E), got "
                         f"{qs}, {_shape(key)}, {vs}")
    layer = SDPA(qs[1], qs[3], vs[3], scale=scale, dtype=np.asarray(_raw(query)).dtype)
    return layer(query, key, value, attn_mask=attn_mask, is_causal=is_causal)


# ----- verification suite (itnet verify) -----------------------------------------------------------
def _mha_case(rng):
    """A random nn.MultiheadAttention configuration: sizes, weights, inputs and masks of every kind."""
    B, L, S, H, d = (int(rng.integers(1, n)) for n in (3, 6, 6, 4, 4))
    E = H * d
    args = [rng.standard_normal(s) for s in ((B, L, E), (B, S, E), (B, S, E), (3 * E, E), (3 * E,), (E, E), (E,))]
    shape = [(L, S), (B * H, L, S)][int(rng.integers(2))]
    kind = ["none", "bool", "float"][int(rng.integers(3))]
    attn = None if kind == "none" else rng.random(shape) < 0.3 if kind == "bool" else rng.standard_normal(shape)
    pad = rng.random((B, S)) < 0.3 if rng.random() < 0.5 else None
    return args, H, {"attn_mask": attn, "key_padding_mask": pad, "is_causal": bool(rng.random() < 0.3)}


@reduction("MHA (torch.nn.MultiheadAttention)")
def _verify_mha(rng):
    """ITNet dot-product/softmax transform == nn.MultiheadAttention (cross attention, every mask kind)."""
    args, H, masks = _mha_case(rng)

    def itnet(q, k, v, W, b, Wo, bo):
        return mha_as_itnet(W, b, Wo, bo, H)(q, k, v, **masks)

    def ref(q, k, v, W, b, Wo, bo):
        return R.mha_ref(q, k, v, W, b, Wo, bo, H, **masks)
    return Measurement(forward=max_abs(itnet(*args), ref(*args)),
                       gradient=directional_gradient_error(itnet, ref, args, rng))


def _sdpa_case(rng, max_len=5):
    B, H, L, S, E, Ev = (int(rng.integers(1, n)) for n in (3, 6, max_len + 1, max_len + 1, 4, 4))
    return [rng.standard_normal(s) for s in ((B, H, L, E), (B, H, S, E), (B, H, S, Ev))], (H, L, S, E, Ev)


@reduction("SDPA + ALiBi")
def _verify_alibi(rng):
    """SDPA with DotProductKernel(position_bias='alibi') == sdpa_ref with the ALiBi bias, causal or not."""
    args, (H, L, S, E, Ev) = _sdpa_case(rng)
    causal = bool(rng.random() < 0.5)
    layer = sdpa_as_itnet(H, E, Ev, position_bias="alibi")

    def ref(q, k, v):
        return R.sdpa_ref(q, k, v, attn_mask=R.alibi_bias(H, L, S, causal))
    return Measurement(forward=max_abs(layer(*args, is_causal=causal), ref(*args)),
                       gradient=directional_gradient_error(lambda q, k, v: layer(q, k, v, is_causal=causal),
                                                           ref, args, rng))


def t5_config(rng):
    """A random (num_buckets, max_distance, bidirectional): any bucket count, the logarithmic range
    reachable by short sequences (max_distance a few buckets past the exact ones)."""
    nb, bidir = int(rng.integers(4, 41)), bool(rng.random() < 0.5)
    exact = (nb // 2 if bidir else nb) // 2
    return nb, int(rng.integers(exact + 1, 3 * exact + 9)), bidir


def t5_bias_ref(table, L, S, bidirectional, num_buckets, max_distance):
    """bias[h, i, j] = table[h, bucket(j - i)] from the reference bucket rule (key minus query)."""
    rel = np.arange(S)[None, :] - np.arange(L)[:, None]
    return np.asarray(table)[:, R.t5_relative_bucket(rel, bidirectional, num_buckets, max_distance)]


@reduction("SDPA + T5 bias")
def _verify_t5(rng):
    """SDPA with DotProductKernel(position_bias='t5') == sdpa_ref with table[h, bucket(j - i)], bool mask,
    any bucket count and max_distance (the float32 log of HF / Mesh-TF decides boundary buckets)."""
    args, (H, L, S, E, Ev) = _sdpa_case(rng, max_len=14)
    nb, md, bidir = t5_config(rng)
    scale = [None, 1.0][int(rng.integers(2))]
    mask = rng.random((L, S)) < 0.8                         # SDPA: True = attend
    table = rng.standard_normal((H, nb))

    def itnet(q, k, v, table):
        layer = sdpa_as_itnet(H, E, Ev, scale=scale, position_bias="t5", table=table, num_buckets=nb,
                              max_distance=md, bidirectional=bidir)
        return layer(q, k, v, attn_mask=mask)

    def ref(q, k, v, table):
        bias = np.where(mask, t5_bias_ref(table, L, S, bidir, nb, md), -np.inf)
        return R.sdpa_ref(q, k, v, attn_mask=bias, scale=scale)
    args = args + [table]
    return Measurement(forward=max_abs(itnet(*args), ref(*args)),
                       gradient=directional_gradient_error(itnet, ref, args, rng))
