"""Softmax attention is a Nadaraya-Watson kernel smoother (docs/theory.md §5; Tsai et al. 2019), exactly.

With G(u) = exp(-tau |u|^2 / 2), exp(tau q.k) = G(q - k) e^{tau|q|^2/2} e^{tau|k|^2/2}, and the q
factor cancels in the normalisation, so

    softmax_j(tau q_i.k_j) v_j = sum_j w_j G(q_i - k_j) v_j / sum_j w_j G(q_i - k_j),  w_j = e^{tau|k_j|^2/2}:

a kernel smoother with data sites at the keys (source positions p_j = k_j), evaluated at the
queries (p_i = q_i), Gaussian kernel, normalisation 'sum' and quadrature weights w_j. G is an
MLPKernel on 'dist2' with one hidden unit, W1 = -tau/2, activation 'exp'. tau -> 0 gives the mean.
A mask (Tsai et al.'s set filter) is the operator's support; is_causal keeps j <= i.

The layer keeps tau (a Parameter when given as a number, the caller's Tensor else); the kernel's
W1 = -tau/2 and the identity maps are empty slots of its IntegralTransform, filled at every call
(``functional_call``), so backward reaches tau, the queries, keys and values.
Proof: tests/proofs/test_nadaraya_watson.py; suite check in
:mod:`itnet_np.proofs.checks.nadaraya_watson`.
"""
import numpy as np

from itnet_np.autograd import ops
from itnet_np.autograd.ops._util import raw
from itnet_np.autograd.tensor import Tensor
from itnet_np.errors import ShapeError, describe
from itnet_np.nn.module import Module, functional_call
from itnet_np.transform import IntegralTransform, MLPKernel

from ._common import materialize, shape_of, template, weight

__all__ = ["NadarayaWatsonAttention", "attention_as_nadaraya_watson"]



class NadarayaWatsonAttention(Module):
    """softmax_j(tau q_i.k_j) v_j as a Gaussian Nadaraya-Watson smoother (module docstring).

    ``NadarayaWatsonAttention(dim, value_dim, tau=1.0, dtype=float64)``; tau a float (-> Parameter)
    or a Tensor. ``layer(q (B, L, d), k (B, S, d), v (B, S, dv), mask=None, is_causal=False)``;
    mask (L, S) | (B, L, S) bool, True = keep (Tsai et al.'s set filter M).
    """

    def __init__(self, dim, value_dim, tau=1.0, dtype=np.float64):
        super().__init__()
        self.dim, self.value_dim, self.dtype = int(dim), int(value_dim), np.dtype(dtype)
        self.tau = weight(tau if isinstance(tau, Tensor) else np.asarray(tau, self.dtype), "tau",
                          "NadarayaWatsonAttention", self.dtype)
        gauss = MLPKernel(self.value_dim, heads=1, hidden=1, inputs=("dist2",), position_dim=self.dim,
                          query_features=self.dim, activation="exp", dtype=dtype)
        # G's weight -tau/2 and the identity maps are supplied per call (maps())
        self.transform = template(IntegralTransform(self.value_dim, self.value_dim, gauss,
                                                    query_features=self.dim, normalization="sum", bias=False,
                                                    dtype=dtype))

    def maps(self):
        """G(u) = exp(-tau |u|^2 / 2): W1 = -tau/2, b1 = 0, W2 = 1, b2 = 0; W_V = W_O = I."""
        one, zero = np.ones((1, 1), self.dtype), np.zeros(1, self.dtype)
        eye = np.eye(self.value_dim, dtype=self.dtype)
        return {"kernel.W1": ops.reshape(self.tau * -0.5, (1, 1)), "kernel.b1": zero, "kernel.W2": one,
                "kernel.b2": zero, "W_V": eye, "W_O": eye}

    def forward(self, query, key, value, mask=None, is_causal=False):
        d, dv = self.dim, self.value_dim
        qs, ks = shape_of(query), shape_of(key)
        if len(qs) != 3 or qs[2] != d:
            raise ShapeError(f"query: expected shape (B, L, {d}), got {describe(raw(query))}")
        if len(ks) != 3 or ks[0] != qs[0] or ks[2] != d:
            raise ShapeError(f"key: expected shape ({qs[0]}, S, {d}), got {describe(raw(key))}")
        if shape_of(value) != (ks[0], ks[1], dv):
            raise ShapeError(f"value: expected shape {(ks[0], ks[1], dv)}, got {describe(raw(value))}")
        if is_causal:
            causal = np.tril(np.ones((qs[1], ks[1]), dtype=bool))      # keep j <= i
            mask = causal if mask is None else np.asarray(mask) & causal
        weights = ops.exp(ops.sum(key * key, axis=-1) * (self.tau * 0.5))  # w_j = exp(tau |k_j|^2 / 2)
        return functional_call(self.transform, self.maps(), query, positions=query, source=value,
                               source_positions=key, weights=weights, mask=mask)

    def itnet(self):
        """The IntegralTransform with G(u) = exp(-tau |u|^2 / 2) at the current tau, standalone."""
        return materialize(self.transform, self.maps())


def attention_as_nadaraya_watson(dim, value_dim, tau=1.0, dtype=np.float64):
    """The NW smoother equal to softmax_j(tau q_i.k_j) v_j; see :class:`NadarayaWatsonAttention`."""
    return NadarayaWatsonAttention(dim, value_dim, tau, dtype)
