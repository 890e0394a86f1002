"""Modality encoders: raw inputs -> (features (B, N, C), positions (B|1, N, D)[, weights (B, N)]).

Every encoder is light (one Linear or one Embedding) and states where its tokens live, so the
ITNet backbone never needs to know the modality. Positions are plain arrays in the model's dtype,
scaled to [0, 1] per axis:

* :class:`ImageEncoder`: (B, C, H, W) images -> p x p patches (p = 1: pixels), token k at grid cell
  (r, c) with position (r / (H/p - 1), c / (W/p - 1)), D = 2; features = Linear(C p p -> width).
* :class:`TokenEncoder`: (B, T) integer tokens -> Embedding, position t / max_length, D = 1.
* :class:`FunctionEncoder`: values (B, N, C_in) sampled at positions (B|1, N, D) (any N: it is
  pointwise) -> Linear([values, positions] -> width), the positions passed through.

A point cloud (a later issue) is a FunctionEncoder with D = 3.

Padding: an encoder may return a third item, per-point weights w (B, N) with w = 0 on padding and 1
elsewhere (TokenEncoder with ``pad_index``). The backbone passes them as the transforms' quadrature
weights, so with softmax normalisation a padded source gets exactly zero attention, and pools with
them -- a padded batch gives the same outputs on its real points as the unpadded sequences.
"""
import numpy as np

from ..autograd import ops
from ..autograd.tensor import Tensor
from ..errors import DTypeError, ShapeError, describe
from ..nn.layers import Embedding, Linear, _dtype
from ..nn.module import Module


def _shape(x):
    return tuple(x.shape)


def _as_tensor(x, dtype, name):
    """x as a float Tensor of ``dtype``: integers take it, the other float width is an error."""
    data = x.data if isinstance(x, Tensor) else np.asarray(x)
    if data.dtype.kind == "f" and data.dtype != dtype:
        raise DTypeError(f"{name}: expected {np.dtype(dtype)} data, got {data.dtype} (cast it explicitly)")
    if data.dtype.kind not in "fiub":
        raise DTypeError(f"{name}: expected numeric data, got {data.dtype}")
    return x if isinstance(x, Tensor) and data.dtype == dtype else Tensor(data.astype(dtype, copy=False))


class ImageEncoder(Module):
    """(B, C, H, W) -> features (B, (H/p)(W/p), width), positions (1, (H/p)(W/p), 2).

    Patch k = (r, c) holds x[:, :, r p:(r+1) p, c p:(c+1) p] flattened in (channel, row, col) order.
    """

    position_dim = 2

    def __init__(self, in_channels, width, patch=1, rng=None, dtype=None):
        super().__init__()
        self.in_channels, self.patch, self.width = int(in_channels), int(patch), int(width)
        self.dtype = _dtype(dtype)
        self.proj = Linear(self.in_channels * self.patch ** 2, self.width, dtype=self.dtype, rng=rng)

    def forward(self, images):
        s = _shape(images)
        p = self.patch
        if len(s) != 4 or s[1] != self.in_channels or s[2] % p or s[3] % p:
            raise ShapeError(f"ImageEncoder: images must be (B, {self.in_channels}, H, W) with H and W "
                             f"multiples of patch={p}, got shape {s}")
        x = _as_tensor(images, self.dtype, "ImageEncoder images")
        B, C, H, W = s
        h, w = H // p, W // p
        x = ops.reshape(x, (B, C, h, p, w, p))
        x = ops.transpose(x, (0, 2, 4, 1, 3, 5))
        tokens = self.proj(ops.reshape(x, (B, h * w, C * p * p)))
        rows, cols = np.meshgrid(np.arange(h) / max(h - 1, 1), np.arange(w) / max(w - 1, 1), indexing="ij")
        positions = np.stack([rows.ravel(), cols.ravel()], axis=-1)[None].astype(self.dtype)
        return tokens, positions


class TokenEncoder(Module):
    """(B, T) integer tokens in [0, vocab) -> features (B, T, width), positions (1, T, 1) = t / max_length,
    and weights (B, T) = [token != pad_index] when ``pad_index`` is given (pad at the end)."""

    position_dim = 1

    def __init__(self, vocab, width, max_length=512, pad_index=None, rng=None, dtype=None):
        super().__init__()
        self.vocab, self.width, self.max_length = int(vocab), int(width), int(max_length)
        self.pad_index = None if pad_index is None else int(pad_index)
        self.dtype = _dtype(dtype)
        self.embed = Embedding(self.vocab, self.width, dtype=self.dtype, rng=rng)

    def forward(self, tokens):
        tokens = tokens.data if isinstance(tokens, Tensor) else np.asarray(tokens)
        if tokens.ndim != 2 or tokens.dtype.kind not in "iu":
            raise ShapeError(f"TokenEncoder: tokens must be an integer array (B, T), got {describe(tokens)}")
        T = tokens.shape[1]
        if T > self.max_length:
            raise ShapeError(f"TokenEncoder: sequence length {T} exceeds max_length={self.max_length}")
        positions = (np.arange(T, dtype=self.dtype) / self.max_length)[None, :, None]
        if self.pad_index is None:
            return self.embed(tokens), positions
        return self.embed(tokens), positions, (tokens != self.pad_index).astype(self.dtype)


class FunctionEncoder(Module):
    """values (B, N, C_in) at positions (B|1, N, D) -> features Linear([values, positions]) (B, N, width),
    positions unchanged. Pointwise, so N (the resolution) is free."""

    def __init__(self, in_channels, width, position_dim=1, rng=None, dtype=None):
        super().__init__()
        self.in_channels, self.width, self.position_dim = int(in_channels), int(width), int(position_dim)
        self.dtype = _dtype(dtype)
        self.proj = Linear(self.in_channels + self.position_dim, self.width, dtype=self.dtype, rng=rng)

    def forward(self, values, positions):
        v, p = _shape(values), _shape(positions)
        if len(v) != 3 or v[2] != self.in_channels:
            raise ShapeError(f"FunctionEncoder: values must be (B, N, {self.in_channels}), got shape {v}")
        if len(p) != 3 or p[0] not in (1, v[0]) or p[1] != v[1] or p[2] != self.position_dim:
            raise ShapeError(f"FunctionEncoder: positions must be ({v[0]} or 1, {v[1]}, {self.position_dim}) "
                             f"to match values {v}, got shape {p}")
        values = _as_tensor(values, self.dtype, "FunctionEncoder values")
        positions = positions.data if isinstance(positions, Tensor) else np.asarray(positions)
        pos = _as_tensor(positions, self.dtype, "FunctionEncoder positions").data
        joined = ops.concatenate([values, ops.broadcast_to(Tensor(pos), (v[0], v[1], p[2]))], axis=-1)
        return self.proj(joined), pos
