"""Specialist baselines built from the same engine, for comparisons at matched parameter counts.

* :class:`ResNetCNN` (dim 1 or 2): stem conv3 -> BN -> ReLU, then ``stages`` residual blocks
  [conv3 -> BN -> ReLU -> conv3 -> BN] + x -> ReLU, each followed by max-pool 2 (except the last),
  global average pool -> Linear. Input (B, C, L) or (B, C, H, W) -> logits (B, classes).
* :class:`Transformer`: token Embedding + learned absolute positions, pre-norm blocks of
  IntegralTransform(DotProductKernel, softmax) -- standard multi-head attention -- and a GELU FFN,
  mean pool -> LN -> Linear. (B, T) tokens -> (B, classes).
* :class:`GRUClassifier`: Embedding (tokens) or Linear (real sequences (B, T, I)) -> GRU -> Linear(h_T).
* :class:`GridCNN`: a 1-D CNN operator on a fixed training grid of N points: values (B, N, C_in) ->
  (B, N, C_out) through 'same' convolutions. Its stencil is in index units, so it has no meaning at
  another resolution: any N other than ``grid_size`` raises ShapeError (it cannot re-discretise).
"""
import itertools

import numpy as np

from ..autograd import ops
from ..autograd.tensor import Tensor
from ..errors import ConfigError, ShapeError
from ..nn import functional as F
from ..nn import init
from ..nn.conv import Conv1d, Conv2d
from ..nn.layers import MLP, Embedding, LayerNorm, Linear, ModuleList, _dtype
from ..nn.module import Module, Parameter
from ..nn.normalization import BatchNorm1d, BatchNorm2d
from ..nn.pooling import MaxPool1d, MaxPool2d
from ..nn.recurrent import GRU
from ..transform import DotProductKernel, IntegralTransform
from .itnet import _seed, pool


def _conv(dim, in_channels, out_channels, kernel_size=3, bias=True, rng=None, dtype=None):
    """nn.Conv1d (dim 1) or nn.Conv2d (dim 2) with 'same' padding."""
    layer = Conv1d if dim == 1 else Conv2d
    return layer(in_channels, out_channels, kernel_size, padding="same", bias=bias, rng=rng, dtype=dtype)


def _check_dim(name, dim):
    if dim not in (1, 2):
        raise ConfigError(f"{name}: dim must be 1 or 2, got {dim!r}")


class ResidualBlock(Module):
    """relu(x + BN(conv(relu(BN(conv(x))))))."""

    def __init__(self, dim, width, rng, dtype):
        super().__init__()
        BN = BatchNorm1d if dim == 1 else BatchNorm2d
        self.conv1 = _conv(dim, width, width, bias=False, rng=_seed(rng), dtype=dtype)
        self.bn1 = BN(width, dtype=dtype)
        self.conv2 = _conv(dim, width, width, bias=False, rng=_seed(rng), dtype=dtype)
        self.bn2 = BN(width, dtype=dtype)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(y)))


class ResNetCNN(Module):
    """``ResNetCNN(in_channels, num_classes, width=16, stages=2, dim=2, rng=None, dtype=None)``."""

    def __init__(self, in_channels, num_classes, width=16, stages=2, dim=2, rng=None, dtype=None):
        super().__init__()
        _check_dim("ResNetCNN", dim)
        rng, dtype = init._generator(rng), _dtype(dtype)
        self.dim, self.in_channels = dim, int(in_channels)
        BN, Pool = (BatchNorm1d, MaxPool1d) if dim == 1 else (BatchNorm2d, MaxPool2d)
        self.stem = _conv(dim, in_channels, width, bias=False, rng=_seed(rng), dtype=dtype)
        self.bn = BN(width, dtype=dtype)
        self.blocks = ModuleList([ResidualBlock(dim, width, rng, dtype) for _ in range(stages)])
        self.pool = Pool(2)
        self.head = Linear(width, num_classes, dtype=dtype, rng=_seed(rng))

    def forward(self, x):
        s = tuple(x.shape)
        if len(s) != self.dim + 2 or s[1] != self.in_channels:
            layout = "(B, C, L)" if self.dim == 1 else "(B, C, H, W)"
            raise ShapeError(f"ResNetCNN: x must be {layout} with C = {self.in_channels}, got shape {s}")
        x = F.relu(self.bn(self.stem(x)))
        for k, block in enumerate(self.blocks):
            x = block(x)
            if k + 1 < len(self.blocks) and min(x.shape[2:]) >= 2:
                x = self.pool(x)
        x = ops.mean(x, axis=tuple(range(2, 2 + self.dim)))
        return self.head(x)


