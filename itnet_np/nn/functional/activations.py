"""Pointwise activations, each one primitive whose VJP is written with ops (so it differentiates again).

Notation: x input, out output, g = dL/d out; s(x) = 1 / (1 + exp(-x)) is the logistic sigmoid,
Phi(x) = (1 + erf(x / sqrt 2)) / 2 and phi(x) = exp(-x^2 / 2) / sqrt(2 pi) the normal cdf and pdf.
"""
import math
import numbers

import numpy as np

from ...autograd.backend import is_cupy, xp_of
from ...autograd.ops import exp, sin, tanh, where
from ...autograd.ops._util import raw
from ...autograd.primitive import primitive
from ...autograd.tensor import Tensor
from ...errors import ConfigError
from ._fast import kernels


def _mask(condition, x):
    """A 0/1 mask in x's dtype: a constant inside a VJP."""
    return condition.astype(raw(x).dtype)


def _scalar(value, x):
    """``value`` in x's dtype: a Python float would upcast a 0-d float32 array on NumPy < 2."""
    return raw(x).dtype.type(value)


# relu(x) = max(x, 0);  d relu = 1[x > 0] dx  (torch's choice: 0 at x = 0)
relu_p = primitive(lambda x: xp_of(x).maximum(x, 0), "relu").defvjp(
    lambda g, out, x: g * _mask(raw(x) > 0, x))


def relu(x):
    """relu(x) = max(x, 0), elementwise; the gradient at 0 is 0."""
    return relu_p(x)


def _sigmoid(x):
    # exp(-|x|) never overflows; the two branches are the same function written for x >= 0 and x < 0.
    xp = xp_of(x)
    e = xp.exp(-xp.abs(x))
    one = _scalar(1, x)  # not a Python 1: NumPy < 2 would make a 0-d float32 x float64
    return xp.where(x >= 0, one / (one + e), e / (one + e))


# d s(x) = s (1 - s) dx
sigmoid_p = primitive(_sigmoid, "sigmoid", save_output=True).defvjp(lambda g, out, x: g * out * (1 - out))


def sigmoid(x):
    """sigmoid(x) = 1 / (1 + exp(-x)), elementwise, computed without overflow for any |x|."""
    return sigmoid_p(x)


# silu(x) = x s(x);  d silu = (s + x s (1 - s)) dx
def _silu_vjp(g, out, x):
    s = sigmoid_p(x)
    return g * (s + x * s * (1 - s))


silu_p = primitive(lambda x: x * _sigmoid(x), "silu").defvjp(_silu_vjp)


def silu(x):
    """silu(x) = x * sigmoid(x) (a.k.a. swish), elementwise."""
    return silu_p(x)


def _softplus(x, beta=1.0, threshold=20.0):
    xp = xp_of(x)
    beta = x.dtype.type(beta)  # a Python float would upcast a 0-d float32 x on NumPy < 2
    bx = x * beta
    # log(1 + e^t) = max(t, 0) + log1p(e^-|t|): no overflow for large t, no cancellation for small.
    smooth = (xp.maximum(bx, x.dtype.type(0)) + xp.log1p(xp.exp(-xp.abs(bx)))) / beta
    return xp.where(bx > threshold, x, smooth)


# d softplus = s(beta x) dx below the threshold, dx above it (where torch returns x itself).
softplus_p = primitive(_softplus, "softplus").defvjp(
    lambda g, out, x, beta=1.0, threshold=20.0:
        where(raw(x) * beta > threshold, g, g * sigmoid_p(x * _scalar(beta, x))))


def softplus(x, beta=1.0, threshold=20.0):
    """softplus(x) = log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (as torch)."""
    if not beta > 0:
        raise ConfigError(f"softplus: beta must be > 0, got {beta!r}")
    return softplus_p(x, beta=float(beta), threshold=float(threshold))


def _erf_raw(x):
    if is_cupy(x):
        from cupyx.scipy import special
    else:
        from scipy import special
    return special.erf(x)


