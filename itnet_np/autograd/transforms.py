"""Function transforms with JAX's names: vjp, grad, value_and_grad.

They run on the engine's ``run_backward`` with explicit targets, so they never touch ``.grad``.
When an argument already belongs to an outer graph (a Tensor that requires grad), the backward
pass is itself recorded, so transforms nest: ``grad(grad(f))`` gives second derivatives.
"""
from ..errors import GraphError, ShapeError
from .engine import check_seed, outside_leaves, run_backward
from .primitive import primitive
from .tensor import Tensor


def _as_inputs(primals):
    """Tensors to differentiate with respect to; arrays become fresh leaves that require grad."""
    inputs, nested = [], False
    for p in primals:
        if isinstance(p, Tensor) and p.requires_grad:
            inputs.append(p)
            nested = True
        else:
            inputs.append(Tensor(p.data if isinstance(p, Tensor) else p, requires_grad=True))
    return inputs, nested


def _zeros_like(t):
    from .backend import xp_of
    return Tensor._wrap(xp_of(t.data).zeros_like(t.data), None)


def _no_second_order(g, out, needs, *args):
    raise GraphError(
        "this gradient was computed through an op without a differentiable VJP (a fused kernel); "
        "it is correct to first order, but cannot be differentiated again")


# Identity on its first argument; its other arguments only connect it to the outer graph, so that
# an attempt to backpropagate through a first-order-only gradient raises instead of silently
# treating it as a constant.
_first_order_only = primitive(lambda g, *leaves: g, "first_order_only").defvjp_all(_no_second_order)


def vjp(f, *primals):
    """Return ``(f(*primals), vjp_fn)``; ``vjp_fn(cotangent)`` gives one gradient per primal.

    Each gradient is a Tensor. If a primal or the cotangent requires grad, the gradients are
    themselves differentiable.
    """
    inputs, nested = _as_inputs(primals)
    out = f(*inputs)
    if not isinstance(out, Tensor):
        raise GraphError(f"vjp: f must return a Tensor, got {type(out).__name__}")

    def vjp_fn(cotangent):
        if not out.requires_grad:
            return tuple(_zeros_like(t) for t in inputs)
        seed = check_seed(out, cotangent)
        create = nested or (isinstance(seed, Tensor) and seed.requires_grad)
        outside, twice = outside_leaves(out, inputs) if not create else ([], True)
        # Closed-over tensors that require grad: record the backward so an outer computation can
        # differentiate through it -- unless a fused (first-order-only) op is in the graph; then
        # the gradients are first order and marked so that differentiating them again raises.
        guard = bool(outside) and not twice
        create = create or (bool(outside) and twice)
        grads = run_backward(out, seed, retain_graph=True, create_graph=create, targets=inputs)
        result = []
        for t, g in zip(inputs, grads):
            if guard and g is not None:
                result.append(_first_order_only(g.data if isinstance(g, Tensor) else g.copy(), *outside))
            elif g is None:
                result.append(_zeros_like(t))
            elif isinstance(g, Tensor):
                from .ops.convert import copy
                result.append(copy(g))
            else:
                # A VJP may pass the cotangent through untouched (reshape, add): copy so that the
                # returned gradient never aliases the caller's cotangent.
                result.append(Tensor._wrap(g.copy(), None))
        return tuple(result)

    return out, vjp_fn


def value_and_grad(f, argnums=0):
    """``value_and_grad(f)(*args) -> (f(*args), df/dargs[argnums])`` for scalar-valued ``f``."""
    single = isinstance(argnums, int)
    nums = (argnums,) if single else tuple(argnums)

    def wrapped(*args):
        chosen = [args[i] for i in nums]

        def partial(*xs):
            full = list(args)
            for i, x in zip(nums, xs):
                full[i] = x
            return f(*full)

        value, pullback = vjp(partial, *chosen)
        if value.size != 1:
            raise ShapeError(f"grad: f must return a scalar, got shape {tuple(value.shape)}; "
                             "use itn.vjp for non-scalar outputs")
        from .backend import xp_of
        grads = pullback(xp_of(value.data).ones_like(value.data))
        return value, grads[0] if single else grads

    return wrapped


def grad(f, argnums=0):
    """``grad(f)(*args)``: gradient of scalar ``f`` with respect to ``args[argnums]``."""
    vg = value_and_grad(f, argnums)
    return lambda *args: vg(*args)[1]
