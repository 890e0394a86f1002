"""Quadrature weights w_j: how much each source point counts in sum_j w_j K_ij v_j.

    'uniform'   w_j = 1          (the convention of conv, attention and SSM layers; the default)
    'mean'      w_j = 1 / M      (Monte Carlo mean over the M sources; discretisation invariant)
    'learned'   w_j = softplus(a . f_j + c)  per point, one weight or one per head (the balanced
                measure of ITNet); initialised to a = 0, c = log(e - 1), i.e. w_j = 1

Weights given at call time, shape (M,), (B, M) or (B, H, M) (any of B, H may be 1), multiply the
configured ones (e.g. cell volumes times a learned density), and so do weights a kernel contributes
(Mamba's step sizes). All are combined into one array (B|1, H|1, M), or None when every w_j = 1.
"""
import numpy as np

from .. import errors
from ..autograd.tensor import Tensor
from ..errors import ConfigError, ShapeError
from ..nn.module import Module, Parameter
from ._config import float_dtype, integer

QUADRATURES = ("uniform", "mean", "learned")


class LearnedQuadrature(Module):
    """``LearnedQuadrature(in_features, heads=1, dtype=None)``: w (B, heads, M) = softplus(f a^T + c).

    Parameters ``weight`` (heads, C) and ``bias`` (heads,)."""

    def __init__(self, in_features, heads=1, dtype=None):
        super().__init__()
        dtype = float_dtype("LearnedQuadrature", dtype)
        self.in_features = integer("LearnedQuadrature", "in_features", in_features)
        self.heads = integer("LearnedQuadrature", "heads", heads)
        self.weight = Parameter(np.zeros((self.heads, self.in_features), dtype))
        self.bias = Parameter(np.full((self.heads,), np.log(np.e - 1.0), dtype))

    def extra_repr(self):
        return f"in_features={self.in_features}, heads={self.heads}"

    def forward(self, f):
        from ..autograd import ops
        from ..nn import functional as F
        z = ops.matmul(f, ops.transpose(self.weight)) + self.bias          # (B, M, heads)
        return ops.transpose(F.softplus(z), (0, 2, 1))


def check_quadrature(quadrature):
    if quadrature not in QUADRATURES:
        raise ConfigError(f"quadrature: unknown value {quadrature!r}; expected one of {QUADRATURES} "
                          "(per-point weights are passed to forward(weights=...))")
    return quadrature


def check_weights(weights, batch, heads, m, name="weights"):
    """Given weights (M,), (B, M) or (B, H, M) as (B|1, H|1, M); a Tensor stays a Tensor."""
    if weights is None:
        return None
    data = weights.data if isinstance(weights, Tensor) else weights
    if not hasattr(data, "shape"):
        weights = data = np.asarray(data)
    shape = tuple(data.shape)
    ok = (len(shape) == 1 and shape == (m,)
          or len(shape) == 2 and shape[1] == m and shape[0] in (1, batch)
          or len(shape) == 3 and shape[2] == m and shape[0] in (1, batch) and shape[1] in (1, heads))
    if not ok:
        raise ShapeError(f"{name}: expected shape ({m},), ({batch}, {m}) or ({batch}, {heads}, {m}), "
                         f"got {errors.describe(data)}")
    if len(shape) == 3:
        return weights
    from ..autograd.ops import reshape
    return reshape(weights, (1 if len(shape) == 1 else shape[0], 1, m))


def combine_weights(*weights):
    """Product of the given (B|1, H|1, M) weights, None entries skipped (None if all are None)."""
    out = None
    for w in weights:
        if w is not None:
            out = w if out is None else out * w
    return out