_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
# erf is needed inside gelu's VJP with a derivative of its own: d erf(x) = 2/sqrt(pi) exp(-x^2) dx.
erf_p = primitive(_erf_raw, "erf").defvjp(lambda g, out, x: g * (_TWO_OVER_SQRT_PI * exp(-(x * x))))


def erf(x):
    """erf(x) = 2/sqrt(pi) int_0^x exp(-t^2) dt, elementwise."""
    return erf_p(x)

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_K = math.sqrt(2.0 / math.pi)  # tanh approximation: u = K (x + C x^3)
_C = 0.044715


# The raw tanh form is written as a sigmoid: x/2 (1 + tanh u) = x s(z) = x / (1 + e^-z), z = 2u =
# x (_A + _B x^2). Same function, but 1 + tanh(u) cancels for u << 0 (in float32 it is 30% off at
# x = -5 and exactly 0 from x = -6, where gelu is -8e-11) while 1 + e^-z does not; an e^-z that
# overflows (z < -88 in float32) gives x / inf = -0, the limit. The fused kernel
# (_cpu_kernels.gelu_tanh) computes the same expression.
_A = 2.0 * _K
_B = 2.0 * _K * _C


def _minus_z(x, xp):
    """-z = -x (_A + _B x^2) in a fresh buffer, x unchanged (in-place updates keep a 0-d float32
    on NumPy < 2, where ``0-d array * Python float`` is float64)."""
    t = xp.asarray(x * x)  # a fresh array (NumPy gives a scalar for 0-d x)
    t *= -_B
    t -= _A
    t *= x
    return t


def _gelu_tanh_raw(x):
    k = kernels(x)
    if k is not None:
        return k.gelu_tanh(x)
    xp = xp_of(x)
    t = _minus_z(x, xp)
    with np.errstate(over="ignore"):
        xp.exp(t, out=t)
    t += 1
    return xp.divide(x, t, out=t)


def _gelu(x, approximate="none"):
    if approximate == "tanh":
        return _gelu_tanh_raw(x)
    return 0.5 * x * (1 + _erf_raw(x * _INV_SQRT2))


def _gelu_tanh_grad_raw(g, x):
    """The tanh-form VJP below on raw arrays, as the sigmoid: d/dx [x s(z)] = s (1 + x z' (1 - s)),
    x z' = x (_A + 3 _B x^2); in place in two buffers."""
    k = kernels(x, g)
    if k is not None:
        return k.gelu_tanh_grad(g, x)
    xp = xp_of(x)
    s = _minus_z(x, xp)
    with np.errstate(over="ignore"):
        xp.exp(s, out=s)
    s += 1
    xp.reciprocal(s, out=s)          # s = 1 / (1 + e^-z)
    d = xp.asarray(x * x)            # x z'
    d *= 3 * _B
    d += _A
    d *= x
    t = _scalar(1, x) - s
    t *= d
    t += 1
    t *= s
    t *= g
    return t


def _gelu_vjp(g, out, x, approximate="none"):
    if approximate == "tanh" and not isinstance(g, Tensor):
        return _gelu_tanh_grad_raw(g, x)
    if approximate == "tanh":
        # d/dx [x (1 + t) / 2] = (1 + t) / 2 + x (1 - t^2) K (1 + 3 C x^2) / 2,  t = tanh(u)
        t = tanh(_K * (x + _C * x * x * x))
        return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * (_K * (1 + 3 * _C * x * x)))
    # d/dx [x Phi(x)] = Phi(x) + x phi(x)
    return g * (0.5 * (1 + erf_p(x * _INV_SQRT2)) + x * (_INV_SQRT_2PI * exp(-0.5 * (x * x))))


gelu_p = primitive(_gelu, "gelu").defvjp(_gelu_vjp)


def gelu(x, approximate="none"):
    """gelu(x) = x Phi(x) with Phi the standard normal cdf (exact, via erf), elementwise.

    ``approximate='tanh'``: x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), as torch.
    """
    if approximate not in ("none", "tanh"):
        raise ConfigError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return gelu_p(x, approximate=approximate)


def _leaky_relu(x, negative_slope=0.01):
    return xp_of(x).where(x > 0, x, x * _scalar(negative_slope, x))


