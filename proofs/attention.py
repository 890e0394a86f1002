"""Softmax attention is the ITNet operator with a dot-product kernel and softmax normalisation.

    y_i = sum_h W_O^h sum_{j in S(i)} A^h_ij (W_V^h f_j + b_V^h) + b,   A^h_ij = softmax_j(s^h_ij)

1. Multi-head attention (theory §2; torch.nn.MultiheadAttention, batch_first). With [W_q; W_k; W_v] =
   in_proj_weight, head h's score is s^h_ij = (W_q^h x_i + b_q^h).(W_k^h k_j + b_k^h)/sqrt(E/H) + m^h_ij,
   m the attention/padding masks as additive scores. The softmax is taken per head, so MHA is a SUM OF
   H SEPARATELY NORMALISED TRANSFORMS, which is what IntegralTransform does with a kernel of H heads.
   Cross attention has two source arrays (key and value) but the operator one feature vector per
   source point: we take f_j = [k_j ; v_j] (2E), and the maps select their halves exactly:
   W_k' = [W_k | 0], W_V = [0 | W_v] (adding exact zeros changes no bit). W_O = out_proj_weight.
   Masks: a bool entry blocks (True = NOT allowed, torch MHA) and a float entry is added. Blocks
   shared by every head go to the operator's support mask; a per-head block ((B*H, L, S) masks)
   becomes a -inf score in :class:`PairBias`, a kernel that adds an explicit score table T^h_ij
   indexed by the grid positions i, j; float masks are its finite part.
2. SDPA (torch.nn.functional.scaled_dot_product_attention) over (B, H, L, E): the same kernel with
   identity maps, f_i = [q_i^1 .. q_i^H], f_j = [k_j^1 .. k_j^H ; v_j^1 .. v_j^H]. Mask polarity is
   the OPPOSITE of MHA: bool True = ATTEND. Relative biases are DotProductKernel(position_bias=...):
   ALiBi b^h = -m_h |j - i| and T5 b^h = table[h, bucket(j - i)] (T5's offset is key minus query).
3. Nadaraya-Watson (theory §3, exact). exp(tau q.k) = G(q - k) e^{tau|q|^2/2} e^{tau|k|^2/2} with
   G(u) = exp(-tau|u|^2/2); the q factor cancels in the normalisation, so
       softmax_j(tau q_i.k_j) v_j = sum_j w_j G(q_i - k_j) v_j / sum_j w_j G(q_i - k_j),  w_j = e^{tau|k_j|^2/2}:
   a kernel smoother with data sites at the keys (source positions p_j = k_j), evaluated at the
   queries (p_i = q_i), Gaussian kernel, normalisation 'sum' and quadrature weights w_j. G is an
   MLPKernel on 'dist2' with one hidden unit, W1 = -tau/2, activation exp. tau -> 0 gives the mean.
4. Cordonnier, Loukas & Jaggi (ICLR 2020): attention expresses any K x K convolution as alpha -> inf.
   Keys are ALL pixels of the zero-padded image (the padding zeros must be keys, or the border
   softmax renormalises over fewer pixels and is not zero-padded conv); queries sit at the output
   anchors s*i (the original pixels for 'same' padding). Head h <-> tap a_h with shift
   Delta_h = d*a_h - P and content-free score s^h = -alpha ||delta - Delta_h||^2, delta = k - q: an
   MLPKernel on ('dp', 'dist2') with hidden unit h: W1 = [-2 alpha Delta_h | -alpha] (dp = q - k),
   b1 = -alpha||Delta_h||^2, identity activation, W2 = I. W_V^h = I, W_O^h = W_conv[:, :, a_h] (no
   flip: torch conv is a cross-correlation), b = conv bias.
   Bound. For one head and query let u_k = W^(h) x_k and k* = q + Delta_h (a key). Then
       head - u_k* = sum_{k != k*} p_k (u_k - u_k*),  so  |head - u_k*| <= 2 M (1 - p_k*),
       1 - p_k* = S/(1 + S) <= S = sum_{k != k*} e^{-alpha||k - k*||^2} <= sum_{n in Z^2 \\ 0} e^{-alpha|n|^2}
               = theta_3(e^{-alpha})^2 - 1,    theta_3(q) = 1 + 2 sum_{n>=1} q^{n^2},
   and summing the N_h heads (the conv is their exact sum):
       ||MHSA_alpha(X) - Conv(X)||_inf <= 2 N_h M (theta_3(e^{-alpha})^2 - 1) ~ 8 N_h M e^{-alpha},
   M = max_{h,k} ||W^(h) x_k||_inf (:func:`cordonnier_bound`). The first-order term: with
   c = sum_h sum_{|n| = 1} (u_{k*+n} - u_{k*}) over the unit neighbours that are keys,
   |err - e^{-alpha} c| <= 2 N_h M (theta_3^2 - 1 - 4 e^{-alpha} + (theta_3^2 - 1)^2), so log err has
   slope -1 in alpha up to that relative error (tests/proofs/test_attention.py derives the band).
   Stride = queries at s*i; dilation = shifts d*a; groups = block-diagonal W^(h).

Pitfalls: MHA vs SDPA bool polarity; scale is 1/sqrt(head_dim); fully masked rows give zeros
(the reference's convention, torch's need_weights=False path) and out = b_o; is_causal is the
top-left aligned tril(L, S); T5 buckets must match HF's float32 log (see the report on t5_bucket).
Gradients: the ITNet parameters are derived from the conventional weights with engine ops at every
call, so backward reaches the weights (Parameters when given as arrays, the caller's Tensors else).
Proof: tests/proofs/test_attention.py; the verification suite registers five checks below.
"""
import math

