"""Backends: who evaluates sum_j A_ij v_j for one head, given a kernel's projection.

A backend is ``fn(kernel, proj, values, weights, support, normalization) -> (B, H, N, d)`` with
values (B, H, M, d), weights None or (B|1, H|1, M) and ``support`` the call's support.SupportPlan
(kind, window, radius, grid facts, the user's mask if any, never per head); it must
return what the dense reference returns (see normalization.py for the formulas), differentiably.
Register one with ``register_backend(name, fn, supports=None, pays=None)``; ``supports(kernel,
normalization, weights, support) -> bool`` tells 'auto' whether it can run the call at all, ``pays(kernel,
proj, values, weights, support, normalization) -> bool`` whether it is worth it for this call (sizes,
data; default: always). 'dense' is the reference and always works.

``backend='numba'`` imports ``itnet_np.transform.fused`` on first use, which registers itself; when
that import fails (numba missing or broken) asking for 'numba' raises ConfigError naming the cause.
'auto' takes the first registered non-dense backend that supports the call and, per call, uses it
when it pays, else 'dense' (so small problems stay on the exact dense path; fused.backend.MIN_PAIRS
holds the measured crossovers).
"""
import importlib

from ..errors import ConfigError
from .normalization import transform_matrix

_BACKENDS = {}
_FUSED_MODULE = "itnet_np.transform.fused"
_FUSED_NAMES = ("numba",)
_tried_fused = False
_fused_error = None


def _always(*args):
    return True


def register_backend(name, fn, supports=None, pays=None):
    """Make ``fn`` available as ``IntegralTransform(..., backend=name)`` (see the module docstring)."""
    _BACKENDS[name] = (fn, supports or _always, pays or _always)


def available_backends():
    _load_fused()
    return tuple(_BACKENDS)


def _load_fused():
    """Import the fused package once; remember why it failed (numba missing, broken llvmlite...)."""
    global _tried_fused, _fused_error
    if not _tried_fused:
        _tried_fused = True
        try:
            importlib.import_module(_FUSED_MODULE)
        except Exception as exc:  # noqa: BLE001  ImportError, or numba/llvmlite failing to load
            _fused_error = exc


def check_backend(name):
    """``name`` if it is 'dense', 'auto' or a registered backend (loading the fused ones first)."""
    if not isinstance(name, str):
        raise ConfigError(f"backend must be a string ('dense', 'auto' or a registered backend), got {name!r}")
    if name in ("dense", "auto"):
        return name
    _load_fused()
    if name not in _BACKENDS:
        if name in _FUSED_NAMES and _fused_error is not None:
            raise ConfigError(
                f"backend={name!r} needs numba, which cannot run here: importing {_FUSED_MODULE} failed "
                f"with {type(_fused_error).__name__}: {_fused_error}. Install numba (pip install numba) "
                "or use backend='dense' (or 'auto', which falls back to 'dense')") from _fused_error
        raise ConfigError(f"backend: {name!r} is not available; registered: {tuple(_BACKENDS)} "
                          "(and 'auto')")
    return name


def select(name, kernel, normalization, weights, support):
    """The backend function for this call (resolving 'auto': a fused backend when it supports the
    call and, checked per call, it pays; else dense)."""
    if name == "auto":
        _load_fused()
        for other, (fn, supports, pays) in _BACKENDS.items():
            if other != "dense" and supports(kernel, normalization, weights, support):
                return fn if pays is _always else _when_it_pays(fn, pays)
        return dense
    return _BACKENDS[name][0]


def _when_it_pays(fn, pays):
    def auto(kernel, proj, values, weights, support, normalization):
        use = fn if pays(kernel, proj, values, weights, support, normalization) else dense
        return use(kernel, proj, values, weights, support, normalization)
    return auto


def dense(kernel, proj, values, weights, support, normalization):
    """Reference backend: dense scores (B, H, N, M), the matrix A, then A @ values (the only backend
    that forms the N x M mask, ``support.dense_mask()``)."""
    from ..autograd.ops import broadcast_to, matmul
    scores = kernel.scores(proj)
    B, H, M = values.shape[0], values.shape[1], values.shape[2]
    full = (B, H, scores.shape[2], M)
    if tuple(scores.shape) != full:
        scores = broadcast_to(scores, full)
    return matmul(transform_matrix(scores, weights, support.dense_mask(), normalization), values)


register_backend("dense", dense)
