"""Suite checks for :mod:`itnet_np.proofs.conv`: conv1d / conv2d with both kernels, and the
weight-extraction round trip."""
import numpy as np

from itnet_np.verify import Measurement, directional_gradient_error, max_abs, reduction

from ..conv import KERNELS, conv1d_as_itnet, conv2d_as_itnet, extract_conv_weights
from ..reference import conv1d_ref, conv2d_ref


def _random_case(rng, dims):
    """A random small conv configuration: (x, weight, bias or None, hyper-parameters)."""
    groups = int(rng.integers(1, 3))
    c_in, c_out = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
    k = tuple(int(rng.integers(1, 4)) for _ in range(dims))
    d = tuple(int(rng.integers(1, 3)) for _ in range(dims))
    kind = rng.choice(["int", "same", "valid"])
    s = (1,) * dims if kind == "same" else tuple(int(rng.integers(1, 3)) for _ in range(dims))
    p = tuple(int(rng.integers(0, 3)) for _ in range(dims)) if kind == "int" else (0,) * dims
    # Large enough for at least one output along every axis.
    sizes = tuple(max(int(rng.integers(2, 8 if dims == 1 else 6)), dd * (kk - 1) + 1 - 2 * pp)
                  for kk, dd, pp in zip(k, d, p))
    x = rng.standard_normal((2, c_in) + sizes)
    w = rng.standard_normal((c_out, c_in // groups) + k)
    b = rng.standard_normal(c_out) if rng.random() < 0.75 else None
    one = (lambda t: t) if dims == 2 else (lambda t: t[0])
    hyper = {"stride": one(s), "padding": str(kind) if kind != "int" else one(p), "dilation": one(d),
             "groups": groups}
    return x, w, b, hyper


def _check(rng, dims, kind):
    x, w, b, hyper = _random_case(rng, dims)
    build = conv1d_as_itnet if dims == 1 else conv2d_as_itnet
    ref = conv1d_ref if dims == 1 else conv2d_ref
    fwd = max_abs(build(w, b, kernel=kind, **hyper)(x), ref(x, w, b, **hyper))
    if b is None:
        grad = directional_gradient_error(lambda x_, w_: build(w_, None, kernel=kind, **hyper)(x_),
                                          lambda x_, w_: ref(x_, w_, None, **hyper), [x, w], rng)
    else:
        grad = directional_gradient_error(lambda x_, w_, b_: build(w_, b_, kernel=kind, **hyper)(x_),
                                          lambda x_, w_, b_: ref(x_, w_, b_, **hyper), [x, w, b], rng)
    return Measurement(forward=fwd, gradient=grad)


@reduction("conv1d (stencil)")
def _verify_conv1d_stencil(rng):
    """ITNet stencil layer (one head per tap) == conv1d, random stride/padding/dilation/groups."""
    return _check(rng, 1, "stencil")


@reduction("conv1d (MLP hat kernel)")
def _verify_conv1d_mlp(rng):
    """ITNet ReLU-MLP kernel (exact hat units on dp) == conv1d."""
    return _check(rng, 1, "mlp")


@reduction("conv2d (stencil)")
def _verify_conv2d_stencil(rng):
    """ITNet stencil layer over 2-D offsets == conv2d, random stride/padding/dilation/groups."""
    return _check(rng, 2, "stencil")


@reduction("conv2d (MLP hat kernel)")
def _verify_conv2d_mlp(rng):
    """ITNet ReLU-MLP kernel (hats on a mixed-radix code of the 2-D offset, window support) == conv2d."""
    return _check(rng, 2, "mlp")


@reduction("conv weight extraction round trip", tolerance=1e-12)
def _verify_extraction(rng):
    """weights -> ITNet layer -> impulse responses -> weights is the identity (1-D/2-D, both kernels)."""
    dims, kind = int(rng.integers(1, 3)), rng.choice(KERNELS)
    x, w, b, hyper = _random_case(rng, dims)
    layer = (conv1d_as_itnet if dims == 1 else conv2d_as_itnet)(w, b, kernel=kind, **hyper)
    w2, b2 = extract_conv_weights(layer, x.shape[1], w.shape[2:])
    return Measurement(forward=max(max_abs(w2, w), max_abs(b2, np.zeros_like(b2) if b is None else b)))
