"""How an op is declared.

An op is a :class:`Primitive`: a forward on raw arrays plus one vector-Jacobian product (VJP) per
differentiable input, stated next to each other::

    multiply = primitive(lambda x, y: x * y, "multiply")
    multiply.defvjp(lambda g, out, x, y: g * y,      # d/dx: g * y
                    lambda g, out, x, y: g * x)      # d/dy: g * x

A VJP receives the upstream gradient ``g``, the op's output ``out`` (only when the primitive was
declared with ``save_output=True``, otherwise None), the op's positional inputs and its keyword
parameters. It must be written with ordinary operators and with the public ops, never with
``np.`` calls directly: the engine then runs the *same* VJP code on raw arrays (the fast path: every
op called with raw arrays returns raw arrays) and on Tensors when ``create_graph=True`` (every op
called with Tensors records a graph), which yields higher-order gradients for free.

The engine, not the op, does the bookkeeping once: it undoes broadcasting, accumulates, checks
dtypes and devices, calls only the VJPs of inputs that need a gradient, and frees nodes.
"""
import numpy as np

from ..errors import AnomalyError, DeviceError, DTypeError
from .engine import Node, state
from .tensor import Tensor

_SCALARS = (int, float, bool)
# NumPy < 2 promotes a 0-d float32 array times a Python float to float64 (value-based casting
# treats both as scalars); NumPy 2 keeps float32 (NEP 50). On old NumPy, Python floats are given
# the tensors' dtype explicitly so that "Python scalars take the tensor's dtype" holds everywhere.
_LEGACY_PROMOTION = int(np.__version__.split(".")[0]) < 2


class Primitive:
    """A differentiable op: ``forward(*arrays, **params) -> array`` plus per-input VJPs.

    ``save_output``: keep the forward output for the VJP (e.g. exp, tanh, softmax).
    ``twice_differentiable``: False when the VJP uses raw-array code (a fused kernel); asking for
    ``create_graph=True`` through such an op then raises instead of returning wrong numbers.
    """

    __slots__ = ("name", "forward", "vjps", "save_output", "twice_differentiable")

    def __init__(self, forward, name, save_output=False, twice_differentiable=True):
        self.name = name
        self.forward = forward
        self.vjps = ()
        self.save_output = save_output
        self.twice_differentiable = twice_differentiable

    def defvjp(self, *vjps):
        """Attach one VJP per positional input (None for an input that is never differentiable)."""
        self.vjps = vjps
        return self

    def defvjp_argnum(self, vjp):
        """Attach one VJP for any number of inputs: ``vjp(argnum, g, out, *inputs, **params)``.

        For variadic ops (concatenate, stack, einsum) whose inputs all follow one rule.
        """
        self.vjps = _ByArgnum(vjp)
        return self

    def __repr__(self):
        return f"<primitive {self.name}>"

    def __call__(self, *args, **params):
        raw = None
        requires = False
        dtype = None
        on_gpu = None
        for i, a in enumerate(args):
            if type(a) is Tensor or isinstance(a, Tensor):
                if raw is None:
                    raw = list(args)
                d = raw[i] = a.data
                if a.requires_grad:
                    requires = True
            elif a is None or type(a) in _SCALARS:
                continue
            else:
                d = a
            kind = getattr(d, "dtype", None)
            if kind is None:
                continue
            if kind.kind == "f":
                if dtype is None:
                    dtype = kind
                elif kind is not dtype and kind != dtype:
                    raise DTypeError(
                        f"{self.name}: cannot mix {dtype} and {kind} inputs; convert one explicitly "
                        f"(e.g. x.astype('{dtype}')): itnet-np never upcasts silently")
            gpu = type(d) is not np.ndarray and hasattr(d, "__cuda_array_interface__")
            if on_gpu is None:
                on_gpu = gpu
            elif gpu is not on_gpu:
                raise DeviceError(
                    f"{self.name}: inputs live on different devices (cpu and cuda); "
                    "move them with .to('cpu') or .to('cuda') first")
        if raw is None:
            # Raw arrays in, raw array out: the fast path VJPs run on.
            return self.forward(*args, **params)
        if _LEGACY_PROMOTION and dtype is not None:
            raw = [np.asarray(a, dtype) if type(a) is float else a for a in raw]
        out = self.forward(*raw, **params)
        if type(out) is not np.ndarray and isinstance(out, np.generic):
            out = np.asarray(out)  # NumPy returns scalars from 0-d ops; a Tensor always holds an array
        if state.anomaly:
            _check_finite(self, out, args, "forward output")
        if not (requires and state.grad_enabled):
            return Tensor._wrap(out, None)
        needs = tuple([isinstance(a, Tensor) and a.requires_grad for a in args])
        node = Node(self, args, raw, params, out if self.save_output else None, needs)
        if state.anomaly:
            node.site = _creation_site()
        return Tensor._wrap(out, node)


class _ByArgnum:
    """Looks like a tuple of VJPs of any length, each the shared ``vjp`` bound to its argnum."""

    __slots__ = ("vjp",)

    def __init__(self, vjp):
        self.vjp = vjp

    def __len__(self):
        return 1 << 30

    def __getitem__(self, argnum):
        return lambda *args, **params: self.vjp(argnum, *args, **params)


def primitive(forward, name, save_output=False, twice_differentiable=True):
    """Declare a primitive (see the module docstring); returns it for ``.defvjp``."""
    return Primitive(forward, name, save_output, twice_differentiable)


def _creation_site():
    import traceback
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "/itnet_np/autograd/" not in frame.filename.replace("\\", "/"):
            return f"{frame.filename}:{frame.lineno} in {frame.name}"
    return "<unknown>"


def _check_finite(prim, array, args, what):
    xp_array = array
    try:
        finite = bool(xp_array.dtype.kind not in "fc" or np.isfinite(xp_array).all())
    except TypeError:
        finite = True
    if finite:
        return
    origins = []
    for i, a in enumerate(args):
        if isinstance(a, Tensor):
            site = getattr(a.node, "site", None) if a.node is not None else None
            origin = f"op '{a.node.prim.name}' at {site}" if a.node is not None else "a leaf tensor"
            origins.append(f"input {i} ({a.dtype}{list(a.shape)}) came from {origin}")
    raise AnomalyError(
        f"detect_anomaly: op '{prim.name}' produced NaN or Inf in its {what}"
        + ("; " + "; ".join(origins) if origins else ""))
