"""Implicit (Volterra) mode: the sequence y solving  y = Phi(T_K[y], x).

For a driving input x (B, T, Cx) at 1-D positions p_0 < ... < p_{T-1} and an unknown y (B, T, Cy),

    z_t = T_K[y]_t = IntegralTransform(queries (p_t, x_t), sources (boundary, then (p_s, y_s)))
    y_t = Phi(z_t, x_t)

where the transform is made STRICTLY causal here (a source counts for query t only if p_s < p_t),
ANDed with its own support. Then z_t depends on y only through y_s, s < t, and the equation is a
discrete Volterra equation of the second kind with a unique solution:

    forward substitution   y_t = Phi(T_K[y_{<t}]_t, x_t), t = 0, 1, ...: exact, T sequential steps;
    Picard iteration       y^(k+1) = Phi(T_K[y^(k)], x) from any y^(0): y^(k)_t is exact for every
                           t < k (by induction on t), so T iterations give the exact solution.

The boundary is a set of extra sources (B, Nb, Cy) at positions before the sequence (default
-Nb, ..., -1): an initial state. A recurrence h_t = F(h_{t-1}, x_t) is this equation with the
lag-1 shift T_K[y]_t = y_{t-1} (``shift_transform``: StencilKernel([-1]) with identity maps),
the initial state h_{-1} as the boundary at p = -1 and Phi(z, x) = F(z, x). An unknown made of
several arrays (the LSTM's (h, c)) is their concatenation along the feature axis; Phi splits it.
Both solvers are built from engine ops, so gradients flow to x, the boundary and all parameters.
"""
import numpy as np

from ..autograd import ops
from ..autograd.backend import xp_of
from ..autograd.ops._util import raw
from ..autograd.tensor import Tensor
from ..errors import ConfigError, ShapeError, describe
from ..nn.module import Module
from ._config import choice, flag, integer
from .kernels.stencil import StencilKernel
from .operator import IntegralTransform
from .positions import as_positions

METHODS = ("substitution", "picard")


def shift_transform(features, lag=1, query_features=None, dtype=None):
    """T_K[y]_t = y_{t-lag}: an IntegralTransform (features -> features) with the one-tap stencil at
    offset -lag, W_V = W_O = I, no bias. ``query_features``: width of the queries' x (default
    ``features``); the kernel ignores them."""
    lag = integer("shift_transform", "lag (>= 1: strictly causal)", lag)
    features = integer("shift_transform", "features", features)
    t = IntegralTransform(features, features, StencilKernel([-lag], dtype=dtype),
                          query_features=query_features, bias=False, dtype=dtype)
    t.W_V.data[...] = np.eye(features)
    t.W_O.data[...] = np.eye(features)
    return t


