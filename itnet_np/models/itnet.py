"""ITNet: a modality encoder, pre-norm blocks of the integral transform, and a head.

    (f, p) = encoder(inputs)                       f (B, N, C), p (B|1, N, D)
    f <- f + Drop(T_K[LN(f)])   with T_K = IntegralTransform(MLPKernel(dp, dist2, fourier, prod), softmax)
                                (config.source = 'stream': queries LN(f_i), sources f_j themselves)
    f <- f + Drop(FFN(LN(f)))   FFN = Linear(C, mC) -> GELU -> Linear(mC, C)
    classification: Linear(LN(mean_i f_i)) (B, classes);   regression: Linear(LN(f_i)) (B, N, out)
                                (config.final_norm = False: without the LN)

The kernel scores s^h_ij = MLP(z_ij)_h over the pair features of config.kernel_inputs; A^h = softmax_j
over them (H heads), so each block is attention whose logits are a learned function of the relative
position and the content. The positions from the encoder are carried unchanged through the blocks.
"""
import numpy as np

from ..autograd import ops
from ..autograd.backend import xp_of
from ..autograd.tensor import Tensor
from ..errors import ConfigError, ShapeError, describe
from ..nn.init import _generator
from ..nn.layers import MLP, Dropout, LayerNorm, Linear, ModuleList, _dtype
from ..nn.module import Module
from ..transform import IntegralTransform, MLPKernel
from .config import ITNetConfig
from .encoders import FunctionEncoder, ImageEncoder, TokenEncoder

TASKS = ("classify", "regress")


def _seed(rng):
    """A fresh seed drawn from rng, so every layer owns an independent generator."""
    return int(rng.integers(2 ** 31))


class ITNetBlock(Module):
    """x + Drop(IntegralTransform(LN(x), p)), then x + Drop(FFN(LN(x))); x (B, N, C), p (B|1, N, D)."""

    def __init__(self, config, position_dim, rng=None, dtype=None):
        super().__init__()
        rng, C = _generator(rng), config.width
        kernel = MLPKernel(C, heads=config.heads, hidden=config.kernel_hidden, inputs=config.kernel_inputs,
                           position_dim=position_dim,
                           fourier=config.fourier if "fourier" in config.kernel_inputs else 0,
                           frequency_scale=config.frequency_scale, rng=_seed(rng), dtype=dtype)
        self.norm1 = LayerNorm(C, dtype=dtype)
        self.transform = IntegralTransform(C, C, kernel, normalization="softmax", backend=config.backend,
                                           rng=_seed(rng), dtype=dtype)
        self.norm2 = LayerNorm(C, dtype=dtype)
        self.ffn = MLP([C, config.ffn_mult * C, C], activation="gelu", dtype=dtype, rng=_seed(rng))
        self.drop = Dropout(config.dropout, rng=_seed(rng))
        self.source = config.source

    def forward(self, x, positions, weights=None):
        h = self.norm1(x)
        if self.source == "stream":
            h = self.transform(h, positions, source=x, source_positions=positions, weights=weights)
        else:
            h = self.transform(h, positions, weights=weights)
        x = x + self.drop(h)
        return x + self.drop(self.ffn(self.norm2(x)))


