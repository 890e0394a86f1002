"""The reverse-mode engine: graph nodes and the iterative backward pass.

A node records one application of a primitive: the primitive, its inputs (Tensors or constants),
its keyword parameters, and -- only if the primitive asks -- its output array. A node never refers
to the Tensor it produced, so graphs hold no reference cycles and are freed by refcounting.

Backward visits nodes in reverse topological order (an iterative depth-first sort, so a chain of
100 000 ops needs no recursion) and, for each node, calls the VJPs of the inputs that need a
gradient -- or, for a primitive declared with ``defvjp_all``, its one VJP for all inputs, once.
Undoing broadcasting, accumulating, the dtype check of every gradient, the check that
no saved tensor was modified in place, tensor hooks, anomaly checks and freeing nodes all happen
here, once, for every op. The modes (modes.py) belong to the calling thread: a backward pass
turns recording off (or on, for create_graph) in its own thread only.
"""
import threading

from ..errors import DTypeError, GraphError, ShapeError
from .hooks import run_hooks
from .modes import detect_anomaly, enable_grad, is_grad_enabled, modes, no_grad, open_block, state  # noqa: F401
from .promotion import restore_gradient_dtype

# In-place writes through the Tensor API, over all threads (see Tensor._bump). A node records the
# count at its creation; while it is unchanged, no input or output of the node can have changed.
WRITES = [0]
_writes_lock = threading.Lock()


def count_write():
    with _writes_lock:
        WRITES[0] += 1


class Node:
    """One recorded op application (see the module docstring).

    ``versions``: the ``_version`` of each input at the forward, or None when all were 0 (the
    common case, kept cheap); ``writes``: WRITES at the forward; ``dirty``: the saved output was
    modified in place since; ``hooks``: the hooks registered on the output tensor; ``residuals``:
    what a ``saves_residuals`` forward kept for its VJP (None otherwise), freed with ``out``.
    """

    __slots__ = ("dirty", "hooks", "inputs", "needs", "out", "params", "prim", "raw", "residuals", "site",
                 "versions", "writes")

    def __init__(self, prim, inputs, raw, params, out, needs, versions, residuals=None):
        self.prim = prim
        self.inputs = inputs  # the op's arguments: Tensors and constants
        self.raw = raw        # the same with each Tensor replaced by its array (fast-path VJPs)
        self.params = params
        self.out = out
        self.needs = needs
        self.site = None
        self.versions = versions
        self.writes = WRITES[0]
        self.dirty = False
        self.hooks = None
        self.residuals = residuals

    def __repr__(self):
        return f"<node {self.prim.name}{' (freed)' if self.inputs is None else ''}>"


def _consumer_counts(root):
    """For every node reachable from ``root``: how many edges lead into it from its consumers."""
    counts = {root: 0}
    stack = [root]
    while stack:
        node = stack.pop()
        inputs = node.inputs
        if inputs is None:
            raise GraphError(
                f"backward through op '{node.prim.name}' a second time: its graph was freed by the first "
                "backward. Pass retain_graph=True to the first backward() if you need to backpropagate twice.")
        for a, needed in zip(inputs, node.needs):
            if needed:
                parent = a.node
                if parent is not None:
                    if parent in counts:
                        counts[parent] += 1
                    else:
                        counts[parent] = 1
                        stack.append(parent)
    return counts


def outside_leaves(root, inputs):
    """Leaves that require grad, are not in ``inputs`` and feed ``root``; and whether every node
    on the way can be differentiated twice.

    Function transforms use it to decide whether their backward pass must itself be recorded:
    an outer computation may differentiate through a closed-over tensor.
    """
    if root.node is None:
        return [], True
    own = {id(t) for t in inputs}
    leaves, twice = {}, True
    seen = {root.node}
    stack = [root.node]
    while stack:
        node = stack.pop()
        twice = twice and node.prim.twice_differentiable
        for a, needed in zip(node.inputs or (), node.needs):
            if not needed:
                continue
            if a.node is None:
                if id(a) not in own:
                    leaves[id(a)] = a
            elif a.node not in seen:
                seen.add(a.node)
                stack.append(a.node)
    return list(leaves.values()), twice


