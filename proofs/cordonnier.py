"""Cordonnier, Loukas & Jaggi (ICLR 2020): multi-head self-attention expresses any K x K convolution,
exactly in the limit alpha -> inf, here with an explicit bound at every finite alpha (docs/theory.md §6).

Construction. Keys are ALL pixels of the zero-padded image (the padding zeros must be keys, or the
border softmax renormalises over fewer pixels and is not zero-padded conv); queries sit at the output
anchors s*i (the original pixels for 'same' padding). Head h <-> tap a_h with shift
Delta_h = d*a_h - P and content-free score s^h = -alpha ||delta - Delta_h||^2, delta = k - q: an
MLPKernel on ('dp', 'dist2') with hidden unit h: W1 = [-2 alpha Delta_h | -alpha] (dp = q - k),
b1 = -alpha||Delta_h||^2, identity activation, W2 = I. W_V^h = I, W_O^h = W_conv[:, :, a_h] (no
flip: torch conv is a cross-correlation), b = conv bias. Stride = queries at s*i; dilation = shifts
d*a; groups = block-diagonal W^(h). The layer keeps the conv weight and bias; every map of its
IntegralTransform is an empty slot filled per call (``functional_call``), so gradients reach them.

Bound. For one head and query let u_k = W^(h) x_k and k* = q + Delta_h (a key). Then

    head - u_k* = sum_{k != k*} p_k (u_k - u_k*),  so  |head - u_k*| <= 2 M (1 - p_k*),
    1 - p_k* = S/(1 + S) <= S = sum_{k != k*} e^{-alpha||k - k*||^2} <= sum_{n in Z^2 \\ 0} e^{-alpha|n|^2}
            = theta_3(e^{-alpha})^2 - 1,    theta_3(q) = 1 + 2 sum_{n>=1} q^{n^2},

and summing the N_h heads (the conv is their exact sum):

    ||MHSA_alpha(X) - Conv(X)||_inf <= 2 N_h M (theta_3(e^{-alpha})^2 - 1) ~ 8 N_h M e^{-alpha},

M = max_{h,k} ||W^(h) x_k||_inf (:func:`cordonnier_bound`). The first-order term: with
c = sum_h sum_{|n| = 1} (u_{k*+n} - u_{k*}) over the unit neighbours that are keys,
|err - e^{-alpha} c| <= 2 N_h M (theta_3^2 - 1 - 4 e^{-alpha} + (theta_3^2 - 1)^2), so log err has
slope -1 in alpha up to that relative error (tests/proofs/test_cordonnier.py derives the band).

Proof: tests/proofs/test_cordonnier.py; suite check in :mod:`itnet_np.proofs.checks.cordonnier`.
"""
import math

import numpy as np

from itnet_np.autograd import ops
from itnet_np.autograd.ops._util import raw
from itnet_np.autograd.tensor import Tensor
from itnet_np.errors import ConfigError, ShapeError, describe
from itnet_np.nn.module import Module, functional_call
from itnet_np.transform import IntegralTransform, MLPKernel, grid_positions

from ._common import materialize, shape_of, template
from ._common import weight as weight_

