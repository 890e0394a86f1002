"""Affine map with torch's weight layout: y = x W^T + b, W of shape (out_features, in_features).

Leading axes of x are flattened into one so that the forward and both weight-gradient products
are single 2-D matrix products (dW = g^T x sums over every leading position in one GEMM).
With a bias, the map is one primitive: the GEMM, then b added in place into its fresh output;

    dx = g W,   dW = g^T x,   db = sum of g over the rows (one NumPy pass).

The bias add and its gradient stay NumPy passes: fused Numba versions lost to them at transformer
sizes (their thread dispatch cost more than the single pass; see BENCHMARKS.md).
"""
from ...autograd.ops import matmul, reshape, transpose
from ...autograd.ops._util import raw
from ...autograd.primitive import primitive
from ...autograd.tensor import Tensor
from ...errors import ShapeError
from ._args import array_of


def sum_rows(g, shape):
    """g summed over its leading axes down to its trailing ``shape``: a bias gradient. A Tensor g
    (create_graph) is returned as it is, for the engine to sum with ops (differentiably)."""
    if isinstance(g, Tensor):
        return g
    return g.sum(axis=tuple(range(g.ndim - len(shape))))


def _affine(x, weight, bias):
    y = x @ weight.T
    y += bias
    return y


linear_p = primitive(_affine, "linear").defvjp(
    lambda g, out, x, weight, bias: matmul(g, weight),
    lambda g, out, x, weight, bias: matmul(transpose(g), x),
    lambda g, out, x, weight, bias: sum_rows(g, bias.shape))


def linear(x, weight, bias=None):
    """y = x @ weight.T + bias.  x: (..., in), weight: (out, in), bias: (out,) or None -> (..., out)."""
    w = array_of("linear", weight, "weight")
    xs = tuple(array_of("linear", x).shape)
    if w.ndim != 2:
        raise ShapeError(f"linear: weight must be (out_features, in_features), got shape {tuple(w.shape)}")
    if len(xs) == 0 or xs[-1] != w.shape[1]:
        raise ShapeError(
            f"linear: input of shape {xs} does not match weight of shape {tuple(w.shape)}: "
            f"expected input (..., {w.shape[1]})")
    if bias is not None and tuple(raw(bias).shape) != (w.shape[0],):
        raise ShapeError(f"linear: bias has shape {tuple(raw(bias).shape)}, expected ({w.shape[0]},)")
    x2 = x if len(xs) == 2 else reshape(x, (-1, xs[-1]))
    y = matmul(x2, transpose(weight)) if bias is None else linear_p(x2, weight, bias)
    return y if len(xs) == 2 else reshape(y, xs[:-1] + (w.shape[0],))
