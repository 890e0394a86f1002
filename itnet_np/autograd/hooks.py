"""Tensor hooks: ``Tensor.register_hook(fn)`` and ``Tensor.retain_grad()``.

A hook sees the complete gradient of its tensor during a backward pass, once all consumers have
contributed, and may replace it: what it returns flows on to the tensor's inputs (and, on a leaf,
accumulates into ``.grad``). Hooks of a leaf live on the tensor; hooks of an intermediate tensor
live on the node that produced it, where the engine finds them when it reaches that node.
"""
import weakref

from ..errors import DTypeError, ShapeError, describe


class HookHandle:
    """Returned by ``Tensor.register_hook``; ``remove()`` unregisters the hook."""

    __slots__ = ("fn", "hooks")

    def __init__(self, hooks, fn):
        if not callable(fn):
            raise TypeError(f"register_hook: expected a callable fn(grad), got {type(fn).__name__}")
        hooks.append(fn)
        self.hooks, self.fn = hooks, fn

    def remove(self):
        for k, h in enumerate(self.hooks):
            if h is self.fn:
                del self.hooks[k]
                return


class Retain:
    """The hook behind ``Tensor.retain_grad``: accumulates the gradient into the tensor's ``.grad``.

    It holds the tensor weakly: it lives on the tensor's own node, and a strong reference would
    make a cycle (tensor -> node -> hook -> tensor).
    """

    __slots__ = ("ref",)

    def __init__(self, tensor):
        self.ref = weakref.ref(tensor)


def run_hooks(hooks, g, create_graph):
    """Apply a tensor's hooks, in registration order, to its complete gradient ``g``; then store it
    if the tensor retains its gradient (last, as torch does, so ``.grad`` shows what flows on).

    A user hook receives the gradient as a Tensor (one that records a graph under
    create_graph=True) and returns a replacement (Tensor or array, same shape and dtype) or None.
    """
    from .engine import accumulate_leaf
    from .tensor import Tensor
    retain = None
    for hook in list(hooks):
        if type(hook) is Retain:
            retain = hook.ref()
            continue
        wrapped = g if isinstance(g, Tensor) else Tensor._wrap(g, None)
        new = hook(wrapped)
        if new is None:
            continue
        data = new._data if isinstance(new, Tensor) else new
        shape, dtype = getattr(data, "shape", None), getattr(data, "dtype", None)
        if shape != wrapped.shape or dtype != wrapped.dtype:
            raise (ShapeError if shape != wrapped.shape else DTypeError)(
                f"hook {getattr(hook, '__name__', hook)!r} returned {describe(data)}; a hook returns None "
                f"or a gradient like the one it received ({describe(wrapped._data)})")
        if create_graph:
            g = new if isinstance(new, Tensor) else Tensor._wrap(new, None)
        else:
            g = data
    if retain is not None:
        accumulate_leaf(retain, g, create_graph)
    return g