def unbroadcast(g, shape):
    """Sum ``g`` over the axes that broadcasting added or stretched, so that it has ``shape``."""
    from .ops.reduce import sum as _sum
    from .ops.shape import reshape
    lead = g.ndim - len(shape)
    if lead < 0:
        raise ShapeError(f"internal: gradient of shape {tuple(g.shape)} cannot reduce to {tuple(shape)}")
    axes = tuple(range(lead)) + tuple(
        lead + i for i, s in enumerate(shape) if s == 1 and g.shape[lead + i] != 1)
    if axes:
        g = _sum(g, axis=axes)
    if tuple(g.shape) != tuple(shape):
        g = reshape(g, shape)
    return g


def check_versions(node):
    """Raise if an input the node saved, or its saved output, was modified in place since the forward.

    Versions only grow, so a difference means a write through the Tensor API (an in-place operator,
    ``t[i] = v`` or ``t.data = ...``) happened in between: the VJP would read the new values and
    return a wrong gradient.
    """
    from ..errors import describe
    from .tensor import Tensor
    name = node.prim.name
    if node.dirty:
        raise GraphError(
            f"backward through op '{name}': its output was modified in place after the forward, and "
            f"'{name}' saved it for its gradient. Modify a copy instead (y = y * 1 or y.detach().copy()).")
    saved = node.versions
    for i, a in enumerate(node.inputs):
        if isinstance(a, Tensor) and a._version != (saved[i] if saved else 0):
            raise GraphError(
                f"backward through op '{name}': its input {i} ({describe(a._data)}) was modified in place "
                f"after the forward (version {saved[i] if saved else 0} then, {a._version} now), so its "
                f"gradient would be wrong. Modify a copy, or run the forward again after the change.")


def run_backward(root, seed, retain_graph=False, create_graph=False, targets=None):
    """Backpropagate ``seed`` (dL/d root) through the graph of ``root``.

    Nodes are processed in topological order (Kahn's algorithm: a node runs once all of its
    consumers have sent their gradient), so no recursion and no explicit sort are needed.
    With ``targets=None`` the gradients of leaves that require grad are accumulated into their
    ``.grad``. With a list of target Tensors, their gradients are returned (None where a target is
    unreachable) and no ``.grad`` is touched. Tensor hooks see (and may replace) the complete
    gradient of their tensor before it flows on.
    """
    from .tensor import Tensor
    if root.node is None:
        if root._hooks:
            seed = run_hooks(root._hooks, seed, create_graph)
        if targets is None:
            if root.requires_grad:
                accumulate_leaf(root, seed, create_graph)
            return None
        return [seed if t is root else None for t in targets]
    counts = _consumer_counts(root.node)
    if create_graph:
        for node in counts:
            if not node.prim.twice_differentiable:
                raise GraphError(
                    f"op '{node.prim.name}' has no differentiable VJP (a fused kernel): "
                    "create_graph=True / higher-order gradients are not supported through it")
        if not isinstance(seed, Tensor):
            seed = Tensor._wrap(seed, None)
    elif isinstance(seed, Tensor):
        seed = seed._data
    target_nodes = {}
    target_leaves = {}
    if targets is not None:
        for k, t in enumerate(targets):
            if t.node is not None:
                target_nodes.setdefault(t.node, []).append(k)
            else:
                target_leaves.setdefault(id(t), []).append(k)
    results = [None] * len(targets) if targets is not None else None
    leaf_grads = {}
    grads = {root.node: seed}
    ready = [root.node]
    prev_enabled, anomaly = modes()
    open_block(1)
    state.grad_enabled = create_graph  # this thread only
    try:
        # The hot loop of the engine: kept flat (few helper calls) because it runs once per node.
        while ready:
            node = ready.pop()
            g = grads.pop(node)
            if node.hooks:
                g = run_hooks(node.hooks, g, create_graph)
            if target_nodes and node in target_nodes:
                for k in target_nodes[node]:
                    results[k] = g
            prim = node.prim
            inputs = node.inputs
            if node.writes != WRITES[0]:  # something was written in place since the forward
                check_versions(node)
            if create_graph:
                args = inputs
                out = Tensor._wrap(node.out, node) if node.out is not None else None
            else:
                args = node.raw
                out = node.out
            params = node.params
            if prim.saves_residuals:
                params = dict(params, residuals=node.residuals)
            needs = node.needs
            vjps = prim.vjps
            every = prim.vjp_all
            if every is not None:  # one call for all inputs (a fused kernel's backward)
                every = every(g, out, needs, *args, **params)
                if len(every) != len(needs):
                    raise GraphError(f"op '{prim.name}': its VJP returned {len(every)} gradients for "
                                     f"{len(needs)} inputs")
            i = -1
            for needed in needs:
                i += 1
                if not needed:
                    continue
                if every is None:
                    vjp = vjps[i] if i < len(vjps) else None
                    if vjp is None:
                        raise GraphError(f"op '{prim.name}' is not differentiable with respect to input {i}")
                    gi = vjp(g, out, *args, **params)
                else:
                    gi = every[i]
                    if gi is None:
                        raise GraphError(f"op '{prim.name}': its VJP gave no gradient for input {i}, "
                                         "which needs one")
                parent = inputs[i]
                pdata = parent._data
                if gi.shape != pdata.shape:
                    gi = unbroadcast(gi, pdata.shape)
                if gi.dtype is not pdata.dtype and gi.dtype != pdata.dtype:
                    gi = restore_gradient_dtype(prim, i, gi, pdata)
                if anomaly:
                    from .primitive import _check_finite
                    _check_finite(prim, gi._data if isinstance(gi, Tensor) else gi, inputs,
                                  f"gradient for input {i}")
                pnode = parent.node
                if pnode is None:
                    key = id(parent)
                    if key in leaf_grads:
                        entry = leaf_grads[key]
                        entry[1] = entry[1] + gi
                    else:
                        leaf_grads[key] = [parent, gi]
                else:
                    if pnode in grads:
                        grads[pnode] = grads[pnode] + gi
                    else:
                        grads[pnode] = gi
                    left = counts[pnode] - 1
                    counts[pnode] = left
                    if not left:
                        ready.append(pnode)
            if not retain_graph:
                node.inputs = node.raw = node.out = node.params = node.residuals = None
    finally:
        state.grad_enabled = prev_enabled
        open_block(-1)
    for entry in leaf_grads.values():
        if entry[0]._hooks:
            entry[1] = run_hooks(entry[0]._hooks, entry[1], create_graph)
    if targets is None:
        for leaf, g in leaf_grads.values():
            if leaf.requires_grad:
                accumulate_leaf(leaf, g, create_graph)
        return None
    for key, ks in target_leaves.items():
        if key in leaf_grads:
            for k in ks:
                results[k] = leaf_grads[key][1]
    return results


