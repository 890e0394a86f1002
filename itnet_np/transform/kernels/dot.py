"""DotProductKernel: scaled dot-product scores, the kernel of (softmax) attention.

    s^h_ij = scale (W_q^h f_i + b_q^h) . (W_k^h f_j + b_k^h) + bias^h(p_i, p_j)

W_q (H d_k, Cq) and W_k (H d_k, Cs) in torch's Linear layout, rows grouped by head (head h owns rows
h d_k .. (h+1) d_k - 1, as in nn.MultiheadAttention's in_proj). scale defaults to 1/sqrt(d_k).
The optional additive bias is a :class:`RelativeBias` ('alibi', 't5', 'learned'). With
normalization='softmax' this is multi-head scaled dot-product attention.
"""
import math

from ...autograd import ops
from ...errors import ConfigError
from .._config import flag, integer, number, optional_integer
from .base import Kernel, Projection, check_features, generator, query_key_parameters, split_heads
from .relative import RelativeBias


class DotProductKernel(Kernel):
    """``DotProductKernel(in_features, heads=1, head_dim=None, query_features=None, scale=None,
    bias=False, position_bias=None, num_buckets=32, max_distance=128, bidirectional=True, rng=None,
    dtype=None)``. head_dim defaults to in_features // heads (then heads must divide in_features).

    Parameters: ``W_q`` (H d_k, Cq), ``W_k`` (H d_k, Cs), ``b_q``/``b_k`` (H d_k,) when bias, and
    ``position_bias`` (a RelativeBias) when one is chosen.
    """

    def __init__(self, in_features, heads=1, head_dim=None, query_features=None, scale=None,
                 bias=False, position_bias=None, num_buckets=32, max_distance=128, bidirectional=True,
                 rng=None, dtype=None):
        super().__init__(heads)
        name = "DotProductKernel"
        rng = generator(rng, name)
        self.in_features = integer(name, "in_features", in_features)
        self.query_features = optional_integer(name, "query_features", query_features) or self.in_features
        if head_dim is None:
            if self.in_features % self.heads:
                raise ConfigError(f"{name}: in_features={in_features} is not divisible by "
                                  f"heads={heads}; pass head_dim explicitly")
            head_dim = self.in_features // self.heads
        self.head_dim = integer(name, "head_dim", head_dim)
        self.scale = 1.0 / math.sqrt(self.head_dim) if scale is None else number(name, "scale", scale)
        if not math.isfinite(self.scale):
            raise ConfigError(f"{name}: scale must be finite, got {scale!r}")
        query_key_parameters(self, self.heads * self.head_dim, rng, dtype, flag(name, "bias", bias))
        self.position_bias = None if position_bias is None else RelativeBias(
            position_bias, self.heads, num_buckets, max_distance, bidirectional, rng, dtype)

    def extra_repr(self):
        return (f"in_features={self.in_features}, heads={self.heads}, head_dim={self.head_dim}, "
                f"scale={self.scale:g}, position_bias={self.position_bias and self.position_bias.kind!r}")

    def project(self, query, source):
        check_features(self, query, self.query_features, "query")
        check_features(self, source, self.in_features, "source")
        q = split_heads(query.features, self.W_q, self.b_q, self.heads, self.head_dim)
        k = split_heads(source.features, self.W_k, self.b_k, self.heads, self.head_dim)
        return Projection({"q": q, "p": query.positions}, {"k": k, "p": source.positions})

    def scores(self, proj):
        s = ops.einsum("bnhd,bmhd->bhnm", proj.query["q"], proj.source["k"]) * self.scale
        if self.position_bias is not None:
            s = s + self.position_bias.bias(proj.query["p"], proj.source["p"])
        return s
