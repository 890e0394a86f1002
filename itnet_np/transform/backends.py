"""Backends: who evaluates sum_j A_ij v_j for one head, given a kernel's projection.

A backend is ``fn(kernel, proj, values, weights, mask, normalization) -> (B, H, N, d)`` with
values (B, H, M, d), weights None or (B|1, H|1, M), mask None or a raw bool (B|1, N, M); it must
return what the dense reference returns (see normalization.py for the formulas), differentiably.
Register one with ``register_backend(name, fn, supports=None)``; ``supports(kernel, normalization,
weights, mask) -> bool`` tells 'auto' whether to use it. 'dense' is the reference and always works.

``backend='numba'`` imports ``itnet_np.transform.fused`` on first use, which is expected to register
itself; 'auto' takes the first registered non-dense backend that supports the call, else 'dense'.
"""
import importlib

from ..errors import ConfigError
from .normalization import transform_matrix

_BACKENDS = {}
_FUSED_MODULE = "itnet_np.transform.fused"
_tried_fused = False


def register_backend(name, fn, supports=None):
    """Make ``fn`` available as ``IntegralTransform(..., backend=name)``."""
    _BACKENDS[name] = (fn, supports or (lambda *args: True))


def available_backends():
    _load_fused()
    return tuple(_BACKENDS)


def _load_fused():
    global _tried_fused
    if not _tried_fused:
        _tried_fused = True
        try:
            importlib.import_module(_FUSED_MODULE)
        except ImportError:
            pass


def check_backend(name):
    if name in ("dense", "auto"):
        return name
    _load_fused()
    if name not in _BACKENDS:
        raise ConfigError(f"backend: {name!r} is not available; registered: {tuple(_BACKENDS)} "
                          "(and 'auto')")
    return name


def select(name, kernel, normalization, weights, mask):
    """The backend function for this call (resolving 'auto')."""
    if name == "auto":
        _load_fused()
        for other, (fn, supports) in _BACKENDS.items():
            if other != "dense" and supports(kernel, normalization, weights, mask):
                return fn
        return dense
    return _BACKENDS[name][0]


def dense(kernel, proj, values, weights, mask, normalization):
    """Reference backend: dense scores (B, H, N, M), the matrix A, then A @ values."""
    from ..autograd.ops import broadcast_to, matmul
    scores = kernel.scores(proj)
    B, H, M = values.shape[0], values.shape[1], values.shape[2]
    full = (B, H, scores.shape[2], M)
    if tuple(scores.shape) != full:
        scores = broadcast_to(scores, full)
    return matmul(transform_matrix(scores, weights, mask, normalization), values)


register_backend("dense", dense)