import numpy as np

from itnet_np.autograd import ops
from itnet_np.autograd.backend import xp_of
from itnet_np.autograd.tensor import Tensor
from itnet_np.errors import ConfigError, ShapeError, describe
from itnet_np.nn.module import Module, Parameter
from itnet_np.transform import DotProductKernel, IntegralTransform, MLPKernel, SumKernel, grid_positions
from itnet_np.transform.kernels.base import Kernel, Projection
from itnet_np.verify import Measurement, directional_gradient_error, max_abs, reduction

from . import reference as R

__all__ = [
    "SDPA",
    "ConvAsAttention",
    "MultiheadAttention",
    "NadarayaWatsonAttention",
    "PairBias",
    "attention_as_nadaraya_watson",
    "conv_as_attention",
    "conv_from_itnet",
    "cordonnier_bound",
    "cordonnier_value_bound",
    "mha_as_itnet",
    "mha_from_itnet",
    "scaled_dot_product_attention",
    "sdpa_as_itnet",
    "theta3_minus_one",
]


# ----- small helpers -------------------------------------------------------------------------------
def _raw(a):
    return a.data if isinstance(a, Tensor) else a


def _shape(a):
    return tuple(np.shape(_raw(a)))


def _hold(module, name, value, dtype=None):
    """Keep a conventional weight: a Tensor as given (backward reaches the caller's leaf), an array
    as a Parameter (a trainable ITNet layer); None stays None."""
    if value is None or isinstance(value, Tensor):
        setattr(module, name, value)           # a Parameter registers, a plain Tensor stays a reference
    else:
        array = np.asarray(value)
        setattr(module, name, Parameter(array.astype(dtype or (array.dtype if array.dtype.kind == "f"
                                                                  else np.float64))))


def _unregister(module, *names):
    """Turn registered Parameters into plain slots that forward fills with derived Tensors."""
    for name in names:
        module._parameters.pop(name, None)
        object.__setattr__(module, name, None)


def _bind(module, **values):
    for name, value in values.items():
        object.__setattr__(module, name, value)


def _check(name, value, expected, why=""):
    got = _shape(value)
    if got != tuple(expected):
        raise ShapeError(f"{name}: expected shape {tuple(expected)}{why}, got {describe(_raw(value))}")


