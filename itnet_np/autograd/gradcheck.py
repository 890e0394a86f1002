"""Gradient checks by random directional derivatives, in float64.

For f: (x_1..x_k) -> y, draw a random cotangent u (shape of y) and random directions v_i. The
engine's VJP gives   a = sum_i < vjp_i(u), v_i >,   and central differences give

    n = ( <u, f(x + eps v)> - <u, f(x - eps v)> ) / (2 eps),

with all inputs perturbed at once. The check passes when |a - n| <= atol + rtol |n| for every
trial. Random vectors on both sides (never an all-ones cotangent alone) catch transposed and
mis-summed gradients that a single direction can hide. ``gradgradcheck`` applies the same check
to the map (x, u) -> vjp(u) computed with create_graph=True, i.e. to the second derivatives.
"""
import numpy as np

from ..errors import DTypeError, GraphError
from .backend import device_of, to_device, xp_of
from .tensor import Tensor
from .transforms import vjp


def _arrays(inputs):
    """The inputs' arrays (NumPy or CuPy: float64 checks run on the device the inputs live on)."""
    arrays = [x.data if isinstance(x, Tensor) else x for x in inputs]
    return [a if device_of(a) == "cuda" else np.asarray(a) for a in arrays]


def _outputs(y):
    return list(y) if isinstance(y, (tuple, list)) else [y]


def gradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, trials=3, seed=0, raise_exception=True):
    """Check the VJPs of ``f`` at ``inputs`` (float64 arrays/Tensors). Returns True or raises."""
    arrays = _arrays(inputs)
    for i, a in enumerate(arrays):
        if a.dtype != np.float64:
            raise DTypeError(f"gradcheck: input {i} is {a.dtype}; gradient checks need float64 inputs")
    rng = np.random.default_rng(seed)
    device = device_of(arrays[0]) if arrays else "cpu"
    xp = xp_of(arrays[0]) if arrays else np
    draw = lambda shape: to_device(rng.standard_normal(shape), device)

    def pack(y):
        ys = _outputs(y)
        for y_ in ys:
            if not isinstance(y_, Tensor):
                raise GraphError(f"gradcheck: f must return Tensors, got {type(y_).__name__}")
        return ys

    for trial in range(trials):
        vs = [draw(a.shape) for a in arrays]
        combined = lambda *xs: _stack_outputs(pack(f(*xs)))
        y, pullback = vjp(combined, *[Tensor(a) for a in arrays])
        u = draw(y.shape)
        analytic = sum(float(xp.sum(g.data * v)) for g, v in zip(pullback(u), vs))
        # Not under no_grad: f may itself differentiate (gradgradcheck) and needs the graph.
        plus = combined(*[Tensor(a + eps * v) for a, v in zip(arrays, vs)]).data
        minus = combined(*[Tensor(a - eps * v) for a, v in zip(arrays, vs)]).data
        numeric = float(xp.sum(u * (plus - minus))) / (2 * eps)
        if not abs(analytic - numeric) <= atol + rtol * abs(numeric):
            if raise_exception:
                raise AssertionError(
                    f"gradcheck failed (trial {trial}): VJP gives {analytic!r}, central difference "
                    f"gives {numeric!r} (|diff| = {abs(analytic - numeric):.3e}, "
                    f"allowed {atol + rtol * abs(numeric):.3e})")
            return False
    return True


def _stack_outputs(ys):
    """Flatten and concatenate several outputs into one vector Tensor (one output passes through)."""
    if len(ys) == 1:
        return ys[0]
    from .ops import concatenate, reshape
    return concatenate([reshape(y, (-1,)) for y in ys], axis=0)


def gradgradcheck(f, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, trials=3, seed=0, raise_exception=True):
    """gradcheck applied to (x, u) -> vjp_f(x)(u): checks second-order derivatives of ``f``."""
    arrays = _arrays(inputs)
    y0 = _stack_outputs(_outputs(f(*[Tensor(a) for a in arrays])))
    u0 = to_device(np.random.default_rng(seed + 1).standard_normal(y0.shape), device_of(y0.data))

    def first_order(*xs_and_u):
        *xs, u = xs_and_u
        _, pullback = vjp(lambda *zs: _stack_outputs(_outputs(f(*zs))), *xs)
        return tuple(pullback(u))

    return gradcheck(first_order, arrays + [u0], eps=eps, atol=atol, rtol=rtol, trials=trials,
                     seed=seed, raise_exception=raise_exception)
