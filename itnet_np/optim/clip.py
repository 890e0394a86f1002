"""Gradient clipping by global norm (torch's clip_grad_norm_) and by value.

    total = || (||g_1||_p, ..., ||g_n||_p) ||_p         (the p-norm of all gradients as one vector)
    coef  = min(1, max_norm / (total + 1e-6))
    g_i  <- coef * g_i

Parameters whose grad is None are ignored. The 1e-6 keeps the division finite for zero
gradients and makes the clipped norm land just below max_norm, as in torch.
"""
import math

from ..autograd.backend import xp_of
from ..autograd.tensor import Tensor
from ..errors import ConfigError, GraphError


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    elif hasattr(parameters, "parameters"):
        parameters = parameters.parameters()
    out = []
    for item in parameters:
        p = item[1] if isinstance(item, tuple) else item
        if p.grad is not None:
            out.append(p)
    return out


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients of ``parameters`` (tensors, (name, tensor) pairs, or a Module) in place so
    that their global ``norm_type``-norm is at most ``max_norm``. Returns the norm before clipping
    as a Python float (inf for norm_type=inf means the largest absolute entry)."""
    max_norm, norm_type = float(max_norm), float(norm_type)
    if max_norm < 0 or norm_type <= 0:
        raise ConfigError(f"clip_grad_norm_: need max_norm >= 0 and norm_type > 0, got "
                          f"{max_norm} and {norm_type}")
    params = _grads(parameters)
    if not params:
        return 0.0
    grads = [p.grad.data if isinstance(p.grad, Tensor) else p.grad for p in params]
    if math.isinf(norm_type):
        total = max(float(xp_of(g).abs(g).max()) if g.size else 0.0 for g in grads)
    else:
        per = [float(xp_of(g).sum(xp_of(g).abs(g) ** norm_type)) ** (1 / norm_type) for g in grads]
        total = math.fsum(n ** norm_type for n in per) ** (1 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise GraphError(f"clip_grad_norm_: the total gradient norm is {total}; pass "
                         "error_if_nonfinite=False to clip anyway")
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for p, g in zip(params, grads):
            # A new array, not an in-place product: a gradient array may be shared with the caller.
            # asarray: for a 0-d gradient the product is a NumPy scalar.
            p.grad = Tensor._wrap(xp_of(g).asarray(g * g.dtype.type(coef)), None)
    return total


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient entry to [-clip_value, clip_value] in place."""
    clip_value = float(clip_value)
    if not clip_value >= 0:
        raise ConfigError(f"clip_grad_value_: clip_value must be >= 0, got {clip_value}")
    for p in _grads(parameters):
        g = p.grad.data if isinstance(p.grad, Tensor) else p.grad
        xp, low, high = xp_of(g), g.dtype.type(-clip_value), g.dtype.type(clip_value)
        p.grad = Tensor._wrap(xp.asarray(xp.clip(g, low, high)), None)  # typed bounds keep float32
