"""IntegralTransform: the ITNet operator.

For queries (p_i, f_i), i < N, and sources (p_j, f_j), j < M (the same set in self mode):

    y_i = sum_h W_O^h sum_{j in S(i)} A^h_ij (W_V^h f_j + b_V^h)  +  W_skip f_i  +  b

    A^h_ij = n_h(w^h_j, s^h_ij) over j in S(i):  'none' w s,  'sum' w s / sum w s,  'softmax' w e^s / sum w e^s

with s^h_ij = K^h(p_i, p_j, f_i, f_j) the kernel's score, w_j the quadrature weight and S(i) the
support. Shapes: features batch first (B, N, Cq) and (B, M, Cs); W_V (H d, Cs) and W_O (Cout, H d)
in torch's Linear layout with rows (resp. columns) grouped by head, like nn.MultiheadAttention's
v_proj / out_proj; W_skip (Cout, Cq). Everything is built from engine ops, so gradients flow to
features, positions (when given as Tensors that require grad), weights and every parameter.
"""

from ..autograd import ops
from ..autograd.backend import xp_of
from ..autograd.tensor import Tensor
from ..errors import ConfigError, ShapeError, describe
from ..nn.module import Module
from . import backends
from .kernels.base import Kernel, Points, generator, new_parameter
from .kernels.sum import SumKernel
from .normalization import check_normalization, transform_matrix
from .positions import as_positions
from .quadrature import LearnedQuadrature, check_quadrature, check_weights, combine_weights
from .support import as_support, check_mask, combine_masks


