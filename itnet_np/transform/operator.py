"""IntegralTransform: the ITNet operator.

For queries (p_i, f_i), i < N, and sources (p_j, f_j), j < M (the same set in self mode):

    y_i = sum_h W_O^h sum_{j in S(i)} A^h_ij (W_V^h f_j + b_V^h)  +  W_skip f_i  +  b

    A^h_ij = n_h(w^h_j, s^h_ij) over j in S(i):  'none' w s,  'sum' w s / sum w s,  'softmax' w e^s / sum w e^s

with s^h_ij = K^h(p_i, p_j, f_i, f_j) + c^h_ij the kernel's score plus an optional additive
``score_bias`` c (a relative-position table, an attention mask's float part), w_j the quadrature
weight and S(i) the support (which may differ per head when a per-head mask is given).
Shapes: features batch first (B, N, Cq) and (B, M, Cs); W_V (H d, Cs) and W_O (Cout, H d) in
torch's Linear layout with rows (resp. columns) grouped by head, like nn.MultiheadAttention's
v_proj / out_proj; W_skip (Cout, Cq). Everything is built from engine ops, so gradients flow to
features, positions (when given as Tensors that require grad), weights and every parameter.
"""

import numpy as np

from ..autograd import ops
from ..autograd.backend import xp_of
from ..autograd.tensor import Tensor
from ..errors import ConfigError, DTypeError, ShapeError, describe
from ..nn.module import Module
from . import planner
from ._config import flag, float_dtype, generator, integer, optional_integer
from .kernels.base import Kernel, Points, new_parameter
from .kernels.sum import SumKernel
from .normalization import check_normalization, check_softmax_weights
from .positions import as_positions
from .quadrature import LearnedQuadrature, check_quadrature, check_weights, combine_weights
from .support import as_support, check_mask


