"""Linear attention is an RNN, and both are one ITNet integral transform (Katharopoulos et al. 2020).

With per-head projections q_i = W_q^h x_i, k_j = W_k^h x_j, v_j = W_v^h x_j and a positive feature
map phi (elu + 1), causal linear attention is (docs/theory.md §7)

    V'_i = phi(q_i)^T sum_{j<=i} phi(k_j) v_j^T / phi(q_i)^T sum_{j<=i} phi(k_j)

Parallel (ITNet) form: the LowRankKernel s^h_ij = phi(W_q^h x_i) . phi(W_k^h x_j) with
normalization='sum' (A_ij = s_ij / sum_{l in S(i)} s_il, Nadaraya-Watson) and the causal support
S(i) = {j <= i}, value map W_V = W_v and output map W_O = out_proj (identity when absent):

    y_i = W_O [ sum_{j<=i} A^h_ij v^h_j ]_h + b_O.

Recurrent (RNN) form: because s_ij is a rank-r inner product, sum_{j<=i} s_ij v_j = phi(q_i)^T S_i
with S_i = S_{i-1} + phi(k_i) v_i^T and the normaliser phi(q_i)^T Z_i, Z_i = Z_{i-1} + phi(k_i).
The two agree to rounding (<= 1e-12 in float64) when the reference's eps is 0; fast-transformers adds
eps = 1e-6 to the denominator, which makes the equality hold only to ~eps relative. The causal
normaliser includes the current token (j <= i). Non-causal: S(i) = all j (support 'full').

Biases: q_bias and k_bias are the LowRankKernel's b_q / b_k (inside the feature maps), v_bias the
operator's b_V and out_bias its b. The layer keeps the conventional weights and fills the operator's
maps (empty slots of its IntegralTransform) with them at every call via ``functional_call``.

Proof: tests/proofs/test_linear_attention.py; suite check in
:mod:`itnet_np.proofs.checks.linear_attention`.
"""
import numpy as np

from ..autograd.ops._util import raw
from ..autograd.tensor import Tensor
from ..errors import ConfigError, ShapeError
from ..nn.module import Module, functional_call
from ..transform import IntegralTransform, LowRankKernel
from ._common import dtype_of, template, weight

__all__ = ["LinearAttention", "linear_attention_as_itnet", "linear_attention_weights"]

_NAMES = ("q_weight", "k_weight", "v_weight", "out_weight", "q_bias", "k_bias", "v_bias", "out_bias")


def _shape(a):
    return None if a is None else tuple(a.shape) if hasattr(a, "shape") else np.shape(a)


class LinearAttention(Module):
    """Linear attention layer as an IntegralTransform (module docstring). ``forward(x, mask=None)``:
    x (B, L, C) -> (B, L, C_out); mask (L, L) or (B, L, L) bool, True = keep, ANDed with the support.

    Holds the conventional weights under their torch names (arrays become Parameters, Tensors are
    kept as given so backward reaches them) and maps them onto ``self.transform`` on every call.
    """

    def __init__(self, q_weight, k_weight, v_weight, num_heads, out_weight=None, q_bias=None, k_bias=None,
                 v_bias=None, out_bias=None, causal=True, feature_map="elu+1"):
        super().__init__()
        weights = dict(zip(_NAMES, (q_weight, k_weight, v_weight, out_weight,
                                    q_bias, k_bias, v_bias, out_bias)))
        H = int(num_heads)
        if H < 1:
            raise ConfigError(f"linear_attention: num_heads must be >= 1, got {num_heads!r}")
        qs, vs = _shape(q_weight), _shape(v_weight)
        if len(qs) != 2 or qs[0] % H:
            raise ShapeError(f"linear_attention: q_weight must be (num_heads * r, C) with num_heads = {H}, "
                             f"got shape {qs}")
        if len(vs) != 2 or vs[0] % H or vs[1] != qs[1]:
            raise ShapeError(f"linear_attention: v_weight must be (num_heads * d_v, C) = ({H} * d_v, "
                             f"{qs[1]}), got shape {vs}")
        C, E = qs[1], vs[0]
        expected = {"k_weight": qs, "out_weight": (_shape(out_weight) or (E, E))[:1] + (E,),
                    "q_bias": qs[:1], "k_bias": qs[:1], "v_bias": (E,)}
        expected["out_bias"] = expected["out_weight"][:1]
        for name, shape in expected.items():
            got = _shape(weights[name])
            if got is not None and got != shape:
                raise ShapeError(f"linear_attention: {name} must have shape {shape}, got {got}")
        dtype = next((w.dtype for w in weights.values() if isinstance(w, Tensor)), np.dtype(np.float64))
        for name, value in weights.items():
            setattr(self, name, weight(value, name, "linear_attention", dtype))
        self.num_heads, self.in_features, self.causal = H, C, bool(causal)
        biased = q_bias is not None or k_bias is not None
        kernel = LowRankKernel(C, heads=H, feature_dim=qs[0] // H, feature_map=feature_map, bias=biased,
                               dtype=dtype)
        # every map is a conventional weight: empty slots, filled per call (maps())
        self.transform = template(IntegralTransform(
            C, expected["out_weight"][0], kernel, embed_dim=E, normalization="sum",
            support="causal" if causal else "full", bias=out_bias is not None, value_bias=v_bias is not None,
            dtype=dtype))

    def maps(self):
        """The operator's parameters (functional_call names) from the conventional weights."""
        dtype = dtype_of(self.q_weight)
        out_weight = self.out_weight                          # no out_proj: the heads are concatenated
        out = {"kernel.W_q": self.q_weight, "kernel.W_k": self.k_weight, "W_V": self.v_weight,
               "W_O": np.eye(self.transform.embed_dim, dtype=dtype) if out_weight is None else out_weight}
        if self.q_bias is not None or self.k_bias is not None:
            zeros = np.zeros(_shape(self.q_weight)[:1], dtype)
            out["kernel.b_q"] = zeros if self.q_bias is None else self.q_bias
            out["kernel.b_k"] = zeros if self.k_bias is None else self.k_bias
        for name, slot in (("v_bias", "b_V"), ("out_bias", "b")):
            if getattr(self, name) is not None:
                out[slot] = getattr(self, name)
        return out

    def forward(self, x, mask=None):
        shape = _shape(x)
        if len(shape) != 3 or shape[2] != self.in_features:
            raise ShapeError(f"LinearAttention: x must be (B, L, {self.in_features}), got shape {shape}")
        return functional_call(self.transform, self.maps(), x, mask=mask)