class Volterra(Module):
    """``Volterra(transform, cell=None)``: solves y = cell(transform[y], x) (see the module docstring).

    ``transform`` is an IntegralTransform with in_features = Cy (the unknown's width) and
    query_features = Cx; ``cell(z, x)`` maps z (B, T', Cout) and x (B, T', Cx) to y (B, T', Cy)
    for any T' (it is called per step by substitution and on whole sequences by Picard). The cell
    may instead be given per call, ``solver(x, cell=...)``, e.g. a closure over weights that the
    caller derives at call time (it then overrides the constructor's for that call only).
    """

    def __init__(self, transform, cell=None):
        super().__init__()
        if not isinstance(transform, IntegralTransform):
            raise ConfigError(f"Volterra: transform must be an IntegralTransform, got "
                              f"{type(transform).__name__}")
        if cell is not None and not callable(cell):
            raise ConfigError(f"Volterra: cell must be callable (z, x) -> y, got {type(cell).__name__}")
        self.transform = transform
        self.cell = cell

    def forward(self, x, boundary=None, method="substitution", iterations=None, initial=None,
                positions=None, boundary_positions=None, return_iterates=False, cell=None):
        """y (B, T, Cy). method 'substitution' (exact) or 'picard' (``iterations`` sweeps, default T,
        from ``initial`` (B, T, Cy), default zeros). ``return_iterates`` (Picard): also return the
        list [y^(1), ..., y^(k)]. ``cell``: Phi for this call (default: the constructor's). T = 0
        gives an empty y (B, 0, Cy) for both methods."""
        choice("Volterra", "method", method, METHODS)
        return_iterates = flag("Volterra", "return_iterates", return_iterates)
        cell = self.cell if cell is None else cell
        if not callable(cell):
            raise ConfigError("Volterra: no cell: pass cell=Phi to the constructor or to this call")
        if method == "substitution" and return_iterates:
            raise ConfigError("Volterra: return_iterates is only for method='picard'")
        x_shape = tuple(x.shape)
        if len(x_shape) != 3 or x_shape[2] != self.transform.query_features:
            raise ShapeError(f"Volterra: x must be (B, T, {self.transform.query_features}), got "
                             f"{describe(raw(x))}")
        B, T = x_shape[0], x_shape[1]
        Cy, dtype, xp = self.transform.in_features, raw(x).dtype, xp_of(raw(x))
        pos = raw(as_positions(positions, B, T, dtype, "positions", 1, xp))
        if boundary is None:
            boundary = xp.zeros((B, 0, Cy), dtype)
        if len(boundary.shape) != 3 or boundary.shape[0] != B or boundary.shape[2] != Cy:
            raise ShapeError(f"Volterra: boundary must be ({B}, Nb, {Cy}), got {describe(raw(boundary))}")
        nb = boundary.shape[1]
        if boundary_positions is None:
            boundary_positions = xp.arange(-nb, 0, dtype=dtype).reshape(1, nb, 1)
        bpos = raw(as_positions(boundary_positions, B, nb, dtype, "boundary_positions", 1, xp))
        if method == "substitution":
            return self._substitute(cell, x, boundary, pos, bpos)
        iterations = T if iterations is None else integer("Volterra", "iterations", iterations, 0)
        return self._picard(cell, x, boundary, pos, bpos, iterations, initial, return_iterates)

    def _apply(self, x, query_pos, sources, source_pos):
        """z = T_K[sources] at the queries, strictly causal in position."""
        keep = raw(source_pos)[:, None, :, 0] < query_pos[:, :, None, 0]
        return self.transform(x, positions=query_pos, source=sources, source_positions=source_pos, mask=keep)

    def _empty(self, x):
        """y for T = 0: (B, 0, Cy), nothing to solve."""
        return Tensor(xp_of(raw(x)).zeros((x.shape[0], 0, self.transform.in_features), raw(x).dtype))

    def _substitute(self, cell, x, boundary, pos, bpos):
        rows = []
        for t in range(x.shape[1]):
            sources = ops.concatenate([boundary] + rows, axis=1) if rows else boundary
            source_pos = _broadcast_cat(bpos, pos[:, :t])
            x_t = x[:, t:t + 1]
            rows.append(cell(self._apply(x_t, pos[:, t:t + 1], sources, source_pos), x_t))
        return ops.concatenate(rows, axis=1) if rows else self._empty(x)

    def _picard(self, cell, x, boundary, pos, bpos, iterations, initial, return_iterates):
        B, T, Cy = x.shape[0], x.shape[1], self.transform.in_features
        y = xp_of(raw(x)).zeros((B, T, Cy), raw(x).dtype) if initial is None else initial
        if tuple(y.shape) != (B, T, Cy):
            raise ShapeError(f"Volterra: initial must be ({B}, {T}, {Cy}), got {describe(raw(y))}")
        if T == 0:
            y = self._empty(x)
            return (y, [y] * iterations) if return_iterates else y
        source_pos = _broadcast_cat(bpos, pos)
        y = y if isinstance(y, Tensor) else Tensor(y)
        iterates = []
        for _ in range(iterations):
            y = cell(self._apply(x, pos, ops.concatenate([boundary, y], axis=1), source_pos), x)
            iterates.append(y)
        return (y, iterates) if return_iterates else y


def _broadcast_cat(a, b):
    """Concatenate position arrays (1|B, n, 1) along axis 1, broadcasting their batch axes."""
    xp, lead = xp_of(a), max(a.shape[0], b.shape[0])
    return xp.concatenate([xp.broadcast_to(a, (lead,) + a.shape[1:]),
                           xp.broadcast_to(b, (lead,) + b.shape[1:])], axis=1)