class IntegralTransform(Module):
    """``IntegralTransform(in_features, out_features, kernel, *, query_features=None, embed_dim=None,
    normalization='none', quadrature='uniform', learned_weights_per_head=False, support='full',
    window=None, radius=None, skip=False, bias=True, value_bias=False, backend='dense',
    integration='exact', rng=None, dtype=None)``; integration: 'exact' or montecarlo.MonteCarlo(...)
    (sampled in training mode, exact in eval mode: see ``integration``).

    in_features: Cs, source feature width; query_features: Cq (default Cs; must equal Cs for self
    mode). embed_dim: H d, the total value width (default out_features), divisible by kernel.heads.
    Parameters: ``W_V`` (H d, Cs), ``b_V`` (H d,) if value_bias, ``W_O`` (Cout, H d), ``W_skip``
    (Cout, Cq) if skip, ``b`` (Cout,) if bias, and ``quadrature_net`` (LearnedQuadrature) if learned.
    """

    def __init__(self, in_features, out_features, kernel, *, query_features=None, embed_dim=None,
                 normalization="none", quadrature="uniform", learned_weights_per_head=False,
                 support="full", window=None, radius=None, skip=False, bias=True, value_bias=False,
                 backend="dense", integration="exact", rng=None, dtype=None):
        super().__init__()
        name = "IntegralTransform"
        if not isinstance(kernel, Kernel):
            raise ConfigError(f"{name}: kernel must be a Kernel, got {type(kernel).__name__}")
        rng, dtype = generator(rng, name), float_dtype(name, dtype)
        self.in_features = integer(name, "in_features", in_features)
        self.out_features = integer(name, "out_features", out_features)
        self.query_features = optional_integer(name, "query_features", query_features) or self.in_features
        self.heads = kernel.heads
        self.embed_dim = optional_integer(name, "embed_dim", embed_dim) or self.out_features
        if self.embed_dim % self.heads:
            raise ConfigError(f"{name}: embed_dim={self.embed_dim} is not divisible by the "
                              f"kernel's heads={self.heads}; pass embed_dim = heads * head_dim")
        self.head_dim = self.embed_dim // self.heads
        self.normalization = check_normalization(normalization)
        self.quadrature = check_quadrature(quadrature)
        per_head = flag(name, "learned_weights_per_head", learned_weights_per_head)
        if per_head and quadrature != "learned":
            raise ConfigError(f"{name}: learned_weights_per_head=True needs quadrature='learned', got "
                              f"quadrature={quadrature!r}")
        if normalization == "softmax" and isinstance(kernel, SumKernel) and kernel.has_source_weights:
            raise ConfigError(f"{name}: a SumKernel whose summand brings quadrature weights "
                              "cannot be used with normalization='softmax' (weights would scale logits)")
        skip, bias, value_bias = (flag(name, a, v) for a, v in
                                  (("skip", skip), ("bias", bias), ("value_bias", value_bias)))
        self.support = as_support(support, window, radius)
        self.backend = backend
        self.integration = integration
        self.kernel = kernel
        E, Cs, Cq, Co = self.embed_dim, self.in_features, self.query_features, self.out_features
        self.W_V = new_parameter((E, Cs), rng, dtype, fan_in=Cs)
        self.b_V = new_parameter((E,), rng, dtype) if value_bias else None
        self.W_O = new_parameter((Co, E), rng, dtype, fan_in=E)
        self.W_skip = new_parameter((Co, Cq), rng, dtype, fan_in=Cq) if skip else None
        self.b = new_parameter((Co,), rng, dtype, fan_in=E) if bias else None
        if quadrature == "learned":
            self.quadrature_net = LearnedQuadrature(Cs, self.heads if per_head else 1, dtype)

    @property
    def backend(self):
        """Who evaluates the integral: 'dense', 'auto' or a registered backend (planner.py); checked
        on assignment, so ``layer.backend = 'numba'`` fails at once when numba cannot run."""
        return self._backend

    @backend.setter
    def backend(self, name):
        self._backend = planner.check_backend(name)

    @property
    def integration(self):
        """How the integral is evaluated: 'exact' or a montecarlo.MonteCarlo. Rule: a MonteCarlo layer
        samples in training mode and is exact in eval mode (``layer.eval()``); every sampled forward
        takes the next value of a call counter, so (seed, counter, tile) fixes its draws."""
        return self._integration

    @integration.setter
    def integration(self, value):
        from .montecarlo.config import check_integration
        self._integration = check_integration(value)
        self._sampled_calls = 0

    def _sampling(self, advance):
        """The call's montecarlo.Sampling, or None when this forward is exact (see ``integration``)."""
        if self._integration == "exact" or not self.training:
            return None
        from .montecarlo.config import Sampling
        sampling = Sampling(self._integration, self._sampled_calls)
        self._sampled_calls += bool(advance)
        return sampling

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, heads={self.heads}, "
                f"head_dim={self.head_dim}, normalization={self.normalization!r}, "
                f"quadrature={self.quadrature!r}, support={self.support!r}, backend={self.backend!r}")

    # ----- the pieces -------------------------------------------------------------------------
    def _prepare(self, x, positions, source, source_positions, weights, mask, score_bias=None):
        """Validated (source Points, projection, weights, support plan, score bias)."""
        xs = _shape(x, "x")
        if len(xs) != 3 or xs[2] != self.query_features:
            raise ShapeError(f"IntegralTransform: x must be (B, N, {self.query_features}), got "
                             f"{describe(_data(x))}")
        B, N = xs[0], xs[1]
        dtype = _data(x).dtype
        if source is None:
            if self.query_features != self.in_features:
                raise ConfigError(f"IntegralTransform: self mode needs query_features == in_features, "
                                  f"got {self.query_features} and {self.in_features}; pass source=")
            if source_positions is not None:
                raise ConfigError("IntegralTransform: source_positions given without source")
        else:
            ss = _shape(source, "source")
            if len(ss) != 3 or ss[0] != B or ss[2] != self.in_features:
                raise ShapeError(f"IntegralTransform: source must be ({B}, M, {self.in_features}), got "
                                 f"{describe(_data(source))}")
            if self.kernel.self_only:
                raise ConfigError(f"IntegralTransform: {type(self.kernel).__name__} works on one sequence "
                                  "only (self mode); do not pass source=")
        dim, xp = self.kernel.position_dim, xp_of(_data(x))
        pq = as_positions(positions, B, N, dtype, "positions", dim, xp)
        query = Points(x, pq)
        M = N if source is None else _shape(source, "source")[1]
        src = query if source is None else Points(
            source, as_positions(source_positions, B, M, dtype, "source_positions", dim, xp))
        D = (pq.shape[-1], src.positions.shape[-1])
        if D[0] != D[1]:
            raise ShapeError(f"IntegralTransform: positions have D = {D[0]} but source_positions D = {D[1]}")
        plan = self.support.plan(pq, src.positions, check_mask(mask, B, N, M, heads=self.heads))
        bias = _check_score_bias(score_bias, B, self.heads, N, M, dtype)
        proj = self.kernel.project(query, src) if M else None
        w = combine_weights(
            self.quadrature_net(src.features) if self.quadrature == "learned" else None,
            xp.full((1, 1, M), 1.0 / max(M, 1), dtype) if self.quadrature == "mean" else None,
            check_weights(weights, B, self.heads, M),
            self.kernel.source_weights(proj) if M else None)
        if self.normalization == "softmax":
            check_softmax_weights(w)
            if bias is not None:                          # -inf logits exclude a pair: a mask, not -inf
                excluded = _data(bias) == -np.inf         # (NaN stays: it propagates)
                if excluded.any():
                    plan = plan.restricted(~excluded)
                    bias = ops.where(excluded, 0.0, bias)
        return src, proj, w, plan, bias

    def _call(self, x, positions, source, source_positions, weights, mask, score_bias, values=True):
        """The planner.TransformCall of one evaluation (None when there are no sources; without the
        values when ``values`` is False; ``values='run'``: a forward, which advances the sampling counter)."""
        src, proj, w, support, bias = self._prepare(x, positions, source, source_positions, weights, mask,
                                                    score_bias)
        if proj is None:
            return None
        return planner.TransformCall(self.kernel, proj, self.values(src.features) if values else None, w,
                                     support, self.normalization, bias, self._sampling(advance=values == "run"))

    def values(self, source_features):
        """v (B, H, M, d) = W_V^h f_j (+ b_V^h)."""
        B, M = source_features.shape[0], source_features.shape[1]
        v = ops.matmul(source_features, ops.transpose(self.W_V))
        if self.b_V is not None:
            v = v + self.b_V
        return ops.transpose(ops.reshape(v, (B, M, self.heads, self.head_dim)), (0, 2, 1, 3))

    def kernel_matrix(self, x, positions=None, source=None, source_positions=None, weights=None, mask=None,
                      score_bias=None):
        """The matrix A (B, H, N, M) of the module docstring (dense; support, weights, score bias and
        normalisation applied), so that the integral of head h is A[:, h] @ v[:, h]."""
        call = self._call(x, positions, source, source_positions, weights, mask, score_bias, values=False)
        B, N = x.shape[0], x.shape[1]
        if call is None:
            return Tensor(xp_of(_data(x)).zeros((B, self.heads, N, 0), _data(x).dtype))
        return planner.dense_matrix(call, (B, self.heads, N, call.support.m))

    def explain(self, x, positions=None, source=None, source_positions=None, weights=None, mask=None,
                score_bias=None):
        """In words: which backend ``forward`` with these arguments would run under ``self.backend``,
        and what every available backend answers (its plan, or why it declines). Evaluates nothing
        but the per-point projections."""
        call = self._call(x, positions, source, source_positions, weights, mask, score_bias)
        if call is None:
            return f"backend={self.backend!r}: no sources (M = 0), the integral is 0 without a backend"
        return planner.explain(self.backend, call)

    # ----- forward ----------------------------------------------------------------------------
    def forward(self, x, positions=None, source=None, source_positions=None, weights=None, mask=None,
                score_bias=None):
        """y (B, N, Cout) for query features x (B, N, Cq) (see the class and module docstrings).

        positions (N, D) / (B, N, D) or None (grid p_i = i); source (B, M, Cs) or None (self mode);
        source_positions likewise; weights (M,), (B, M) or (B, H, M) multiply the configured
        quadrature; mask bool, True = keep, ANDed with the configured support: (N, M) or (B, N, M)
        for every head, or per head (B, H, N, M) (B or H may be 1; a per-head mask shared by the
        batch is (1, H, N, M), since a 3-D mask is per batch item); score_bias float in x's dtype,
        (N, M), (H, N, M) or (B, H, N, M) (B or H may be 1), added to the kernel scores before
        the normalisation (under softmax: an additive logit; -inf entries exclude a pair, as the
        mask does, so no -inf enters the arithmetic). The backend is chosen by planner.plan (see
        ``explain``); the fused one declines them for kernels other than DotProductKernel. Under
        softmax the weights must be >= 0 (ConfigError). NaN in a kept pair's weight or score propagates.
        """
        call = self._call(x, positions, source, source_positions, weights, mask, score_bias, values="run")
        B, N = x.shape[0], x.shape[1]
        if call is None:
            # No sources at all: the integral is 0. It is written as sums over empty arrays (x's
            # empty slice, the empty source) so that it stays a constant function of both: their
            # gradients are then zeros of their shapes, never None.
            empty = ops.sum(ops.getitem(x, (Ellipsis, slice(0, 0))), axis=-1, keepdims=True)
            if isinstance(source, Tensor):
                empty = empty + ops.sum(source)
            y = ops.broadcast_to(empty, (B, N, self.out_features))
        else:
            out = planner.plan(self.backend, call).run()
            merged = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (B, N, self.embed_dim))
            y = ops.matmul(merged, ops.transpose(self.W_O))
        if self.W_skip is not None:
            y = y + ops.matmul(x, ops.transpose(self.W_skip))
        if self.b is not None:
            y = y + self.b
        return y


