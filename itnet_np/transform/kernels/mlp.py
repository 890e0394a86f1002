"""MLPKernel: the paper's kernel, a one-hidden-layer MLP on a pair-feature vector, factorised.

Pair features (in this order; ``inputs`` picks which appear):

    z_ij = [ dp (D) | dist2 (1) | sin(w dp) (F) | cos(w dp) (F) | (P f_i) * (Q f_j) (R) | f_i (Cq) | f_j (Cs) ]
    dp = p_i - p_j,   dist2 = ||dp||^2,   w: frequencies (F, D)

    s^h_ij = sum_k W2_hk act(pre_ijk) + b2_h,     pre_ij = W1 z_ij + b1,   W1 (K, Z), b1 (K,)

The first layer never forms z_ij. It splits into per-point terms and a low-rank bilinear term:

    pre_ijk = a_ik + b_jk + sum_r W_kr x_ir y_jr     a (B,N,K), b (B,M,K), x (B,N,R), y (B,M,R), W (K,R)

    a_i = b1 + W_dp p_i + W_d2 |p_i|^2 + W_fi f_i     b_j = -W_dp p_j + W_d2 |p_j|^2 + W_fj f_j
    dist2 cross term  -2 p_i.p_j:  x = p_i, y = p_j, W = -2 W_d2 (repeated D times)
    Fourier (alpha = w p_i, beta = w p_j):  sin(alpha - beta) = sin a cos b - cos a sin b,
                                            cos(alpha - beta) = cos a cos b + sin a sin b
        x = [sin a, -cos a, cos a, sin a],  y = [cos b, sin b, cos b, sin b],  W = [Ws, Ws, Wc, Wc]
    product:  x = P f_i, y = Q f_j, W = W_prod

``factors(proj)`` returns exactly (a, b, x, y, W, W2, b2, act_name) for a fused backend; ``scores``
builds pre (B, N, M, K) by broadcasting. tests/transform/test_kernels.py checks both against a per-pair
MLP on the explicit z_ij.
"""
import numpy as np

from ...autograd import ops
from ...autograd.backend import xp_of
from ...autograd.ops._util import raw as _raw
from ...errors import ConfigError
from ...nn.functional.activations import get_activation
from .._config import flag, integer, number, optional_integer
from .base import Kernel, Projection, check_features, generator, new_parameter

INPUTS = ("dp", "dist2", "fourier", "prod", "fi", "fj")