class PairBias(Kernel):
    """s^h_ij = T[b, h, p_i, p_j]: an explicit additive score table (attention mask / bias).

    ``table`` (B|1, H|1, N, M), a raw array or a Tensor (gradients reach it), is set per call; None
    scores 0. It is indexed by the integer grid positions of queries and sources (shared by the
    batch), so a tile of the projection is a tile of the table.
    """

    position_dim = 1

    def __init__(self, heads):
        super().__init__(heads)
        self.table = None

    def project(self, query, source):
        def index(p):
            p = _raw(p)
            return xp_of(p).rint(p[..., 0]).astype(np.intp)
        return Projection({"i": index(query.positions)}, {"j": index(source.positions)})

    def scores(self, proj):
        if self.table is None:
            return 0.0
        i, j = proj.query["i"][0], proj.source["j"][0]
        return self.table[:, :, i[:, None], j[None, :]]


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
    """(keep (1|B, L, S) for the operator or None, PairBias table or None) from (mask, true_blocks,
    name) parts, each broadcastable to (B, H, L, S): blocks shared by every head -> the support
    mask; per-head blocks -> -inf scores in the table; float entries -> the table's finite part."""
    blocked, additive = None, None
    for mask, true_blocks, name in parts:
        if mask is None:
            continue
        b, a = _split(mask, (B, H, L, S), true_blocks, name)
        # full (L, S) trailing axes: the support mask and the PairBias table are indexed by (i, j)
        b = np.broadcast_to(b, b.shape[:2] + (L, S))
        blocked = b if blocked is None else blocked | b
        if a is not None:
            a = ops.broadcast_to(a, _shape(a)[:2] + (L, S))
            additive = a if additive is None else additive + a
    keep = None
    if blocked is not None:
        shared = blocked.all(axis=1)                              # (B|1, L, S): every head blocked
        keep = None if not shared.any() else ~shared
        per_head = blocked & ~shared[:, None]
        if per_head.any():
            if additive is None:
                return keep, np.where(per_head, -np.inf, 0.0).astype(dtype)
            return keep, ops.where(per_head, -np.inf, _cast(additive, dtype))
    return keep, None if additive is None else _cast(additive, dtype)


def _cast(a, dtype):
    return a if isinstance(a, Tensor) else np.asarray(a, dtype)


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
        dtype = np.asarray(_raw(in_proj_weight)).dtype
        dtype = dtype if dtype.kind == "f" else np.dtype(np.float64)
        self.embed_dim, self.num_heads, self.dtype = E, H, dtype
        for name, w in (("in_proj_weight", in_proj_weight), ("in_proj_bias", in_proj_bias),
                        ("out_proj_weight", out_proj_weight), ("out_proj_bias", out_proj_bias)):
            _hold(self, name, w, dtype)
        # the kernels are reached through self.transform; plain references here avoid listing them twice
        _bind(self, score=DotProductKernel(2 * E, heads=H, head_dim=E // H, query_features=E, bias=True,
                                           dtype=dtype), pair_bias=PairBias(H))
        self.transform = IntegralTransform(2 * E, E, SumKernel(self.score, self.pair_bias), query_features=E,
                                           normalization="softmax", value_bias=True, dtype=dtype)
        _unregister(self.score, "W_q", "W_k", "b_q", "b_k")
        _unregister(self.transform, "W_V", "b_V", "W_O", "b")

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"

    def itnet(self):
        """The IntegralTransform with its parameters bound to the current conventional weights."""
        E, W, b = self.embed_dim, self.in_proj_weight, self.in_proj_bias
        zeros = np.zeros((E, E), self.dtype)
        _bind(self.score, W_q=W[:E], W_k=ops.concatenate([W[E:2 * E], zeros], axis=1),
              b_q=None if b is None else b[:E], b_k=None if b is None else b[E:2 * E])
        _bind(self.transform, W_V=ops.concatenate([zeros, W[2 * E:]], axis=1),
              b_V=None if b is None else b[2 * E:], W_O=self.out_proj_weight, b=self.out_proj_bias)
        return self.transform

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
            if len(ms) == 3:
                attn_mask = ops.reshape(attn_mask, (B, H, L, S)) if isinstance(attn_mask, Tensor) \
                    else np.asarray(attn_mask).reshape(B, H, L, S)
        if key_padding_mask is not None:
            _check("key_padding_mask", key_padding_mask, (B, S))
            key_padding_mask = ops.reshape(key_padding_mask, (B, 1, 1, S)) if isinstance(
                key_padding_mask, Tensor) else np.asarray(key_padding_mask).reshape(B, 1, 1, S)
        keep, table = _masks([(attn_mask, True, "attn_mask"), (key_padding_mask, True, "key_padding_mask"),
                              (_causal(L, S) if is_causal else None, True, "is_causal")],
                             B, H, L, S, self.dtype)
        self.pair_bias.table = table
        transform = self.itnet()
        return transform(query, source=ops.concatenate([key, value], axis=-1), mask=keep)


