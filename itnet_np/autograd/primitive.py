"""How an op is declared, and what happens when one is called.

An op is a :class:`Primitive`: a forward on raw arrays plus one vector-Jacobian product (VJP) per
differentiable input, stated next to each other::

    multiply = primitive(lambda x, y: x * y, "multiply")
    multiply.defvjp(lambda g, out, x, y: g * y,      # d/dx: g * y
                    lambda g, out, x, y: g * x)      # d/dy: g * x

A VJP receives the upstream gradient ``g``, the op's output ``out`` (only when the primitive was
declared with ``save_output=True``, otherwise None), the op's positional inputs and its keyword
parameters. An op whose gradients come out of one computation (a fused kernel's backward, the
slices of concatenate) declares a single VJP for all of its inputs instead::

    concat.defvjp_all(lambda g, out, needs, *xs, axis: ...)   # -> one gradient (or None) per input

``needs[i]`` says whether input ``i`` needs a gradient; the engine calls it once per node and
backward. A forward declared with ``saves_residuals=True`` returns ``(out, residuals)``: the node
keeps ``residuals`` (e.g. a fused kernel's per-row log-sum-exp) beside ``out``, hands them to the
VJP as the keyword ``residuals`` and frees them with the node; callers only ever see ``out``.

Either kind of VJP must be written with ordinary operators and with the public ops, never with
``np.`` calls directly: the engine then runs the *same* VJP code on raw arrays (the fast path: every
op called with raw arrays returns raw arrays) and on Tensors when ``create_graph=True`` (every op
called with Tensors records a graph), which yields higher-order gradients for free.

The engine, not the op, does the bookkeeping once: it undoes broadcasting, accumulates, checks
dtypes and devices, calls only the VJPs of inputs that need a gradient, and frees nodes.

Every op follows one promotion rule (promotion.py): integers, bools and Python numbers take
the float dtype of the op's data; float32 never meets float64 silently.
"""
import numpy as np

from ..errors import AnomalyError, DeviceError, ITNetError
from . import promotion
from .engine import Node
from .modes import OPEN, state
from .promotion import LEGACY_PROMOTION
from .tensor import Tensor

_SCALARS = (int, float, bool)


class Primitive:
    """A differentiable op: ``forward(*arrays, **params) -> array`` plus per-input VJPs.

    ``save_output``: keep the forward output for the VJP (e.g. exp, tanh, softmax).
    ``twice_differentiable``: False when the VJP uses raw-array code (a fused kernel); asking for
    ``create_graph=True`` through such an op then raises instead of returning wrong numbers.
    ``changes_dtype``: the output dtype is chosen by a parameter (astype), not by the inputs.
    ``saves_residuals``: the forward returns ``(out, residuals)``; the node keeps the residuals for
    the VJP (keyword ``residuals``) and frees them with itself. They are raw arrays, constants under
    ``create_graph``: a VJP that differentiates through them must be first-order only.
    """

    __slots__ = ("changes_dtype", "forward", "name", "save_output", "saves_residuals", "twice_differentiable",
                 "vjp_all", "vjps")

    def __init__(self, forward, name, save_output=False, twice_differentiable=True, changes_dtype=False,
                 saves_residuals=False):
        self.name = name
        self.forward = forward
        self.vjps = ()
        self.vjp_all = None
        self.save_output = save_output
        self.twice_differentiable = twice_differentiable
        self.changes_dtype = changes_dtype
        self.saves_residuals = saves_residuals

    def defvjp(self, *vjps):
        """Attach one VJP per positional input (None for an input that is never differentiable)."""
        self.vjps, self.vjp_all = vjps, None
        return self

    def defvjp_all(self, vjp):
        """Attach one VJP for all inputs: ``vjp(g, out, needs, *inputs, **params) -> gradients``.

        ``needs`` is a tuple of bools, one per positional input; the result has one entry per input:
        its gradient where ``needs[i]``, anything (usually None) elsewhere. Every positional input
        counts as data for the promotion rule. For fused kernels whose backward yields all gradients
        in one pass, and for variadic ops (concatenate, stack, einsum).
        """
        self.vjps, self.vjp_all = (), vjp
        return self

    def __repr__(self):
        return f"<primitive {self.name}>"

    def __call__(self, *args, **params):
        raw = None
        requires = False
        dtype = first = None
        on_gpu = None
        fix = None      # data positions holding non-float data: promoted after the loop
        bumped = False  # an input was modified in place before this op: record versions
        for i, a in enumerate(args):
            if type(a) is Tensor or isinstance(a, Tensor):
                if raw is None:
                    raw = list(args)
                d = raw[i] = a._data
                if a.requires_grad:
                    requires = True
                if a._version:
                    bumped = True
            elif a is None or type(a) in _SCALARS:
                continue
            else:
                d = a
            kind = getattr(d, "dtype", None)
            if kind is None or kind.kind != "f":
                if promotion.is_data(self, i):
                    fix = [i] if fix is None else fix + [i]
                if kind is None:
                    continue
            elif dtype is None:
                dtype, first = kind, i
            elif kind is not dtype and kind != dtype:
                if LEGACY_PROMOTION and raw is None and promotion.legacy_scalar(args, first, i):
                    return self(*promotion.narrow_legacy_scalars(args), **params)
                raise promotion.mix_error(self, first, dtype, i, kind)
            gpu = type(d) is not np.ndarray and hasattr(d, "__cuda_array_interface__")
            if on_gpu is None:
                on_gpu = gpu
            elif gpu is not on_gpu:
                raise DeviceError(
                    f"{self.name}: inputs live on different devices (cpu and cuda); "
                    "move them with .to('cpu') or .to('cuda') first")
        if fix is not None:
            args, values, dtype = promotion.promote(self, args, raw, fix, dtype)
            if raw is not None:
                raw = values
            else:
                args = values
        try:
            if raw is None:
                # Raw arrays in, raw array out: the fast path VJPs run on.
                if self.saves_residuals:
                    return self.forward(*args, **params)[0]
                return self.forward(*args, **params)
            out = self.forward(*raw, **params)
            residuals = None
            if self.saves_residuals:
                out, residuals = out
        except ITNetError:
            raise
        except ValueError as e:  # NumPy's broadcasting / core-dimension messages, said plainly
            raise promotion.shape_error(self, raw or args, e) from None
        if type(out) is not np.ndarray and isinstance(out, np.generic):
            out = np.asarray(out)  # NumPy returns scalars from 0-d ops; a Tensor always holds an array
        if dtype is None or LEGACY_PROMOTION:
            out = promotion.result_dtype(self, out, dtype)
        if OPEN[0]:  # a mode block is open in some thread: read this thread's modes
            grad_enabled, anomaly = state.grad_enabled, state.anomaly
            if anomaly:
                _check_finite(self, out, args, "forward output")
        else:
            grad_enabled = True
            anomaly = False
        if not (requires and grad_enabled):
            return Tensor._wrap(out, None)
        needs = tuple([isinstance(a, Tensor) and a.requires_grad for a in args])
        versions = tuple([a._version if isinstance(a, Tensor) else 0 for a in args]) if bumped else None
        node = Node(self, args, raw, params, out if self.save_output else None, needs, versions, residuals)
        if anomaly:
            node.site = _creation_site()
        return Tensor._wrap(out, node)


def primitive(forward, name, save_output=False, twice_differentiable=True, changes_dtype=False,
              saves_residuals=False):
    """Declare a primitive (see the module docstring); returns it for ``.defvjp`` / ``.defvjp_all``."""
    return Primitive(forward, name, save_output, twice_differentiable, changes_dtype, saves_residuals)


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
