"""Matrix products.

matmul: out = x @ y with NumPy's rules (1-D operands are promoted then squeezed, batch dims
broadcast). VJP: dx = g @ y^T, dy = x^T @ g, written for every rank combination.
"""
import numpy as np

from ..primitive import primitive
from .shape import transpose  # noqa: F401  (used through swapaxes below)


def _mT(a):
    from .shape import swapaxes
    return swapaxes(a, -1, -2)


def _matmul_dx(g, out, x, y):
    if y.ndim == 1:
        return g[..., None] * y if x.ndim > 1 else g * y
    if x.ndim == 1:
        return matmul(y, g[..., None])[..., 0]
    return matmul(g, _mT(y))


def _matmul_dy(g, out, x, y):
    if x.ndim == 1:
        return x[:, None] * g[..., None, :] if y.ndim > 1 else g * x
    if y.ndim == 1:
        return matmul(_mT(x), g[..., None])[..., 0]
    return matmul(_mT(x), g)


matmul = primitive(np.matmul, "matmul").defvjp(_matmul_dx, _matmul_dy)