def mha_as_itnet(in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, num_heads):
    """The ITNet layer equal to nn.MultiheadAttention(batch_first=True) with these weights."""
    return MultiheadAttention(in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, num_heads)


def mha_from_itnet(transform):
    """Reverse map: (in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, num_heads) arrays
    from a softmax IntegralTransform with a DotProductKernel (optionally inside a SumKernel), sources
    either [key ; value] with zero cross blocks (as built here) or one shared array (self attention)."""
    kernel = transform.kernel
    if isinstance(kernel, SumKernel):
        kernel = next((k for k in kernel.kernels if isinstance(k, DotProductKernel)), None)
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
        _bind(self, score=DotProductKernel(H * (E + Ev), heads=H, head_dim=E, query_features=H * E, scale=scale,
                                           position_bias=position_bias, num_buckets=num_buckets,
                                           max_distance=max_distance, bidirectional=bidirectional, dtype=dtype),
              pair_bias=PairBias(H))
        self.transform = IntegralTransform(H * (E + Ev), H * Ev, SumKernel(self.score, self.pair_bias),
                                           query_features=H * E, normalization="softmax", bias=False, dtype=dtype)
        eye_k, eye_v = np.eye(H * E, dtype=dtype), np.eye(H * Ev, dtype=dtype)
        _unregister(self.score, "W_q", "W_k")
        _unregister(self.transform, "W_V", "W_O")
        # identity maps: multiplying by 1 and adding exact zeros reproduces q, k, v bit for bit
        _bind(self.score, W_q=eye_k, W_k=np.concatenate([eye_k, np.zeros((H * E, H * Ev), dtype)], 1))
        _bind(self.transform, W_V=np.concatenate([np.zeros((H * Ev, H * E), dtype), eye_v], 1), W_O=eye_v)
        if position_bias == "t5":
            if table is None:
                table = np.random.default_rng(0).uniform(-0.1, 0.1, (H, num_buckets)).astype(dtype)
            _check("table", table, (H, num_buckets), " (num_heads, num_buckets)")
            _hold(self, "t5_table", table, self.dtype)
            _unregister(self.score.position_bias, "table")
            _bind(self.score.position_bias, table=self.t5_table)

    def extra_repr(self):
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}, value_dim={self.value_dim}"

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
        keep, table = _masks([(attn_mask, False, "attn_mask"), (_causal(L, S) if is_causal else None, True, "is_causal")],
                             B, H, L, S, self.dtype)
        self.pair_bias.table = table

        def heads_last(t, n, d):                  # (B, H, n, d) -> (B, n, H d), head-major columns
            return ops.reshape(ops.transpose(t, (0, 2, 1, 3)), (B, n, H * d))
        source = ops.concatenate([heads_last(key, S, E), heads_last(value, S, Ev)], axis=-1)
        y = self.transform(heads_last(query, L, E), source=source, mask=keep)
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