class TransformerBlock(Module):
    """x + MHA(LN(x)), then x + FFN(LN(x)); MHA = IntegralTransform(DotProductKernel, softmax)."""

    def __init__(self, width, heads, ffn_mult, rng, dtype, backend="auto"):
        super().__init__()
        kernel = DotProductKernel(width, heads=heads, rng=_seed(rng), dtype=dtype)
        self.norm1 = LayerNorm(width, dtype=dtype)
        self.attention = IntegralTransform(width, width, kernel, normalization="softmax", backend=backend,
                                           rng=_seed(rng), dtype=dtype)
        self.norm2 = LayerNorm(width, dtype=dtype)
        self.ffn = MLP([width, ffn_mult * width, width], activation="gelu", dtype=dtype, rng=_seed(rng))

    def forward(self, x, weights=None):
        x = x + self.attention(self.norm1(x), weights=weights)
        return x + self.ffn(self.norm2(x))


class Transformer(Module):
    """``Transformer(vocab, num_classes, width=32, depth=2, heads=2, max_length=512, ffn_mult=2,
    pad_index=None, in_features=None, ...)``: (B, T) tokens -> logits (B, classes); ``pad_index``
    tokens get no attention and are left out of the pooling (the key-padding mask, as per-source
    weights 0). With ``vocab=None, in_features=I`` it reads real sequences (B, T, I) through a Linear
    embedding instead (1-D signals as sequences of samples)."""

    def __init__(self, vocab, num_classes, width=32, depth=2, heads=2, max_length=512, ffn_mult=2,
                 pad_index=None, in_features=None, backend="auto", rng=None, dtype=None):
        super().__init__()
        if (vocab is None) == (in_features is None):
            raise ConfigError("Transformer: give exactly one of vocab (token input) or in_features "
                              f"(real input), got vocab={vocab!r}, in_features={in_features!r}")
        if pad_index is not None and vocab is None:
            raise ConfigError("Transformer: pad_index needs token input (vocab)")
        self.pad_index = None if pad_index is None else int(pad_index)
        self.in_features = None if in_features is None else int(in_features)
        rng, dtype = init._generator(rng), _dtype(dtype)
        if width % heads:
            raise ConfigError(f"Transformer: width={width} is not divisible by heads={heads}")
        self.max_length = int(max_length)
        self.embed = (Embedding(vocab, width, dtype=dtype, rng=_seed(rng)) if vocab is not None
                      else Linear(self.in_features, width, dtype=dtype, rng=_seed(rng)))
        self.position = Parameter(rng.normal(0.0, 0.02, size=(self.max_length, width)).astype(dtype))
        self.blocks = ModuleList([TransformerBlock(width, heads, ffn_mult, rng, dtype, backend)
                                  for _ in range(depth)])
        self.norm = LayerNorm(width, dtype=dtype)
        self.head = Linear(width, num_classes, dtype=dtype, rng=_seed(rng))

    def forward(self, x):
        weights = None
        if self.in_features is not None:
            s = tuple(x.shape)
            if len(s) != 3 or s[2] != self.in_features or s[1] > self.max_length:
                raise ShapeError(f"Transformer: x must be (B, T, {self.in_features}) with T <= {self.max_length}, "
                                 f"got shape {s}")
        else:
            x = x.data if isinstance(x, Tensor) else np.asarray(x)
            if x.ndim != 2 or x.dtype.kind not in "iu" or x.shape[1] > self.max_length:
                raise ShapeError(f"Transformer: tokens must be integers (B, T) with T <= {self.max_length}, "
                                 f"got {x.dtype} array of shape {x.shape}")
            if self.pad_index is not None:
                weights = (x != self.pad_index).astype(self.position.dtype)
        h = self.embed(x) + self.position[: x.shape[1]]
        for block in self.blocks:
            h = block(h, weights)
        return self.head(self.norm(pool(h, weights)))


