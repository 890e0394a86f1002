"""The interface every kernel family follows.

A kernel maps a pair of points to one score per head, s^h_ij = K^h(p_i, p_j, f_i, f_j). Every family
here is *separable into per-point work and a per-pair combine*:

    proj = kernel.project(query, source)    per-point arrays, O((N + M) C) work
    s    = kernel.scores(proj)              dense scores (B, H, N, M), the per-pair combine

``query`` and ``source`` are :class:`Points` (features (B, N, C) and positions (1|B, N, D)). ``proj`` is
a :class:`Projection`: ``proj.query`` holds arrays whose axis 1 runs over the N queries, ``proj.source``
arrays whose axis 1 runs over the M sources, ``proj.extra`` anything per-kernel (already applied
parameters). Because scores depend on the points only through ``proj``, a tile of the score matrix
is ``kernel.scores(proj.tile(i_slice, j_slice))``; that is all a tiled (fused) backend needs.

``kernel.source_weights(proj)`` returns None or data-dependent quadrature weights (B, H, M) that the
kernel contributes (the selective SSM's step sizes Delta_j); the operator multiplies them into w_j.

Kernels work in any autograd mode: the per-point and per-pair steps are built from engine ops.
"""
from collections import namedtuple

import numpy as np

from ...autograd import ops
from ...nn.module import Module, Parameter
from .._config import float_dtype, generator, integer

Points = namedtuple("Points", ["features", "positions"])
Points.__doc__ = """A point set: features (B, N, C) and positions (1 or B, N, D)."""


class Projection:
    """Per-point arrays of a kernel: ``query`` / ``source`` dicts (point axis 1) and ``extra``."""

    __slots__ = ("extra", "query", "source")

    def __init__(self, query, source, extra=None):
        self.query, self.source, self.extra = dict(query), dict(source), dict(extra or {})

    def tile(self, i, j):
        """The projection restricted to queries ``i`` and sources ``j`` (slices on axis 1)."""
        return Projection({k: v[:, i] for k, v in self.query.items()},
                          {k: v[:, j] for k, v in self.source.items()}, self.extra)

    def __repr__(self):
        def shapes(d):
            return {k: tuple(v.shape) for k, v in d.items()}
        return f"Projection(query={shapes(self.query)}, source={shapes(self.source)})"


class Kernel(Module):
    """Base class of kernel families: subclasses set ``heads`` and define project and scores.

    Class attributes: ``position_dim`` (None = any D, else the D the kernel needs) and
    ``self_only`` (True when query and source must be the same sequence, e.g. a selective SSM).
    """

    position_dim = None
    self_only = False

    def __init__(self, heads):
        super().__init__()
        self.heads = integer(type(self).__name__, "heads", heads)

    def project(self, query, source):
        raise NotImplementedError

    def scores(self, proj):
        raise NotImplementedError

    def source_weights(self, proj):
        """Data-dependent quadrature weights (B, H, M) contributed by the kernel, or None."""
        return

    @property
    def has_source_weights(self):
        """Whether ``source_weights`` can return weights (a kernel that defines it says so)."""
        return type(self).source_weights is not Kernel.source_weights

    def forward(self, query, source=None):
        """Dense scores (B, H, N, M) of ``Points`` query against source (self when None)."""
        return self.scores(self.project(query, query if source is None else source))


def new_parameter(shape, rng, dtype=None, scale=None, fan_in=None, value=None):
    """A Parameter of ``shape``: ``value`` if given (converted to dtype), else U(-b, b) with
    b = scale, or b = 1/sqrt(fan_in) (torch's Linear default), or zeros when both are None."""
    dtype = float_dtype("parameter", dtype)
    if value is not None:
        array = np.array(value, dtype=dtype)
        if array.shape != tuple(shape):
            from ...errors import ShapeError
            raise ShapeError(f"parameter value: expected shape {tuple(shape)}, got {array.shape}")
        return Parameter(array)
    if scale is None and fan_in is None:
        return Parameter(np.zeros(shape, dtype))
    bound = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
    return Parameter(generator(rng).uniform(-bound, bound, size=shape).astype(dtype))


def query_key_parameters(kernel, width, rng, dtype, bias):
    """Give ``kernel`` the query and key maps of a dot-product-like kernel, rows grouped by head (torch's
    Linear layout): ``W_q`` (width, query_features), ``W_k`` (width, in_features), both U(-b, b) with
    b = 1/sqrt(fan_in), and ``b_q``, ``b_k`` (width,) zeros when ``bias``, else None."""
    kernel.W_q = new_parameter((width, kernel.query_features), rng, dtype, fan_in=kernel.query_features)
    kernel.W_k = new_parameter((width, kernel.in_features), rng, dtype, fan_in=kernel.in_features)
    if bias:
        kernel.b_q = new_parameter((width,), rng, dtype)
        kernel.b_k = new_parameter((width,), rng, dtype)
    else:
        kernel.b_q = kernel.b_k = None


def split_heads(f, weight, bias, heads, head_dim):
    """f W^T (+ b), split into heads: features f (B, n, C), weight (heads head_dim, C) with rows grouped
    by head, bias (heads head_dim,) or None -> (B, n, heads, head_dim)."""
    z = ops.matmul(f, ops.transpose(weight))
    if bias is not None:
        z = z + bias
    return ops.reshape(z, tuple(f.shape[:2]) + (heads, head_dim))


def check_features(kernel, points, expected, role):
    """ShapeError unless points.features is (B, n, expected)."""
    shape = tuple(points.features.shape)
    if len(shape) != 3 or shape[2] != expected:
        from ...errors import ShapeError
        raise ShapeError(f"{type(kernel).__name__}: {role} features must be (B, N, {expected}), "
                         f"got shape {shape}")