# ----- 3. attention = Nadaraya-Watson --------------------------------------------------------------
class NadarayaWatsonAttention(Module):
    """softmax_j(tau q_i.k_j) v_j as a Gaussian Nadaraya-Watson smoother (see §3).

    ``NadarayaWatsonAttention(dim, value_dim, tau=1.0, dtype=float64)``; tau a float (-> Parameter)
    or a Tensor. ``layer(q (B, L, d), k (B, S, d), v (B, S, dv), mask=None, is_causal=False)``;
    mask (L, S) | (B, L, S) bool, True = keep (Tsai et al.'s set filter M).
    """

    def __init__(self, dim, value_dim, tau=1.0, dtype=np.float64):
        super().__init__()
        self.dim, self.value_dim, self.dtype = int(dim), int(value_dim), np.dtype(dtype)
        _hold(self, "tau", tau if isinstance(tau, Tensor) else np.asarray(tau, self.dtype), self.dtype)
        _bind(self, gauss=MLPKernel(self.value_dim, heads=1, hidden=1, inputs=("dist2",), position_dim=self.dim,
                                    query_features=self.dim, activation=ops.exp, dtype=dtype))
        self.transform = IntegralTransform(self.value_dim, self.value_dim, self.gauss, query_features=self.dim,
                                           normalization="sum", bias=False, dtype=dtype)
        _unregister(self.gauss, "W1", "b1", "W2", "b2")
        _unregister(self.transform, "W_V", "W_O")
        one, zero = np.ones((1, 1), dtype), np.zeros(1, dtype)
        eye = np.eye(self.value_dim, dtype=dtype)
        _bind(self.gauss, b1=zero, W2=one, b2=zero)
        _bind(self.transform, W_V=eye, W_O=eye)

    def forward(self, query, key, value, mask=None, is_causal=False):
        d, dv = self.dim, self.value_dim
        qs, ks = _shape(query), _shape(key)
        if len(qs) != 3 or qs[2] != d:
            raise ShapeError(f"query: expected shape (B, L, {d}), got {describe(_raw(query))}")
        if len(ks) != 3 or ks[0] != qs[0] or ks[2] != d:
            raise ShapeError(f"key: expected shape ({qs[0]}, S, {d}), got {describe(_raw(key))}")
        _check("value", value, (ks[0], ks[1], dv))
        if is_causal:
            causal = ~_causal(qs[1], ks[1])
            mask = causal if mask is None else np.asarray(mask) & causal
        weights = ops.exp(ops.sum(key * key, axis=-1) * (self.tau * 0.5))  # w_j = exp(tau |k_j|^2 / 2)
        return self.itnet()(query, positions=query, source=value, source_positions=key,
                            weights=weights, mask=mask)

    def itnet(self):
        """The IntegralTransform with G(u) = exp(-tau |u|^2 / 2) bound to the current tau."""
        _bind(self.gauss, W1=ops.reshape(self.tau * -0.5, (1, 1)))
        return self.transform


def attention_as_nadaraya_watson(dim, value_dim, tau=1.0, dtype=np.float64):
    """The NW smoother equal to softmax_j(tau q_i.k_j) v_j; see :class:`NadarayaWatsonAttention`."""
    return NadarayaWatsonAttention(dim, value_dim, tau, dtype)


# ----- 4. Cordonnier et al.: convolution as attention, alpha -> inf --------------------------------
def theta3_minus_one(alpha):
    """theta_3(e^{-alpha}) - 1 = 2 sum_{n >= 1} e^{-alpha n^2} (alpha > 0; scalar or array), summed
    directly (no cancellation) until the terms fall below the float64 range."""
    a = np.asarray(alpha, dtype=np.float64)
    if np.any(~(a > 0)):
        raise ConfigError(f"theta3_minus_one: alpha must be > 0, got {alpha!r}")
    n = np.arange(1, math.ceil(math.sqrt(750.0 / float(a.min()))) + 2, dtype=np.float64)
    return 2.0 * np.exp(-a[..., None] * n * n).sum(axis=-1)


def cordonnier_bound(alpha, num_heads, value_bound, dim=2):
    """2 N_h M (theta_3(e^{-alpha})^dim - 1): the bound on ||MHSA_alpha(X) - Conv(X)||_inf derived in
    the module docstring (§4); M = :func:`cordonnier_value_bound`, dim = 2 for images."""
    return 2.0 * num_heads * value_bound * np.expm1(dim * np.log1p(theta3_minus_one(alpha)))