# d leaky_relu = 1 (x > 0), negative_slope (x <= 0: torch's value at 0) -- a constant mask.
leaky_relu_p = primitive(_leaky_relu, "leaky_relu").defvjp(
    lambda g, out, x, negative_slope=0.01:
        g * xp_of(raw(x)).where(raw(x) > 0, _scalar(1, x), _scalar(negative_slope, x)))


def leaky_relu(x, negative_slope=0.01):
    """leaky_relu(x) = x for x > 0, negative_slope * x otherwise (torch; gradient negative_slope at 0)."""
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, numbers.Real):
        raise ConfigError(f"leaky_relu: negative_slope must be a number, got {negative_slope!r}")
    return leaky_relu_p(x, negative_slope=float(negative_slope))


def _elu(x, alpha=1.0):
    xp = xp_of(x)
    return xp.where(x > 0, x, _scalar(alpha, x) * xp.expm1(xp.minimum(x, _scalar(0, x))))


# d elu = 1 (x > 0), alpha e^x = out + alpha (x <= 0, torch's value at 0 is alpha); the saved
# output keeps it differentiable again without an exp that could overflow in the unused branch.
elu_p = primitive(_elu, "elu", save_output=True).defvjp(
    lambda g, out, x, alpha=1.0: where(raw(x) > 0, g, g * (out + _scalar(alpha, x))))


def elu(x, alpha=1.0):
    """elu(x) = x for x > 0, alpha (exp(x) - 1) otherwise (torch; gradient alpha at 0)."""
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
        raise ConfigError(f"elu: alpha must be a number, got {alpha!r}")
    return elu_p(x, alpha=float(alpha))


# ----- the registry: activations by name -------------------------------------------------------
# Everything that takes an activation by *name* (the operator's kernels, their dense path, and by the
# same names the fused Numba kernels in itnet_np.transform.fused._tiles) looks it up here, so each
# name has one formula and one derivative convention (relu'(0) = 0) everywhere. Values are
# module-level functions, never lambdas, so that a module holding one pickles.

def _identity(x):
    return x


def _tanh(x):
    return tanh(x)


def _sin(x):
    return sin(x)


def _exp(x):
    return exp(x)


def _gelu_tanh(x):
    return gelu(x, approximate="tanh")


def elu_plus_one(x):
    """elu(x) + 1: x + 1 for x > 0, exp(x) for x <= 0 (a positive feature map: linear attention,
    Katharopoulos et al. 2020); value and derivative are continuous at 0 (both 1). Not elu(x) + 1:
    expm1(x) + 1 cancels to 0 for x < -37 (float64), where e^x is still a positive feature."""
    # exp of 0 on the x > 0 side: the unused branch never overflows; and where() (not minimum,
    # which splits a tie) gives the derivative 1 at x = 0.
    positive = raw(x) > 0
    return where(positive, x + 1.0, exp(where(positive, 0.0, x)))


ACTIVATIONS = {
    "identity": _identity,     # x
    "relu": relu,              # max(x, 0), gradient 0 at 0
    "tanh": _tanh,             # tanh x
    "sin": _sin,               # sin x
    "exp": _exp,               # e^x
    "sigmoid": sigmoid,        # 1 / (1 + e^-x)
    "silu": silu,              # x sigmoid(x)
    "softplus": softplus,      # log(1 + e^x)
    "gelu": gelu,              # x Phi(x), exact (erf)
    "gelu_tanh": _gelu_tanh,   # x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    "elu+1": elu_plus_one,     # x + 1 (x > 0), e^x (x <= 0)
}


def get_activation(spec, what="activation"):
    """(name, function) for a name in ACTIVATIONS, or (None, spec) for a callable; ConfigError
    naming ``what`` and the valid names otherwise."""
    if isinstance(spec, str):
        if spec in ACTIVATIONS:
            return spec, ACTIVATIONS[spec]
    elif callable(spec):
        return None, spec
    raise ConfigError(f"{what}: unknown name {spec!r}; expected a callable or one of {sorted(ACTIVATIONS)}")