class ITNet(Module):
    """``ITNet(encoder, out_features, config=ITNetConfig(), task='classify', rng=None, dtype=None)``.

    encoder: a module returning (features (B, N, config.width), positions (B|1, N, D)) and optionally
    per-point weights (B, N) (0 = padding; see models.encoders), with a ``position_dim`` attribute.
    ``model(*inputs)`` passes the inputs to the encoder.
    task 'classify' -> logits (B, out_features); 'regress' -> per-point outputs (B, N, out_features).
    """

    def __init__(self, encoder, out_features, config=None, task="classify", rng=None, dtype=None):
        super().__init__()
        config = ITNetConfig() if config is None else config
        if not isinstance(config, ITNetConfig):
            raise ConfigError(f"ITNet: config must be an ITNetConfig, got {type(config).__name__}")
        if task not in TASKS:
            raise ConfigError(f"ITNet: task must be one of {TASKS}, got {task!r}")
        if getattr(encoder, "width", None) != config.width:
            raise ConfigError(f"ITNet: the encoder's width {getattr(encoder, 'width', None)} must equal "
                              f"config.width={config.width}")
        rng, dtype = _generator(rng), _dtype(dtype)
        self.config, self.task = config, task
        self.encoder = encoder
        self.blocks = ModuleList([ITNetBlock(config, encoder.position_dim, rng=_seed(rng), dtype=dtype)
                                  for _ in range(config.depth)])
        self.norm = LayerNorm(config.width, dtype=dtype) if config.final_norm else None
        self.head = Linear(config.width, int(out_features), dtype=dtype, rng=_seed(rng))

    def forward(self, *inputs, weights=None):
        """``model(*inputs, weights=None)``: ``weights`` (N,) or (B, N), >= 0, in the model's dtype, are
        quadrature weights of the points (the measure: w_j in sum_j w_j K_ij V f_j), multiplying the
        encoder's own (padding) weights; they reach every block and the pooling. Points at uneven
        spacing carry their cell widths, so a model trained on a uniform grid integrates correctly
        elsewhere; a point with weight 2 counts as the same point given twice."""
        x, positions, *own = self.encoder(*inputs)
        weights = _combine(own[0] if own else None, weights, x.shape[:2], x.dtype)
        for block in self.blocks:
            x = block(x, positions, weights)
        if self.task == "classify":
            x = pool(x, weights)
        return self.head(x if self.norm is None else self.norm(x))


def _combine(own, weights, shape, dtype):
    """The encoder's weights (B, N) or None times the caller's (N,) / (B, N) or None, checked."""
    if weights is None:
        return own
    data = weights.data if isinstance(weights, Tensor) else weights
    B, N = shape
    if getattr(data, "dtype", None) != dtype or tuple(getattr(data, "shape", ())) not in ((N,), (B, N)):
        raise ShapeError(f"ITNet: weights must be a {np.dtype(dtype)} array of shape ({N},) or ({B}, {N}) "
                         f"(one per point), got {describe(data)}")
    if not bool((data >= 0).all()):
        raise ConfigError("ITNet: weights must be >= 0 (quadrature weights of a measure)")
    data = xp_of(data).broadcast_to(data, (B, N))
    return data if own is None else own * data


def pool(x, weights=None):
    """Mean over points, (B, N, C) -> (B, C); with weights (B, N): sum_i w_i x_i / sum_i w_i."""
    if weights is None:
        return ops.mean(x, axis=1)
    w = weights[..., None]
    return ops.sum(x * w, axis=1) / np.maximum(w.sum(axis=1), np.finfo(w.dtype).tiny)


def itnet_for_images(in_channels, num_classes, config=None, patch=1, rng=None, dtype=None):
    """ITNet classifier on (B, C, H, W) images, pixel (patch=1) or p x p patch tokens."""
    config, rng = config or ITNetConfig(), _generator(rng)
    enc = ImageEncoder(in_channels, config.width, patch=patch, rng=_seed(rng), dtype=dtype)
    return ITNet(enc, num_classes, config, "classify", rng=_seed(rng), dtype=dtype)


def itnet_for_tokens(vocab, num_classes, config=None, max_length=512, pad_index=None, rng=None, dtype=None):
    """ITNet classifier on (B, T) integer token sequences (``pad_index`` tokens are ignored)."""
    config, rng = config or ITNetConfig(), _generator(rng)
    enc = TokenEncoder(vocab, config.width, max_length=max_length, pad_index=pad_index, rng=_seed(rng),
                       dtype=dtype)
    return ITNet(enc, num_classes, config, "classify", rng=_seed(rng), dtype=dtype)


def itnet_for_functions(in_channels, out_channels, config=None, position_dim=1, task="regress", rng=None,
                        dtype=None):
    """ITNet on functions sampled at points: ``model(values (B, N, C_in), positions (B|1, N, D))`` ->
    (B, N, out_channels) (task='regress', an operator) or (B, out_channels) (task='classify').
    Any N: evaluate at another resolution by passing other positions."""
    config, rng = config or ITNetConfig(), _generator(rng)
    enc = FunctionEncoder(in_channels, config.width, position_dim=position_dim, rng=_seed(rng), dtype=dtype)
    return ITNet(enc, out_channels, config, task, rng=_seed(rng), dtype=dtype)