def _dense_weight(weight, groups):
    """(C_out, C_in/G, kh, kw) -> block-diagonal (C_out, C_in, kh, kw) (engine ops: grads flow)."""
    if groups == 1:
        return weight
    c_out, cin_g = _shape(weight)[:2]
    o, c = np.arange(c_out)[:, None], np.arange(cin_g * groups)[None, :]
    local = c - (o // (c_out // groups)) * cin_g
    inside = (local >= 0) & (local < cin_g)
    picked = weight[np.broadcast_to(o, inside.shape), np.clip(local, 0, cin_g - 1)]
    return picked * inside[:, :, None, None].astype(np.asarray(_raw(weight)).dtype)


def cordonnier_value_bound(x, weight, groups=1):
    """M = max over heads h (taps a), pixels k, batch and channels of |W[:, :, a] x_k| (padding zeros
    give 0, so the original pixels suffice). x (B, C_in, H, W), weight (C_out, C_in/G, kh, kw)."""
    w = np.asarray(_raw(_dense_weight(Tensor(np.asarray(_raw(weight))), groups)))
    return float(np.abs(np.einsum("ocab,ncij->naboij", w, np.asarray(_raw(x)))).max())


class ConvAsAttention(Module):
    """torch conv2d(x, weight, bias, stride, padding, dilation, groups) as K^2-head softmax attention
    with Cordonnier's quadratic relative score at finite alpha (see §4); exact as alpha -> inf.

    ``ConvAsAttention(weight, bias=None, alpha=30.0, stride=1, padding='same', dilation=1, groups=1)``;
    padding int, (P1, P2) or 'same' (stride 1; the odd extra zero on the right, as torch).
    ``layer(x (B, C_in, H, W), alpha=None) -> (B, C_out, H_out, W_out)``; ``itnet(alpha)`` is the bound
    IntegralTransform; the error is at most :func:`cordonnier_bound`.
    """

    def __init__(self, weight, bias=None, alpha=30.0, stride=1, padding="same", dilation=1, groups=1):
        super().__init__()
        ws = _shape(weight)
        if len(ws) != 4:
            raise ShapeError(f"weight: expected shape (C_out, C_in/groups, kh, kw), got {describe(_raw(weight))}")
        c_out, cin_g, kh, kw = ws
        groups = int(groups)
        if groups < 1 or c_out % groups:
            raise ConfigError(f"ConvAsAttention: C_out={c_out} (weight {ws}) is not divisible by groups={groups}")
        if bias is not None:
            _check("bias", bias, (c_out,))
        pair = lambda v: (int(v), int(v)) if np.ndim(v) == 0 else tuple(int(u) for u in v)
        (s1, s2), (d1, d2) = pair(stride), pair(dilation)
        if min(s1, s2, d1, d2) < 1:
            raise ConfigError(f"ConvAsAttention: stride and dilation must be >= 1, got {stride}, {dilation}")
        if isinstance(padding, str):
            if padding != "same" or (s1, s2) != (1, 1):
                raise ConfigError(f"ConvAsAttention: padding must be an int, a pair or 'same' (stride 1 "
                                  f"only), got {padding!r} with stride {stride}")
            tot = (d1 * (kh - 1), d2 * (kw - 1))
            self.pads = tuple((t // 2, t - t // 2) for t in tot)
        else:
            self.pads = tuple((p, p) for p in pair(padding))
        dtype = np.asarray(_raw(weight)).dtype
        self.dtype = dtype if dtype.kind == "f" else np.dtype(np.float64)
        self.in_channels, self.out_channels, self.groups = cin_g * groups, c_out, groups
        self.kernel_size, self.stride, self.dilation, self.alpha = (kh, kw), (s1, s2), (d1, d2), float(alpha)
        _hold(self, "weight", weight, self.dtype)
        _hold(self, "bias", bias, self.dtype)
        taps = np.stack(np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij"), -1).reshape(-1, 2)
        self.shifts = taps * np.array([d1, d2]) - np.array([self.pads[0][0], self.pads[1][0]])  # Delta_h
        heads, cin = kh * kw, self.in_channels
        _bind(self, score=MLPKernel(cin, heads=heads, hidden=heads, inputs=("dp", "dist2"), position_dim=2,
                                    query_features=1, activation="identity", dtype=self.dtype))
        self.transform = IntegralTransform(cin, c_out, self.score, query_features=1, embed_dim=heads * cin,
                                           normalization="softmax", bias=bias is not None, dtype=self.dtype)
        _unregister(self.score, "W1", "b1", "W2", "b2")
        _unregister(self.transform, "W_V", "W_O", "b")
        _bind(self.score, W2=np.eye(heads, dtype=self.dtype), b2=np.zeros(heads, self.dtype))
        _bind(self.transform, W_V=np.tile(np.eye(cin, dtype=self.dtype), (heads, 1)))   # W_V^h = I

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, alpha={self.alpha:g}, "
                f"stride={self.stride}, pads={self.pads}, dilation={self.dilation}, groups={self.groups}")

    def itnet(self, alpha=None):
        """The IntegralTransform at ``alpha``: s^h_ij = -alpha ||(p_j - p_i) - Delta_h||^2, W_O^h = W[:, :, a_h]."""
        alpha = self.alpha if alpha is None else float(alpha)
        D = self.shifts.astype(self.dtype)
        W1 = np.empty((len(D), 3), self.dtype)
        W1[:, self.score.layout["dp"]] = -2.0 * alpha * D           # dp = p_i - p_j = -delta
        W1[:, self.score.layout["dist2"]] = -alpha
        _bind(self.score, W1=W1, b1=-alpha * (D * D).sum(axis=1))
        w = _dense_weight(self.weight, self.groups)
        c_out, cin = self.out_channels, self.in_channels
        _bind(self.transform, W_O=ops.reshape(ops.transpose(w, (0, 2, 3, 1)), (c_out, len(D) * cin)), b=self.bias)
        return self.transform

    def forward(self, x, alpha=None):
        xs = _shape(x)
        if len(xs) != 4 or xs[1] != self.in_channels:
            raise ShapeError(f"x: expected shape (B, {self.in_channels}, H, W), got {describe(_raw(x))}")
        B, _, H, W = xs
        (p1, q1), (p2, q2) = self.pads
        (kh, kw), (s1, s2), (d1, d2) = self.kernel_size, self.stride, self.dilation
        h_out, w_out = (H + p1 + q1 - d1 * (kh - 1) - 1) // s1 + 1, (W + p2 + q2 - d2 * (kw - 1) - 1) // s2 + 1
        if h_out < 1 or w_out < 1:
            raise ShapeError(f"x: a {H}x{W} image is too small for kernel {self.kernel_size} with pads {self.pads}")
        padded = ops.pad(x, ((0, 0), (0, 0), (p1, q1), (p2, q2)))      # the padding zeros are KEYS
        Hp, Wp = H + p1 + q1, W + p2 + q2
        keys = ops.reshape(ops.transpose(padded, (0, 2, 3, 1)), (B, Hp * Wp, self.in_channels))
        key_pos = grid_positions((Hp, Wp), origin=(-p1, -p2), dtype=self.dtype)
        query_pos = grid_positions((h_out, w_out), spacing=(s1, s2), dtype=self.dtype)
        blank = np.zeros((B, h_out * w_out, 1), self.dtype)          # content-free: W_qry = W_key = 0
        y = self.itnet(alpha)(blank, positions=query_pos, source=keys, source_positions=key_pos)
        return ops.transpose(ops.reshape(y, (B, h_out, w_out, self.out_channels)), (0, 3, 1, 2))


def conv_as_attention(weight, bias=None, alpha=30.0, stride=1, padding="same", dilation=1, groups=1):
    """The attention layer that tends to conv2d as alpha -> inf; see :class:`ConvAsAttention`."""
    return ConvAsAttention(weight, bias, alpha, stride, padding, dilation, groups)


def conv_from_itnet(layer, alpha=None):
    """Reverse map: (weight (C_out, C_in/G, kh, kw), bias) read off the IntegralTransform: the shift of
    head h is Delta_h = W1[h, dp] / (-2 alpha) with alpha = -W1[h, dist2], and W[:, :, a_h] = W_O^h W_V^h."""
    t = layer.itnet(alpha)
    W1 = np.asarray(_raw(t.kernel.W1))
    a = -W1[:, t.kernel.layout["dist2"]][:, 0]
    shifts = W1[:, t.kernel.layout["dp"]] / (-2.0 * a[:, None])
    taps = np.rint((shifts + [layer.pads[0][0], layer.pads[1][0]]) / layer.dilation).astype(int)
    cin, c_out = layer.in_channels, layer.out_channels
    WO, WV = np.asarray(_raw(t.W_O)), np.asarray(_raw(t.W_V))
    dense = np.zeros((c_out, cin) + layer.kernel_size)
    for h, (a1, a2) in enumerate(taps):
        dense[:, :, a1, a2] = WO[:, h * cin:(h + 1) * cin] @ WV[h * cin:(h + 1) * cin]
    cin_g, cout_g = cin // layer.groups, c_out // layer.groups
    weight = np.stack([dense[o, (o // cout_g) * cin_g:(o // cout_g + 1) * cin_g] for o in range(c_out)])
    return weight, None if t.b is None else np.array(_raw(t.b))


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


def _sdpa_case(rng):
    B, H, L, S, E, Ev = (int(rng.integers(1, n)) for n in (3, 6, 6, 6, 4, 4))
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


T5_CONFIGS = ((32, 128), (16, 64), (8, 20), (10, 30))     # (num_buckets, max_distance)


def t5_bias_ref(table, L, S, bidirectional, num_buckets, max_distance):
    """bias[h, i, j] = table[h, bucket(j - i)] from the reference bucket rule (key minus query)."""
    rel = np.arange(S)[None, :] - np.arange(L)[:, None]
    return np.asarray(table)[:, R.t5_relative_bucket(rel, bidirectional, num_buckets, max_distance)]


@reduction("SDPA + T5 bias")
def _verify_t5(rng):
    """SDPA with DotProductKernel(position_bias='t5') == sdpa_ref with table[h, bucket(j - i)], bool mask."""
    args, (H, L, S, E, Ev) = _sdpa_case(rng)
    nb, md = T5_CONFIGS[int(rng.integers(len(T5_CONFIGS)))]
    bidir, scale = bool(rng.random() < 0.5), [None, 1.0][int(rng.integers(2))]
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


@reduction("attention = Nadaraya–Watson")
def _verify_nadaraya_watson(rng):
    """Gaussian NW smoother (sites k_j, weights e^{tau|k_j|^2/2}, 'sum') == softmax(tau q.k) v, tau learnable."""
    B, L, S, d, dv = (int(rng.integers(1, n)) for n in (3, 6, 6, 4, 4))
    args = [rng.uniform(-1.5, 1.5, s) for s in ((B, L, d), (B, S, d), (B, S, dv))] + [np.array(rng.uniform(0.1, 1.5))]

    def itnet(q, k, v, tau):
        return attention_as_nadaraya_watson(d, dv, tau=tau)(q, k, v)

    def ref(q, k, v, tau):
        return R.sdpa_ref(q, k, v, scale=float(tau))
    return Measurement(forward=max_abs(itnet(*args), ref(*args)),
                       gradient=directional_gradient_error(itnet, ref, args, rng))


CORDONNIER_ALPHAS = (1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 16.0, 20.0, 25.0, 30.0)


@reduction("Cordonnier conv-as-attention (α bound)")
def _verify_cordonnier(rng):
    """K^2-head attention with score -alpha||delta - Delta_h||^2 -> conv2d: error <= the derived bound at
    every alpha in CORDONNIER_ALPHAS (a violation fails the check); forward = the error at alpha*, the
    smallest integer alpha whose bound is <= 1e-12, so the 1e-10 tolerance is the usual exactness one."""
    kh, kw, groups = int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 3))
    c_in, c_out = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
    stride, dilation = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    padding = "same" if stride == 1 and rng.random() < 0.5 else int(rng.integers(0, 3))
    H, W = int(rng.integers(3, 7)) + dilation * (kh - 1), int(rng.integers(3, 7)) + dilation * (kw - 1)
    x, w = rng.standard_normal((2, c_in, H, W)), rng.standard_normal((c_out, c_in // groups, kh, kw))
    b = rng.standard_normal(c_out)
    opts = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    conv = R.conv2d_ref(x, w, b, **opts)
    layer, M = conv_as_attention(w, b, **opts), cordonnier_value_bound(x, w, groups)
    for alpha in CORDONNIER_ALPHAS:
        err, bound = max_abs(layer(x, alpha=alpha), conv), cordonnier_bound(alpha, kh * kw, M)
        if not err <= bound:
            raise AssertionError(f"alpha={alpha}: error {err:.3e} exceeds the bound {bound:.3e}")
    alpha_star = next(a for a in range(1, 800) if cordonnier_bound(a, kh * kw, M) <= 1e-12)

    def itnet(x, w, b):
        return conv_as_attention(w, b, alpha=alpha_star, **opts)(x)
    return Measurement(forward=max_abs(layer(x, alpha=alpha_star), conv),
                       gradient=directional_gradient_error(itnet, lambda x, w, b: R.conv2d_ref(x, w, b, **opts),
                                                           [x, w, b], rng))
