"""Conventional layers in PyTorch's parameter layout, built on :mod:`itnet_np.nn.functional`.

Every layer takes ``dtype`` (float32 unless the default dtype was changed; float64 for
verification) and ``rng`` (a numpy Generator, an int seed, or None) so that initialisation is
reproducible. Initialisation follows torch's defaults, stated on each class.
"""
import math
from itertools import pairwise

import numpy as np

from ..autograd.tensor import get_default_dtype
from ..errors import ConfigError, DTypeError
from . import functional as F
from . import init
from .functional.activations import get_activation
from .module import Module, Parameter


def _dtype(dtype):
    dtype = np.dtype(get_default_dtype() if dtype is None else dtype)
    if dtype not in (np.float32, np.float64):
        raise DTypeError(f"layer dtype must be float32 or float64, got {dtype}")
    return dtype


def _empty(shape, dtype):
    return Parameter(np.empty(shape, dtype=dtype))


class Linear(Module):
    """y = x W^T + b, with W of shape (out_features, in_features) and b of shape (out_features,).

    Input (..., in_features) -> output (..., out_features). Initialisation (torch's): W and b both
    U(-1/sqrt(in_features), 1/sqrt(in_features)), i.e. kaiming_uniform_ with a = sqrt(5).
    """

    def __init__(self, in_features, out_features, bias=True, dtype=None, rng=None):
        super().__init__()
        dtype = _dtype(dtype)
        rng = init._generator(rng)
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = _empty((self.out_features, self.in_features), dtype)
        init.kaiming_uniform_(self.weight, a=math.sqrt(5), rng=rng)
        self.bias = None
        if bias:
            self.bias = _empty((self.out_features,), dtype)
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
            init.uniform_(self.bias, -bound, bound, rng=rng)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class LayerNorm(Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the trailing ``normalized_shape`` axes
    (biased variance). weight starts at ones, bias at zeros, both of shape ``normalized_shape``."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, dtype=None):
        super().__init__()
        dtype = _dtype(dtype)
        if isinstance(normalized_shape, (int, np.integer)):
            normalized_shape = (int(normalized_shape),)
        self.normalized_shape = tuple(int(s) for s in normalized_shape)
        self.eps = float(eps)
        self.elementwise_affine = bool(elementwise_affine)
        self.weight = Parameter(np.ones(self.normalized_shape, dtype)) if elementwise_affine else None
        self.bias = Parameter(np.zeros(self.normalized_shape, dtype)) if elementwise_affine and bias else None

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class Embedding(Module):
    """A lookup table: integer indices of any shape (...) -> weight[indices], shape (..., dim).

    weight has shape (num_embeddings, embedding_dim) and starts N(0, 1) (torch's default).
    """

    def __init__(self, num_embeddings, embedding_dim, dtype=None, rng=None):
        super().__init__()
        self.num_embeddings, self.embedding_dim = int(num_embeddings), int(embedding_dim)
        self.weight = _empty((self.num_embeddings, self.embedding_dim), _dtype(dtype))
        init.normal_(self.weight, rng=rng)

    def forward(self, indices):
        return F.embedding(indices, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class Dropout(Module):
    """Zero each element with probability p and scale the survivors by 1/(1-p) while training;
    the identity in eval mode. The layer owns its generator, so a seed fixes the whole mask sequence."""

    def __init__(self, p=0.5, rng=None):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"Dropout: p must be in [0, 1], got {p}")
        self.p = float(p)
        self.rng = init._generator(rng)

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        return F.dropout(x, self.p, training=True, rng=self.rng)

    def extra_repr(self):
        return f"p={self.p}"


class ModuleList(Module):
    """A list of sub-modules registered as '0', '1', ... (no forward of its own)."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    def append(self, module):
        if not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__} holds Modules, got {type(module).__name__}")
        setattr(self, str(len(self._modules)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules.values()))

    def __getitem__(self, index):
        mods = list(self._modules.values())
        if isinstance(index, slice):
            out = ModuleList.__new__(type(self))  # same container type; Sequential's __init__ is variadic
            ModuleList.__init__(out, mods[index])
            return out
        return mods[index]

    def __setitem__(self, index, module):
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {type(self).__name__} of length {n}")
        setattr(self, str(index % n), module)


class Sequential(ModuleList):
    """Modules applied in order: Sequential(a, b, c)(x) = c(b(a(x)))."""

    def __init__(self, *modules):
        super().__init__(modules)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x


class MLP(Module):
    """Linear(sizes[0], sizes[1]) -> act -> dropout -> ... -> Linear(sizes[-2], sizes[-1]).

    The activation (and dropout, when ``dropout > 0``) follows every layer except the last, whose
    output is returned as is (e.g. logits). ``activation`` is a name from nn.functional's
    activation registry (``activations.ACTIVATIONS``: 'relu', 'gelu', 'tanh', 'sigmoid', 'silu',
    ..., 'identity'), the one home the operator's kernels use too.
    """

    def __init__(self, sizes, activation="relu", dropout=0.0, bias=True, dtype=None, rng=None):
        super().__init__()
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2:
            raise ConfigError(f"MLP needs at least an input and an output size, got sizes={sizes}")
        if not isinstance(activation, str):
            raise ConfigError(f"MLP: activation must be a name (so that the model pickles), got "
                              f"{type(activation).__name__}")
        get_activation(activation, "MLP: activation")  # fail now, not at the first forward
        self.sizes, self.activation = sizes, activation
        rng = init._generator(rng)
        self.layers = ModuleList(Linear(a, b, bias=bias, dtype=dtype, rng=rng)
                                 for a, b in pairwise(sizes))
        self.dropout = Dropout(dropout, rng=rng) if dropout > 0 else None

    def forward(self, x):
        act = get_activation(self.activation)[1]
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = act(x)
                if self.dropout is not None:
                    x = self.dropout(x)
        return x

    def extra_repr(self):
        return f"sizes={self.sizes}, activation={self.activation!r}"
