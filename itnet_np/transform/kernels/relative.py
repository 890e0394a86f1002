"""Additive relative-position biases b^h(p_i, p_j) for 1-D integer positions.

With the offset rel = p_j - p_i (source minus query, T5's ``memory_position - context_position``):

    'alibi'    b^h = -m_h |rel|, slopes m_h from the ALiBi paper (Press et al. 2022): for H a power of
               two m_h = 2^(-8h/H), h = 1..H; otherwise the slopes of the largest power of two c < H
               followed by every other slope of 2c (the first H - c of them)
    't5'       b^h = table[h, bucket(rel)] with T5's bucket rule (Raffel et al. 2020): half the
               buckets for rel > 0 when bidirectional; exact buckets for |rel| < n/2, then
               logarithmically spaced buckets up to max_distance, clipped to the last bucket (the
               log in float32, as HF / Mesh-TF)
    'learned'  b^h = table[h, clip(rel, -max_distance, max_distance) + max_distance]
"""
import math

import numpy as np

from ...autograd import ops
from ...autograd.backend import xp_of
from ...errors import ConfigError
from ...nn.module import Module
from .._config import flag, integer
from ..positions import integer_offsets
from .base import generator, new_parameter

KINDS = ("alibi", "t5", "learned")


def alibi_slopes(heads):
    """ALiBi head slopes m_1..m_H (a float64 array), geometric with ratio 2^(-8/H) for H = 2^k."""
    heads = int(heads)

    def power_of_two(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (h + 1) for h in range(n)]

    if heads & (heads - 1) == 0:
        return np.array(power_of_two(heads))
    c = 2 ** math.floor(math.log2(heads))
    return np.array(power_of_two(c) + list(alibi_slopes(2 * c)[0::2][:heads - c]))


def t5_bucket(rel, bidirectional=True, num_buckets=32, max_distance=128):
    """T5 bucket index (int64, same shape) of integer offsets rel = p_j - p_i.

    The logarithmic part, exact + trunc(log(r / exact) / log(max_distance / exact) (n - exact)), is
    evaluated in float32 as HF's and Mesh-TF's ``_relative_position_bucket`` do: the truncation of a
    rounded value decides the bucket of boundary distances (e.g. r = 8, 16, 64 for 18 buckets and
    max_distance 128 fall one bucket lower than in float64), so float32 is the definition here.
    """
    xp = xp_of(rel) if hasattr(rel, "dtype") else np
    rel = xp.asarray(rel).astype(np.int64)
    n = num_buckets
    out = xp.zeros_like(rel)
    if bidirectional:
        n //= 2
        out += (rel > 0) * n
        dist = xp.abs(rel)
    else:
        dist = -xp.minimum(rel, 0)
    exact = n // 2
    # dist < exact never uses the log; maximum(dist, 1) only keeps log(0) out of the unused branch.
    ratio = xp.maximum(dist, 1).astype(np.float32) / np.float32(exact)
    scaled = xp.log(ratio) / np.float32(math.log(max_distance / exact)) * np.float32(n - exact)
    large = xp.minimum(exact + scaled.astype(np.int64), n - 1)
    return out + xp.where(dist < exact, dist, large)


class RelativeBias(Module):
    """``RelativeBias(kind, heads, num_buckets=32, max_distance=128, bidirectional=True, rng=None,
    dtype=None)``; ``bias(query_positions, source_positions)`` -> (1|B, H, N, M).

    ALiBi slopes are a buffer ``slopes`` (H,); T5 and learned tables are the Parameter ``table``.
    """

    def __init__(self, kind, heads, num_buckets=32, max_distance=128, bidirectional=True, rng=None,
                 dtype=None):
        super().__init__()
        if not isinstance(kind, str) or kind not in KINDS:
            raise ConfigError(f"position_bias: unknown kind {kind!r}; expected one of {KINDS} or None")
        name = f"RelativeBias({kind!r})"
        self.kind, self.heads = kind, integer(name, "heads", heads)
        self.bidirectional = flag(name, "bidirectional", bidirectional)
        self.num_buckets = integer(name, "num_buckets", num_buckets, 4 if self.bidirectional else 2)
        self.max_distance = integer(name, "max_distance", max_distance, 0 if kind == "learned" else 1)
        exact = self.num_buckets // (2 if self.bidirectional else 1) // 2
        if kind == "t5" and self.max_distance <= exact:
            raise ConfigError(f"{name}: max_distance must exceed the {exact} exact buckets (num_buckets="
                              f"{self.num_buckets}, bidirectional={self.bidirectional}), got {max_distance!r}")
        if kind == "alibi":
            self.register_buffer("slopes", new_parameter((heads,), None, dtype, value=alibi_slopes(heads)).data)
        else:
            width = self.num_buckets if kind == "t5" else 2 * self.max_distance + 1
            self.table = new_parameter((self.heads, width), generator(rng), dtype, scale=0.1)

    def extra_repr(self):
        return f"{self.kind!r}, heads={self.heads}"

    def bias(self, query_positions, source_positions):
        rel = integer_offsets(query_positions, source_positions, f"{self.kind} position bias")
        if self.kind == "alibi":
            dist = xp_of(rel).abs(rel).astype(self.slopes.dtype)
            return -self.slopes.reshape(1, -1, 1, 1) * dist[:, None]
        if self.kind == "t5":
            index = t5_bucket(rel, self.bidirectional, self.num_buckets, self.max_distance)
        else:
            index = rel.clip(-self.max_distance, self.max_distance) + self.max_distance
        return ops.transpose(self.table[:, index], (1, 0, 2, 3))