__all__ = ["ConvAsAttention", "conv_as_attention", "conv_from_itnet", "cordonnier_bound",
           "cordonnier_value_bound", "theta3_minus_one"]



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
    the module docstring (docs/theory.md §6); M = :func:`cordonnier_value_bound`, dim = 2 for images."""
    return 2.0 * num_heads * value_bound * np.expm1(dim * np.log1p(theta3_minus_one(alpha)))


def _dense_weight(weight, groups):
    """(C_out, C_in/G, kh, kw) -> block-diagonal (C_out, C_in, kh, kw) (engine ops: grads flow)."""
    if groups == 1:
        return weight
    c_out, cin_g = shape_of(weight)[:2]
    o, c = np.arange(c_out)[:, None], np.arange(cin_g * groups)[None, :]
    local = c - (o // (c_out // groups)) * cin_g
    inside = (local >= 0) & (local < cin_g)
    picked = weight[np.broadcast_to(o, inside.shape), np.clip(local, 0, cin_g - 1)]
    return picked * inside[:, :, None, None].astype(np.asarray(raw(weight)).dtype)


def cordonnier_value_bound(x, weight, groups=1):
    """M = max over heads h (taps a), pixels k, batch and channels of |W[:, :, a] x_k| (padding zeros
    give 0, so the original pixels suffice). x (B, C_in, H, W), weight (C_out, C_in/G, kh, kw)."""
    w = np.asarray(raw(_dense_weight(Tensor(np.asarray(raw(weight))), groups)))
    return float(np.abs(np.einsum("ocab,ncij->naboij", w, np.asarray(raw(x)))).max())


class ConvAsAttention(Module):
    """torch conv2d(x, weight, bias, stride, padding, dilation, groups) as K^2-head softmax attention
    with Cordonnier's quadratic relative score at finite alpha (module docstring); exact as alpha -> inf.

    ``ConvAsAttention(weight, bias=None, alpha=30.0, stride=1, padding='same', dilation=1, groups=1)``;
    padding int, (P1, P2) or 'same' (stride 1; the odd extra zero on the right, as torch).
    ``layer(x (B, C_in, H, W), alpha=None) -> (B, C_out, H_out, W_out)``; ``itnet(alpha)`` exports the
    bound IntegralTransform; the error is at most :func:`cordonnier_bound`.
    """

    def __init__(self, weight, bias=None, alpha=30.0, stride=1, padding="same", dilation=1, groups=1):
        super().__init__()
        ws = shape_of(weight)
        if len(ws) != 4:
            raise ShapeError(f"weight: expected shape (C_out, C_in/groups, kh, kw), got {describe(raw(weight))}")
        c_out, cin_g, kh, kw = ws
        groups = int(groups)
        if groups < 1 or c_out % groups:
            raise ConfigError(f"ConvAsAttention: C_out={c_out} (weight {ws}) is not divisible by groups={groups}")
        if bias is not None and shape_of(bias) != (c_out,):
            raise ShapeError(f"bias: expected shape ({c_out},), got {describe(raw(bias))}")
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
        dtype = np.asarray(raw(weight)).dtype
        self.dtype = dtype if dtype.kind == "f" else np.dtype(np.float64)
        self.in_channels, self.out_channels, self.groups = cin_g * groups, c_out, groups
        self.kernel_size, self.stride, self.dilation, self.alpha = (kh, kw), (s1, s2), (d1, d2), float(alpha)
        self.weight = weight_(weight, "weight", "conv_as_attention", self.dtype)
        self.bias = weight_(bias, "bias", "conv_as_attention", self.dtype)
        taps = np.stack(np.meshgrid(np.arange(kh), np.arange(kw), indexing="ij"), -1).reshape(-1, 2)
        self.shifts = taps * np.array([d1, d2]) - np.array([self.pads[0][0], self.pads[1][0]])  # Delta_h
        heads, cin = kh * kw, self.in_channels
        kernel = MLPKernel(cin, heads=heads, hidden=heads, inputs=("dp", "dist2"), position_dim=2,
                           query_features=1, activation="identity", dtype=self.dtype)
        self.layout = kernel.layout                     # W1's columns: 'dp' (2) then 'dist2' (1)
        # every parameter is a function of alpha and the conv weights: empty slots, filled per call
        self.transform = template(IntegralTransform(cin, c_out, kernel, query_features=1,
                                                    embed_dim=heads * cin, normalization="softmax",
                                                    bias=bias is not None, dtype=self.dtype))

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, alpha={self.alpha:g}, "
                f"stride={self.stride}, pads={self.pads}, dilation={self.dilation}, groups={self.groups}")

    def maps(self, alpha=None):
        """The transform's parameters (functional_call names) at ``alpha``: s^h_ij = -alpha ||(p_j - p_i)
        - Delta_h||^2 (W1, b1; W2 = I, b2 = 0), W_V^h = I, W_O^h = W[:, :, a_h], b = bias."""
        alpha = self.alpha if alpha is None else float(alpha)
        D = self.shifts.astype(self.dtype)
        heads, c_out, cin = len(D), self.out_channels, self.in_channels
        W1 = np.empty((heads, 3), self.dtype)
        W1[:, self.layout["dp"]] = -2.0 * alpha * D              # dp = p_i - p_j = -delta
        W1[:, self.layout["dist2"]] = -alpha
        w = _dense_weight(self.weight, self.groups)
        maps = {"kernel.W1": W1, "kernel.b1": -alpha * (D * D).sum(axis=1),
                "kernel.W2": np.eye(heads, dtype=self.dtype), "kernel.b2": np.zeros(heads, self.dtype),
                "W_V": np.tile(np.eye(cin, dtype=self.dtype), (heads, 1)),
                "W_O": ops.reshape(ops.transpose(w, (0, 2, 3, 1)), (c_out, heads * cin))}
        if self.bias is not None:
            maps["b"] = self.bias
        return maps

    def itnet(self, alpha=None):
        """The IntegralTransform at ``alpha`` as a standalone module (its own Parameters, copies of
        :meth:`maps`)."""
        return materialize(self.transform, self.maps(alpha))

    def forward(self, x, alpha=None):
        xs = shape_of(x)
        if len(xs) != 4 or xs[1] != self.in_channels:
            raise ShapeError(f"x: expected shape (B, {self.in_channels}, H, W), got {describe(raw(x))}")
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
        y = functional_call(self.transform, self.maps(alpha), blank, positions=query_pos, source=keys,
                            source_positions=key_pos)
        return ops.transpose(ops.reshape(y, (B, h_out, w_out, self.out_channels)), (0, 3, 1, 2))


def conv_as_attention(weight, bias=None, alpha=30.0, stride=1, padding="same", dilation=1, groups=1):
    """The attention layer that tends to conv2d as alpha -> inf; see :class:`ConvAsAttention`."""
    return ConvAsAttention(weight, bias, alpha, stride, padding, dilation, groups)


def conv_from_itnet(layer, alpha=None):
    """Reverse map: (weight (C_out, C_in/G, kh, kw), bias) read off the IntegralTransform: the shift of
    head h is Delta_h = W1[h, dp] / (-2 alpha) with alpha = -W1[h, dist2], and W[:, :, a_h] = W_O^h W_V^h."""
    t = layer.itnet(alpha)
    W1 = np.asarray(raw(t.kernel.W1))
    a = -W1[:, t.kernel.layout["dist2"]][:, 0]
    shifts = W1[:, t.kernel.layout["dp"]] / (-2.0 * a[:, None])
    taps = np.rint((shifts + [layer.pads[0][0], layer.pads[1][0]]) / layer.dilation).astype(int)
    cin, c_out = layer.in_channels, layer.out_channels
    WO, WV = np.asarray(raw(t.W_O)), np.asarray(raw(t.W_V))
    dense = np.zeros((c_out, cin) + layer.kernel_size)
    for h, (a1, a2) in enumerate(taps):
        dense[:, :, a1, a2] = WO[:, h * cin:(h + 1) * cin] @ WV[h * cin:(h + 1) * cin]
    cin_g, cout_g = cin // layer.groups, c_out // layer.groups
    weight = np.stack([dense[o, (o // cout_g) * cin_g:(o // cout_g + 1) * cin_g] for o in range(c_out)])
    return weight, None if t.b is None else np.array(raw(t.b))
