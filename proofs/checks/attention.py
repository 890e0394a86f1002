"""Suite checks for :mod:`itnet_np.proofs.attention`: MHA (every mask kind), SDPA + ALiBi, SDPA + T5."""
import numpy as np

from itnet_np.verify import Measurement, directional_gradient_error, max_abs, reduction

from .. import reference as R
from ..attention import mha_as_itnet, sdpa_as_itnet


def mha_case(rng):
    """A random nn.MultiheadAttention configuration: (inputs and weights, num_heads, mask kwargs) with
    masks of every kind (none, bool, float; (L, S) or (B*H, L, S); key padding; causal)."""
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
    args, H, masks = mha_case(rng)

    def itnet(q, k, v, W, b, Wo, bo):
        return mha_as_itnet(W, b, Wo, bo, H)(q, k, v, **masks)

    def ref(q, k, v, W, b, Wo, bo):
        return R.mha_ref(q, k, v, W, b, Wo, bo, H, **masks)
    return Measurement(forward=max_abs(itnet(*args), ref(*args)),
                       gradient=directional_gradient_error(itnet, ref, args, rng))


def sdpa_case(rng, max_len=5):
    """Random q (B, H, L, E), k (B, H, S, E), v (B, H, S, Ev) and the sizes (H, L, S, E, Ev)."""
    B, H, L, S, E, Ev = (int(rng.integers(1, n)) for n in (3, 6, max_len + 1, max_len + 1, 4, 4))
    return [rng.standard_normal(s) for s in ((B, H, L, E), (B, H, S, E), (B, H, S, Ev))], (H, L, S, E, Ev)


@reduction("SDPA + ALiBi")
def _verify_alibi(rng):
    """SDPA with DotProductKernel(position_bias='alibi') == sdpa_ref with the ALiBi bias, causal or not."""
    args, (H, L, S, E, Ev) = sdpa_case(rng)
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


@reduction("SDPA + T5 bias")
def _verify_t5(rng):
    """SDPA with DotProductKernel(position_bias='t5') == sdpa_ref with table[h, bucket(j - i)], bool mask,
    any bucket count and max_distance (the float32 log of HF / Mesh-TF decides boundary buckets)."""
    args, (H, L, S, E, Ev) = sdpa_case(rng, max_len=14)
    nb, md, bidir = t5_config(rng)
    scale = [None, 1.0][int(rng.integers(2))]
    mask = rng.random((L, S)) < 0.8                         # SDPA: True = attend
    table = rng.standard_normal((H, nb))

    def itnet(q, k, v, table):
        layer = sdpa_as_itnet(H, E, Ev, scale=scale, position_bias="t5", table=table, num_buckets=nb,
                              max_distance=md, bidirectional=bidir)
        return layer(q, k, v, attn_mask=mask)

    def ref(q, k, v, table):
        bias = np.where(mask, R.t5_bias(table, L, S, bidir, nb, md), -np.inf)
        return R.sdpa_ref(q, k, v, attn_mask=bias, scale=scale)
    args = args + [table]
    return Measurement(forward=max_abs(itnet(*args), ref(*args)),
                       gradient=directional_gradient_error(itnet, ref, args, rng))
