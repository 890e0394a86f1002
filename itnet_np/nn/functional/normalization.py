"""layer_norm: one normalising primitive plus an elementwise affine map.

Over the last k = len(normalized_shape) axes (n elements), with mu and v the mean and the biased
variance there,

    y = (x - mu) r,   r = 1 / sqrt(v + eps),     out = y * weight + bias.

VJP of the normalisation (g = dL/dy, means over the same axes):

    dx = r (g - mean(g) - y mean(g y)),

which holds exactly with eps > 0. It is written with ops on the saved output y and on r
recomputed from x with ops, so it differentiates again.
"""
from ...autograd.backend import xp_of
from ...autograd.ops import mean, sqrt
from ...autograd.ops._util import raw
from ...autograd.primitive import primitive
from ...errors import ConfigError, ShapeError


def _normalize(x, axis, eps):
    mu = x.mean(axis=axis, keepdims=True)
    c = x - mu
    return c / xp_of(x).sqrt((c * c).mean(axis=axis, keepdims=True) + eps)


def _normalize_vjp(g, out, x, axis, eps):
    c = x - mean(x, axis=axis, keepdims=True)
    r = 1 / sqrt(mean(c * c, axis=axis, keepdims=True) + eps)
    return r * (g - mean(g, axis=axis, keepdims=True) - out * mean(g * out, axis=axis, keepdims=True))


normalize_p = primitive(_normalize, "layer_normalize", save_output=True).defvjp(_normalize_vjp)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Normalise x over its trailing ``normalized_shape`` axes, then scale by weight, add bias.

    x: (..., *normalized_shape); weight, bias: normalized_shape (or None). Matches
    torch.nn.functional.layer_norm (biased variance, eps inside the square root).
    """
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    xs = tuple(raw(x).shape)
    k = len(shape)
    if k == 0 or k > len(xs) or xs[len(xs) - k:] != shape:
        raise ShapeError(
            f"layer_norm: input of shape {xs} does not end with normalized_shape {shape} "
            f"(expected (..., {', '.join(map(str, shape))}))")
    if not eps > 0:
        raise ConfigError(f"layer_norm: eps must be > 0, got {eps!r}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(raw(p).shape) != shape:
            raise ShapeError(f"layer_norm: {name} has shape {tuple(raw(p).shape)}, expected {shape}")
    axis = tuple(range(len(xs) - k, len(xs)))
    y = normalize_p(x, axis=axis, eps=float(eps))
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y