def accumulate_leaf(leaf, g, create_graph):
    """``leaf.grad += g`` without ever aliasing ``g`` (or another leaf's gradient)."""
    from .tensor import Tensor
    if create_graph:
        from .ops.convert import copy
        g = g if isinstance(g, Tensor) else Tensor._wrap(g, None)
        leaf.grad = copy(g) if leaf.grad is None else leaf.grad + g
    else:
        g = g._data if isinstance(g, Tensor) else g
        if leaf.grad is None:
            leaf.grad = Tensor._wrap(g.copy(), None)
        else:
            leaf.grad = Tensor._wrap(leaf.grad._data + g, None)


def check_seed(root, gradient):
    """Validate the ``gradient`` argument of ``backward`` and return it as a raw array or Tensor."""
    from .tensor import Tensor
    if gradient is None:
        if root._data.size != 1:
            raise GraphError(
                f"backward() on a non-scalar tensor of shape {tuple(root.shape)} needs `gradient`: pass "
                f"an array of the same shape (dL/d output), or reduce to a scalar first, e.g. y.sum().backward()")
        return _ones_like(root._data)
    gdata = gradient._data if isinstance(gradient, Tensor) else gradient
    if getattr(gdata, "shape", None) != root._data.shape:
        raise ShapeError(
            f"backward(gradient=...): gradient has shape {tuple(getattr(gdata, 'shape', ()))}, "
            f"expected the output's shape {tuple(root.shape)}")
    if gdata.dtype != root._data.dtype:
        raise DTypeError(f"backward(gradient=...): gradient is {gdata.dtype}, expected {root.dtype}")
    return gradient


def _ones_like(a):
    from .backend import xp_of
    return xp_of(a).ones_like(a)