def _check_score_bias(bias, batch, heads, n, m, dtype):
    """An additive score bias (N, M), (H, N, M) or (B, H, N, M) as (1|B, 1|H, N, M); a Tensor stays a
    Tensor (gradients reach it)."""
    if bias is None:
        return None
    data = _data(bias)
    if not hasattr(data, "shape"):
        bias = data = np.asarray(data)
    if data.dtype != dtype:
        raise DTypeError(f"score_bias: expected a {dtype} array (the features' dtype), got {describe(data)}")
    shape = tuple(data.shape)
    ok = (len(shape) == 2 and shape == (n, m)
          or len(shape) == 3 and shape[1:] == (n, m) and shape[0] in (1, heads)
          or len(shape) == 4 and shape[2:] == (n, m) and shape[0] in (1, batch) and shape[1] in (1, heads))
    if not ok:
        raise ShapeError(f"score_bias: expected shape ({n}, {m}), ({heads}, {n}, {m}) or ({batch}, {heads}, "
                         f"{n}, {m}), got {describe(data)}")
    return ops.reshape(bias, (1,) * (4 - len(shape)) + shape) if len(shape) < 4 else bias


def _data(a):
    return a.data if isinstance(a, Tensor) else a


def _shape(a, name):
    data = _data(a)
    if not hasattr(data, "shape"):
        raise ShapeError(f"IntegralTransform: {name} must be an array or Tensor, got {type(a).__name__}")
    return tuple(data.shape)