class MLPKernel(Kernel):
    """``MLPKernel(in_features, heads=1, hidden=32, inputs=('dp', 'fi', 'fj'), position_dim=1,
    query_features=None, fourier=0, frequencies=None, frequency_scale=1.0, learn_frequencies=False,
    product_rank=None, activation='silu', rng=None, dtype=None)``; ``activation`` is a name in
    itnet_np.nn.functional.activations.ACTIVATIONS (the fused backend runs 'relu', 'gelu_tanh', 'silu',
    'tanh') or a callable (dense only).

    Parameters: ``W1`` (hidden, Z), ``b1`` (hidden,), ``P`` / ``Q`` (product_rank, C) when 'prod' is
    used, ``W2`` (heads, hidden), ``b2`` (heads,), and ``frequencies`` (F, D) (a Parameter when
    learn_frequencies, else a buffer; random N(0, frequency_scale^2) unless given).
    ``layout`` maps each input name to its column slice of W1.
    """

    def __init__(self, in_features, heads=1, hidden=32, inputs=("dp", "fi", "fj"), position_dim=1,
                 query_features=None, fourier=0, frequencies=None, frequency_scale=1.0,
                 learn_frequencies=False, product_rank=None, activation="silu", rng=None, dtype=None):
        super().__init__(heads)
        name = "MLPKernel"
        inputs = (inputs,) if isinstance(inputs, str) else tuple(inputs)
        unknown = [i for i in inputs if i not in INPUTS]
        if unknown or not inputs or len(set(inputs)) != len(inputs):
            raise ConfigError(f"{name}: inputs must be a non-empty subset of {INPUTS} (no repeats), "
                              f"got {inputs}")
        rng = generator(rng, name)
        self.in_features = integer(name, "in_features", in_features)
        self.query_features = optional_integer(name, "query_features", query_features) or self.in_features
        self.position_dim = integer(name, "position_dim", position_dim)
        self.hidden = integer(name, "hidden", hidden)
        self.inputs = tuple(i for i in INPUTS if i in inputs)
        self.activation_name, self.activation = get_activation(activation, f"{name} activation")
        fourier = integer(name, "fourier", fourier, 0)
        frequency_scale = number(name, "frequency_scale", frequency_scale, minimum=0.0)
        learn_frequencies = flag(name, "learn_frequencies", learn_frequencies)
        product_rank = optional_integer(name, "product_rank", product_rank)
        D = self.position_dim
        if "fourier" in inputs:
            if frequencies is None:
                if fourier < 1:
                    raise ConfigError(f"{name}: 'fourier' input needs fourier=F >= 1 or frequencies (F, D)")
                frequencies = rng.normal(0.0, frequency_scale, size=(fourier, D))
            if np.ndim(frequencies) != 2 or np.shape(frequencies)[1] != D or not np.shape(frequencies)[0]:
                raise ConfigError(f"{name}: frequencies must be (F, {D}) with F >= 1, got shape "
                                  f"{np.shape(frequencies)}")
            freq = new_parameter(np.shape(frequencies), rng, dtype, value=frequencies)
            if learn_frequencies:
                self.frequencies = freq
            else:
                self.register_buffer("frequencies", freq.data)
        n_freq = self.frequencies.shape[0] if "fourier" in inputs else 0
        rank = (product_rank or self.in_features) if "prod" in inputs else 0
        widths = {"dp": D, "dist2": 1, "fourier": 2 * n_freq, "prod": rank,
                  "fi": self.query_features, "fj": self.in_features}
        self.layout, start = {}, 0
        for name in self.inputs:
            self.layout[name] = slice(start, start + widths[name])
            start += widths[name]
        self.pair_features = start
        if rank:
            self.P = new_parameter((rank, self.query_features), rng, dtype, fan_in=self.query_features)
            self.Q = new_parameter((rank, self.in_features), rng, dtype, fan_in=self.in_features)
        self.W1 = new_parameter((self.hidden, start), rng, dtype, fan_in=start)
        self.b1 = new_parameter((self.hidden,), rng, dtype, fan_in=start)
        self.W2 = new_parameter((self.heads, self.hidden), rng, dtype, fan_in=self.hidden)
        self.b2 = new_parameter((self.heads,), rng, dtype, fan_in=self.hidden)

    def extra_repr(self):
        return (f"in_features={self.in_features}, heads={self.heads}, hidden={self.hidden}, "
                f"inputs={self.inputs}, activation={self.activation_name or self.activation}")

    def _block(self, name):
        return self.W1[:, self.layout[name]]

    def project(self, query, source):
        check_features(self, query, self.query_features, "query")
        check_features(self, source, self.in_features, "source")
        fi, fj = query.features, source.features
        B, N, M = fi.shape[0], fi.shape[1], fj.shape[1]
        pi, pj = query.positions, source.positions
        T = ops.transpose
        a = [self.b1]
        b = []
        x, y, W = [], [], []
        if "dp" in self.inputs:
            Wdp = self._block("dp")
            a.append(ops.matmul(pi, T(Wdp)))
            b.append(-ops.matmul(pj, T(Wdp)))
        if "dist2" in self.inputs:
            Wd2 = self._block("dist2")                       # (K, 1)
            a.append(ops.sum(pi * pi, axis=-1, keepdims=True) * ops.reshape(Wd2, (-1,)))
            b.append(ops.sum(pj * pj, axis=-1, keepdims=True) * ops.reshape(Wd2, (-1,)))
            x.append(pi)
            y.append(pj)
            W.append(ops.broadcast_to(Wd2, (self.hidden, self.position_dim)) * -2.0)
        if "fourier" in self.inputs:
            F = self.frequencies.shape[0]
            Ws = self._block("fourier")[:, :F]
            Wc = self._block("fourier")[:, F:]
            alpha = ops.matmul(pi, T(self.frequencies))      # (1|B, N, F)
            beta = ops.matmul(pj, T(self.frequencies))
            sa, ca, sb, cb = ops.sin(alpha), ops.cos(alpha), ops.sin(beta), ops.cos(beta)
            x += [sa, -ca, ca, sa]
            y += [cb, sb, cb, sb]
            W += [Ws, Ws, Wc, Wc]
        if "prod" in self.inputs:
            x.append(ops.matmul(fi, T(self.P)))
            y.append(ops.matmul(fj, T(self.Q)))
            W.append(self._block("prod"))
        if "fi" in self.inputs:
            a.append(ops.matmul(fi, T(self._block("fi"))))
        if "fj" in self.inputs:
            b.append(ops.matmul(fj, T(self._block("fj"))))
        K = self.hidden
        query_side = {"a": _total(a, (B, N, K), fi), "x": _concat(x, (B, N), fi)}
        source_side = {"b": _total(b, (B, M, K), fj), "y": _concat(y, (B, M), fj)}
        W = ops.concatenate(W, axis=1) if W else xp_of(_raw(fi)).zeros((K, 0), fi.dtype)
        return Projection(query_side, source_side, {"W": W})

    def factors(self, proj):
        """(a, b, x, y, W, W2, b2, act_name): the fused contract in the module docstring."""
        return (proj.query["a"], proj.source["b"], proj.query["x"], proj.source["y"],
                proj.extra["W"], self.W2, self.b2, self.activation_name)

    def preactivation(self, proj):
        """pre (B, N, M, K) = a_i + b_j + sum_r W_kr x_ir y_jr, by broadcasting; the bilinear term as
        one batched matrix product, (x_ir W_kr)_(nk, r) @ (y_jr)^T_(r, m), so that it and its
        gradients run in BLAS (a three-operand einsum with a batch axis does not)."""
        a, b, x, y, W = proj.query["a"], proj.source["b"], proj.query["x"], proj.source["y"], proj.extra["W"]
        pre = ops.expand_dims(a, 2) + ops.expand_dims(b, 1)
        if x.shape[-1]:
            (B, N, R), M, K = x.shape, y.shape[1], W.shape[0]
            xw = ops.reshape(ops.expand_dims(x, 2) * W, (B, N * K, R))            # (B, N K, R)
            bilinear = ops.matmul(xw, ops.swapaxes(y, -1, -2))                     # (B, N K, M)
            pre = pre + ops.swapaxes(ops.reshape(bilinear, (B, N, K, M)), -1, -2)
        return pre

    def scores(self, proj):
        """s (B, H, N, M) = sum_k W2_hk act(pre)_nmk + b2_h."""
        hidden = self.activation(self.preactivation(proj))
        s = ops.transpose(ops.matmul(hidden, ops.transpose(self.W2, (1, 0))), (0, 3, 1, 2))
        return s + ops.reshape(self.b2, (1, self.heads, 1, 1))


def _total(terms, shape, like):
    """Sum of the terms broadcast to ``shape`` (a per-point array with a full batch axis)."""
    if not terms:
        return xp_of(_raw(like)).zeros(shape, like.dtype)
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return ops.broadcast_to(out, shape) if tuple(out.shape) != shape else out


def _concat(pieces, lead, like):
    if not pieces:
        return xp_of(_raw(like)).zeros(lead + (0,), like.dtype)
    return ops.concatenate([ops.broadcast_to(p, lead + (p.shape[-1],)) for p in pieces], axis=-1)