class IntegralTransform(Module):
    """``IntegralTransform(in_features, out_features, kernel, *, query_features=None, embed_dim=None,
    normalization='none', quadrature='uniform', learned_weights_per_head=False, support='full',
    window=None, radius=None, skip=False, bias=True, value_bias=False, backend='dense', rng=None,
    dtype=None)``.

    in_features: Cs, source feature width; query_features: Cq (default Cs; must equal Cs for self
    mode). embed_dim: H d, the total value width (default out_features), divisible by kernel.heads.
    Parameters: ``W_V`` (H d, Cs), ``b_V`` (H d,) if value_bias, ``W_O`` (Cout, H d), ``W_skip``
    (Cout, Cq) if skip, ``b`` (Cout,) if bias, and ``quadrature_net`` (LearnedQuadrature) if learned.
    """

    def __init__(self, in_features, out_features, kernel, *, query_features=None, embed_dim=None,
                 normalization="none", quadrature="uniform", learned_weights_per_head=False,
                 support="full", window=None, radius=None, skip=False, bias=True, value_bias=False,
                 backend="dense", rng=None, dtype=None):
        super().__init__()
        if not isinstance(kernel, Kernel):
            raise ConfigError(f"IntegralTransform: kernel must be a Kernel, got {type(kernel).__name__}")
        rng = generator(rng)
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.query_features = int(query_features or in_features)
        self.heads = kernel.heads
        self.embed_dim = int(embed_dim or out_features)
        if self.embed_dim % self.heads:
            raise ConfigError(f"IntegralTransform: embed_dim={self.embed_dim} is not divisible by the "
                              f"kernel's heads={self.heads}; pass embed_dim = heads * head_dim")
        self.head_dim = self.embed_dim // self.heads
        self.normalization = check_normalization(normalization)
        self.quadrature = check_quadrature(quadrature)
        if normalization == "softmax" and isinstance(kernel, SumKernel) and kernel.has_source_weights:
            raise ConfigError("IntegralTransform: a SumKernel whose summand brings quadrature weights "
                              "cannot be used with normalization='softmax' (weights would scale logits)")
        self.support = as_support(support, window, radius)
        self.backend = backends.check_backend(backend)
        self.kernel = kernel
        E, Cs, Cq, Co = self.embed_dim, self.in_features, self.query_features, self.out_features
        self.W_V = new_parameter((E, Cs), rng, dtype, fan_in=Cs)
        self.b_V = new_parameter((E,), rng, dtype) if value_bias else None
        self.W_O = new_parameter((Co, E), rng, dtype, fan_in=E)
        self.W_skip = new_parameter((Co, Cq), rng, dtype, fan_in=Cq) if skip else None
        self.b = new_parameter((Co,), rng, dtype, fan_in=E) if bias else None
        if quadrature == "learned":
            self.quadrature_net = LearnedQuadrature(Cs, self.heads if learned_weights_per_head else 1, dtype)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, heads={self.heads}, "
                f"head_dim={self.head_dim}, normalization={self.normalization!r}, "
                f"quadrature={self.quadrature!r}, support={self.support!r}, backend={self.backend!r}")

    # ----- the pieces -------------------------------------------------------------------------
    def _prepare(self, x, positions, source, source_positions, weights, mask):
        """Validated (source Points, projection, weights, mask)."""
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
        keep = combine_masks(self.support.mask(pq, src.positions), check_mask(mask, B, N, M))
        proj = self.kernel.project(query, src) if M else None
        w = combine_weights(
            self.quadrature_net(src.features) if self.quadrature == "learned" else None,
            xp.full((1, 1, M), 1.0 / max(M, 1), dtype) if self.quadrature == "mean" else None,
            check_weights(weights, B, self.heads, M),
            self.kernel.source_weights(proj) if M else None)
        return src, proj, w, keep

    def values(self, source_features):
        """v (B, H, M, d) = W_V^h f_j (+ b_V^h)."""
        B, M = source_features.shape[0], source_features.shape[1]
        v = ops.matmul(source_features, ops.transpose(self.W_V))
        if self.b_V is not None:
            v = v + self.b_V
        return ops.transpose(ops.reshape(v, (B, M, self.heads, self.head_dim)), (0, 2, 1, 3))

    def kernel_matrix(self, x, positions=None, source=None, source_positions=None, weights=None, mask=None):
        """The matrix A (B, H, N, M) of the module docstring (dense; support, weights, normalisation
        applied), so that the integral of head h is A[:, h] @ v[:, h]."""
        src, proj, w, keep = self._prepare(x, positions, source, source_positions, weights, mask)
        B, N, M = x.shape[0], x.shape[1], src.features.shape[1]
        if proj is None:
            return Tensor(xp_of(_data(x)).zeros((B, self.heads, N, 0), _data(x).dtype))
        scores = self.kernel.scores(proj)
        if tuple(scores.shape) != (B, self.heads, N, M):
            scores = ops.broadcast_to(scores, (B, self.heads, N, M))
        return transform_matrix(scores, w, keep, self.normalization)

    # ----- forward ----------------------------------------------------------------------------
    def forward(self, x, positions=None, source=None, source_positions=None, weights=None, mask=None):
        """y (B, N, Cout) for query features x (B, N, Cq) (see the class and module docstrings).

        positions (N, D) / (B, N, D) or None (grid p_i = i); source (B, M, Cs) or None (self mode);
        source_positions likewise; weights (M,), (B, M) or (B, H, M) multiply the configured
        quadrature; mask (N, M) / (B, N, M) bool, True = keep, ANDed with the configured support.
        """
        src, proj, w, keep = self._prepare(x, positions, source, source_positions, weights, mask)
        B, N = x.shape[0], x.shape[1]
        if proj is None:                                  # no sources at all: the integral is 0
            y = Tensor(xp_of(_data(x)).zeros((B, N, self.out_features), _data(x).dtype))
        else:
            fn = backends.select(self.backend, self.kernel, self.normalization, w, keep)
            out = fn(self.kernel, proj, self.values(src.features), w, keep, self.normalization)
            merged = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (B, N, self.embed_dim))
            y = ops.matmul(merged, ops.transpose(self.W_O))
        if self.W_skip is not None:
            y = y + ops.matmul(x, ops.transpose(self.W_skip))
        if self.b is not None:
            y = y + self.b
        return y


def _data(a):
    return a.data if isinstance(a, Tensor) else a


def _shape(a, name):
    data = _data(a)
    if not hasattr(data, "shape"):
        raise ShapeError(f"IntegralTransform: {name} must be an array or Tensor, got {type(a).__name__}")
    return tuple(data.shape)