class GRUClassifier(Module):
    """``GRUClassifier(num_classes, hidden=32, vocab=None, in_features=None, embed_dim=None,
    pad_index=None, ...)``: tokens (B, T) when ``vocab`` is given, else real sequences (B, T, in_features)
    -> logits Linear(h_T) (B, classes). With ``pad_index`` (tokens padded at the end) h_T is the state
    after each sequence's last real token (the recurrence is causal, so later pads never reach it)."""

    def __init__(self, num_classes, hidden=32, vocab=None, in_features=None, embed_dim=None, pad_index=None,
                 rng=None, dtype=None):
        super().__init__()
        if pad_index is not None and vocab is None:
            raise ConfigError("GRUClassifier: pad_index needs token input (vocab)")
        self.pad_index = None if pad_index is None else int(pad_index)
        if (vocab is None) == (in_features is None):
            raise ConfigError("GRUClassifier: give exactly one of vocab (token input) or in_features "
                              f"(real input), got vocab={vocab!r}, in_features={in_features!r}")
        rng, dtype = init._generator(rng), _dtype(dtype)
        size = in_features
        if vocab is not None:
            size = embed_dim or hidden
            self.embed = Embedding(vocab, size, dtype=dtype, rng=_seed(rng))
        self.gru = GRU(size, hidden, rng=_seed(rng), dtype=dtype)
        self.head = Linear(hidden, num_classes, dtype=dtype, rng=_seed(rng))

    def forward(self, x):
        if self.pad_index is not None:
            tokens = x.data if isinstance(x, Tensor) else np.asarray(x)
            last = np.maximum((tokens != self.pad_index).sum(axis=1), 1) - 1
            out, _ = self.gru(self.embed(tokens))
            return self.head(out[np.arange(len(last)), last])
        if getattr(self, "embed", None) is not None:
            x = self.embed(x)
        _, h = self.gru(x)
        return self.head(h[0])


class GridCNN(Module):
    """``GridCNN(in_channels, out_channels, grid_size, width=32, depth=3, kernel_size=5, ...)``:
    ``model(values (B, N, C_in), positions=None)`` -> (B, N, C_out) with N == grid_size; positions are
    accepted for a common call signature with the ITNet function model and ignored."""

    def __init__(self, in_channels, out_channels, grid_size, width=32, depth=3, kernel_size=5, rng=None,
                 dtype=None):
        super().__init__()
        rng, dtype = init._generator(rng), _dtype(dtype)
        self.in_channels, self.grid_size = int(in_channels), int(grid_size)
        sizes = [in_channels] + [width] * depth + [out_channels]
        self.convs = ModuleList([_conv(1, a, b, kernel_size, rng=_seed(rng), dtype=dtype)
                                 for a, b in itertools.pairwise(sizes)])

    def forward(self, values, positions=None):
        s = tuple(values.shape)
        if len(s) != 3 or s[2] != self.in_channels:
            raise ShapeError(f"GridCNN: values must be (B, N, {self.in_channels}), got shape {s}")
        if s[1] != self.grid_size:
            raise ShapeError(f"GridCNN: trained on a grid of {self.grid_size} points, got N = {s[1]}; a CNN's "
                             "stencil is in grid steps, so it cannot be evaluated at another resolution")
        x = ops.swapaxes(values, 1, 2)                                    # (B, C, N)
        for k, conv in enumerate(self.convs):
            x = conv(x)
            if k + 1 < len(self.convs):
                x = F.gelu(x)
        return ops.swapaxes(x, 1, 2)