def linear_attention_as_itnet(q_weight, k_weight, v_weight, num_heads, out_weight=None, q_bias=None,
                              k_bias=None, v_bias=None, out_bias=None, causal=True, feature_map="elu+1"):
    """The ITNet layer equal to linear attention with these projections (torch Linear layout):

        q = x W_q^T + b_q, k = x W_k^T + b_k, v = x W_v^T + b_v, split into num_heads heads (rows grouped
        by head, like nn.MultiheadAttention), out = concat_h(V'^h) W_o^T + b_o (W_o = I when None).

    q_weight, k_weight (H r, C); v_weight (H d_v, C); out_weight (C_out, H d_v). causal: j <= i, else all j.
    Equals ``causal_linear_attention_recurrent_ref(q, k, v)`` (eps = 0) merged over heads and projected.
    """
    return LinearAttention(q_weight, k_weight, v_weight, num_heads, out_weight, q_bias, k_bias, v_bias,
                           out_bias, causal, feature_map)


def linear_attention_weights(layer):
    """Reverse map: the conventional weights (arrays, torch layout) of a LinearAttention, or of an
    IntegralTransform with a LowRankKernel and normalization='sum' (its b_q / b_k are q_bias / k_bias).

    Returns a dict with q_weight, k_weight, v_weight, out_weight, q_bias, k_bias, v_bias, out_bias
    (None where absent), num_heads and causal.
    """
    if isinstance(layer, LinearAttention):
        out = {name: None if getattr(layer, name) is None else np.array(raw(getattr(layer, name)))
               for name in _NAMES}
        return dict(out, num_heads=layer.num_heads, causal=layer.causal)
    if not isinstance(layer, IntegralTransform) or not isinstance(layer.kernel, LowRankKernel) \
            or layer.normalization != "sum" or layer.kernel.feature_map_name != "elu+1":
        raise ConfigError("linear_attention_weights: expected a LinearAttention or an IntegralTransform with "
                          "a LowRankKernel (feature_map 'elu+1') and normalization='sum'")
    if layer.W_skip is not None or layer.support.window is not None or layer.support.radius is not None \
            or layer.support.kind == "strict_causal":
        raise ConfigError(f"linear_attention_weights: the transform has a skip map or support "
                          f"{layer.support!r}; linear attention has neither")
    get = lambda a: None if a is None else np.array(raw(a))
    return {"q_weight": get(layer.kernel.W_q), "k_weight": get(layer.kernel.W_k), "v_weight": get(layer.W_V),
            "out_weight": get(layer.W_O), "q_bias": get(layer.kernel.b_q), "k_bias": get(layer.kernel.b_k),
            "v_bias": get(layer.b_V),
            "out_bias": get(layer.b), "num_heads": layer.heads, "causal": layer.support.kind == "causal"}
