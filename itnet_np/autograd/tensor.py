"""Tensor: an ndarray (NumPy or CuPy) plus what autograd needs to know about it.

``data`` is the array, ``requires_grad`` says whether gradients flow to it, ``node`` is the graph
node that produced it (None for leaves), and ``grad`` accumulates dL/dself over backward calls on
leaves that require grad (zero it with ``x.grad = None`` or ``Module.zero_grad()``).

Operators and methods forward to the ops in :mod:`itnet_np.autograd.ops`; nothing is computed here.

In-place changes, as in torch. ``x += y`` (and ``-=``, ``*=``, ``/=``, ``x[i] = v``) writes into
x's array when no graph is being recorded (under ``no_grad()``, or when neither operand requires
grad); on a leaf that requires grad, with grad mode on, it raises GraphError (update parameters
under ``with itn.no_grad():``). Where a graph is recorded (x is an intermediate result), ``x += y``
computes ``x + y`` into a new tensor that Python binds to the name x: other references to the old
tensor do not see the change. Every tensor has a version counter, bumped by those in-place writes
and by assigning ``x.data = ...`` (``x.data -= d`` included); a backward pass through an op that
saved x (or its output) raises GraphError if it changed since the forward. Writes through the raw
array (``x.data[...] = v``, ``np.copyto(x.data, v)``) and through aliases made by ``detach()`` or
``numpy()`` cannot be seen by the counter (torch's ``.data`` is untracked likewise).
"""
import numpy as np

from ..errors import DTypeError, GraphError, ShapeError
from . import backend
from .modes import is_grad_enabled

_default_dtype = np.dtype(np.float32)


def set_default_dtype(dtype):
    """Set the dtype that Python floats become (float32 unless changed; float64 for verification)."""
    global _default_dtype
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise DTypeError(f"set_default_dtype: expected float32 or float64, got {dtype}")
    _default_dtype = dtype


def get_default_dtype():
    return _default_dtype


_ACCEPTED = "bool, integer or float data: an array, a Tensor, a Python number or a nested list of them"


def _checked(data, who):
    """``np.asarray(data)``, refusing ragged lists (ShapeError) and non-numeric data (DTypeError)."""
    try:
        array = np.asarray(data)
    except ValueError as e:  # NumPy's "inhomogeneous shape"
        raise ShapeError(f"{who}: the nested lists are ragged (rows of different lengths); expected a "
                         f"rectangular nesting ({e})") from None
    if array.dtype.kind not in "biuf":
        raise DTypeError(f"{who}: got {type(data).__name__} data of dtype {array.dtype}; expected {_ACCEPTED}")
    return array


def _as_array(data, dtype):
    """Convert user data to an array: Python floats take the default dtype, arrays keep theirs."""
    if isinstance(data, Tensor):
        data = data._data
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype.kind not in "biuf":
            raise DTypeError(f"tensor: dtype={dtype} is not supported; expected a bool, integer or float dtype")
    if isinstance(data, np.ndarray) or backend.is_cupy(data):
        if data.dtype.kind not in "biuf":
            raise DTypeError(f"tensor: got an array of dtype {data.dtype}; expected {_ACCEPTED}")
        array = data
    else:
        array = _checked(data, "tensor")
        if dtype is None and array.dtype.kind == "f" and not isinstance(data, np.generic):
            array = array.astype(_default_dtype, copy=False)
    return array if dtype is None else array.astype(dtype, copy=False)


class Tensor:
    """An n-dimensional array that records the ops applied to it (see the module docstring)."""

    __slots__ = ("__weakref__", "_data", "_hooks", "_version", "grad", "node", "requires_grad")
    __array_ufunc__ = None  # make numpy defer: ndarray * Tensor -> Tensor.__rmul__
    __hash__ = object.__hash__

    def __init__(self, data, requires_grad=False, dtype=None):
        self._data = _as_array(data, dtype)
        self.grad = None
        self.node = None
        self.requires_grad = False
        self._version = 0
        self._hooks = None
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _wrap(cls, data, node):
        """Fast internal constructor for op outputs (no conversion, no checks)."""
        t = object.__new__(Tensor)
        t._data = data
        t.grad = None
        t.node = node
        t.requires_grad = node is not None
        t._version = 0
        t._hooks = None
        return t

    @property
    def data(self):
        """The array. Assigning to it counts as an in-place change (see the module docstring)."""
        return self._data

    @data.setter
    def data(self, value):
        value = value._data if isinstance(value, Tensor) else value
        if not (isinstance(value, np.ndarray) or backend.is_cupy(value)):
            value = _checked(value, "Tensor.data")
        self._bump(written=value is self._data)  # `x.data -= d` writes into the same array
        self._data = value

    def _bump(self, written=True):
        """Record an in-place change. ``written``: the array itself was overwritten, so an op that
        saved it as its output (this tensor's node) can no longer use it."""
        self._version += 1
        _engine.count_write()
        node = self.node
        if written and node is not None and node.out is not None:
            node.dirty = True

    def requires_grad_(self, flag=True):
        if flag and self._data.dtype.kind != "f":
            raise DTypeError(
                f"requires_grad=True needs a floating tensor; this one is {self._data.dtype} "
                "(integer and bool tensors cannot carry gradients)")
        self.requires_grad = bool(flag)
        return self

    # ----- array facts ------------------------------------------------------------------------
    shape = property(lambda self: self._data.shape)
    dtype = property(lambda self: self._data.dtype)
    ndim = property(lambda self: self._data.ndim)
    size = property(lambda self: self._data.size)
    device = property(lambda self: backend.device_of(self._data))
    T = property(lambda self: _ops.transpose(self))
    is_leaf = property(lambda self: self.node is None)

    def __len__(self):
        return len(self._data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        device = ", device='cuda'" if self.device == "cuda" else ""
        body = np.array2string(backend.to_device(self._data, "cpu") if device else self._data,
                               separator=", ", prefix="tensor(")
        return f"tensor({body}, dtype={self.dtype}{device}{grad})"

    # ----- Python and NumPy protocols -----------------------------------------------------------
    def _scalar(self, what):
        """The single element as a Python number; a ShapeError naming the shape otherwise."""
        if self._data.size != 1:
            raise ShapeError(f"{what} needs a tensor with exactly one element; this one has shape "
                             f"{tuple(self.shape)} ({self.size} elements)")
        return self._data.item()

    def item(self): return self._scalar("item()")
    def __float__(self): return float(self._scalar("float()"))
    def __int__(self): return int(self._scalar("int()"))
    def __bool__(self): return bool(self._scalar("bool()"))

    def __index__(self):
        if self._data.dtype.kind not in "iu":
            raise TypeError(f"only integer tensors can be used as an index; this one is {self.dtype}")
        return int(self._scalar("operator.index()"))

    def __round__(self, ndigits=None):
        """round(t) for one element: a Python int (or a float with ``ndigits``), as round(float(t))."""
        value = self._scalar("round()")
        return round(value) if ndigits is None else round(value, ndigits)

    def __format__(self, spec):
        """f"{loss:.3f}" formats the single element; an empty spec gives repr-like text."""
        return format(self._scalar(f"format spec {spec!r}"), spec) if spec else str(self)

    def __array__(self, dtype=None, copy=None):
        """np.asarray(t): the array (NumPy values, no graph). NumPy's reductions (np.sum(t),
        np.mean(t), np.max(t), ...) call the Tensor methods instead and stay differentiable;
        ufuncs (np.exp(t)) raise TypeError: use the itn ops."""
        if self.device != "cpu":
            from ..errors import DeviceError
            raise DeviceError("this tensor lives on cuda; call .to('cpu') before converting to numpy")
        if copy:
            return np.array(self._data, dtype=dtype, copy=True)
        return np.asarray(self._data, dtype=dtype)

    # ----- conversion -------------------------------------------------------------------------
    def numpy(self):
        """The underlying host ndarray (shares memory). Raises for a cuda tensor: use .to('cpu')."""
        if self.device != "cpu":
            from ..errors import DeviceError
            raise DeviceError("numpy() on a cuda tensor: call .to('cpu').numpy() (an explicit copy)")
        return self._data

    def tolist(self):
        return self.numpy().tolist()

    def detach(self):
        """A new leaf sharing this tensor's data, cut from the graph (with its own version counter)."""
        return Tensor._wrap(self._data, None)

    def to(self, device):
        """Copy to 'cpu' or 'cuda'; differentiable (the gradient is copied back)."""
        if device == self.device:
            return self
        return _ops.to_device(self, device=device)

    def astype(self, dtype):
        """Explicit, differentiable dtype conversion (the only way float32 and float64 meet)."""
        return _ops.astype(self, dtype=np.dtype(dtype))

    # ----- autograd -----------------------------------------------------------------------------
    def backward(self, gradient=None, retain_graph=False, create_graph=False):
        """Accumulate dself/dleaf (times ``gradient``) into ``.grad`` of every leaf requiring grad.

        ``gradient`` is required unless this tensor has one element. The graph is freed afterwards
        unless ``retain_graph=True``; ``create_graph=True`` records the backward pass itself so the
        resulting ``.grad`` can be differentiated again.
        """
        from .engine import check_seed, run_backward
        if not self.requires_grad:
            raise GraphError("backward() on a tensor that does not require grad: no input of the "
                             "computation had requires_grad=True (or it ran under no_grad())")
        seed = check_seed(self, gradient)
        run_backward(self, seed, retain_graph=retain_graph or create_graph, create_graph=create_graph)

    def register_hook(self, fn):
        """Call ``fn(grad)`` with this tensor's complete gradient during every backward pass.

        ``fn`` returns None (keep the gradient) or a replacement of the same shape and dtype, which
        is what flows on (and, on a leaf, what accumulates into ``.grad``). Under create_graph=True
        the gradient records a graph and so may the hook. Returns a handle; ``handle.remove()``.
        """
        from .hooks import HookHandle
        return HookHandle(self._hook_list("register_hook"), fn)

    def retain_grad(self):
        """Make this intermediate tensor keep its gradient in ``.grad`` (leaves always do)."""
        from .hooks import Retain
        hooks = self._hook_list("retain_grad")
        if self.node is not None and not any(type(h) is Retain for h in hooks):
            hooks.append(Retain(self))

    def _hook_list(self, what):
        if not self.requires_grad:
            raise GraphError(f"{what}() on a tensor that does not require grad: no gradient reaches it")
        if self.node is None:
            if self._hooks is None:
                self._hooks = []
            return self._hooks
        if self.node.hooks is None:
            self.node.hooks = []
        return self.node.hooks

    # ----- operators --------------------------------------------------------------------------
    def __add__(self, o): return _ops.add(self, o)
    def __radd__(self, o): return _ops.add(o, self)
    def __sub__(self, o): return _ops.subtract(self, o)
    def __rsub__(self, o): return _ops.subtract(o, self)
    def __mul__(self, o): return _ops.multiply(self, o)
    def __rmul__(self, o): return _ops.multiply(o, self)
    def __truediv__(self, o): return _ops.divide(self, o)
    def __rtruediv__(self, o): return _ops.divide(o, self)
    def __pow__(self, o): return _ops.power(self, o)
    def __rpow__(self, o): return _ops.power(o, self)
    def __matmul__(self, o): return _ops.matmul(self, o)
    def __rmatmul__(self, o): return _ops.matmul(o, self)
    def __neg__(self): return _ops.negative(self)
    def __pos__(self): return self
    def __abs__(self): return _ops.abs(self)
    def __getitem__(self, index): return _ops.getitem(self, index)

    # In-place operators (see the module docstring).
    def __iadd__(self, o): return self._inplace(_ops.add, o, "+=")
    def __isub__(self, o): return self._inplace(_ops.subtract, o, "-=")
    def __imul__(self, o): return self._inplace(_ops.multiply, o, "*=")
    def __itruediv__(self, o): return self._inplace(_ops.divide, o, "/=")

    def _recorded(self, other, what):
        """Whether an in-place write must be recorded in a graph; raises for a leaf requiring grad."""
        if not (is_grad_enabled() and (self.requires_grad or getattr(other, "requires_grad", False))):
            return False
        if self.requires_grad and self.node is None:
            raise GraphError(
                f"`{what}` on a leaf tensor that requires grad: the update would become part of the graph "
                f"(the tensor would stop being a leaf and its next .grad would be lost). Update it outside "
                f"the graph, as an optimiser step does: `with itn.no_grad(): {what}`")
        return True

    def _inplace(self, op, other, what):
        if self._recorded(other, f"x {what} y"):
            return op(self, other)  # a new tensor; Python rebinds the name to it
        result = op(self, other)._data
        if result.shape != self._data.shape or result.dtype != self._data.dtype:
            error = ShapeError if result.shape != self._data.shape else DTypeError
            raise error(f"`x {what} y` would change x from {tuple(self.shape)} {self.dtype} to "
                        f"{tuple(result.shape)} {result.dtype}; an in-place op keeps x's shape and dtype")
        self._data[...] = result
        self._bump()
        return self

    def __setitem__(self, index, value):
        """``t[index] = value`` in place, outside any graph (a GraphError where one is recorded)."""
        if self._recorded(value, "x[index] = value"):
            raise GraphError(
                "`x[index] = value` on a tensor in a recorded graph (x, or value, requires grad): build the "
                "result functionally instead, e.g. itn.where(mask, value, x) or itn.scatter_add")
        v = value._data if isinstance(value, Tensor) else value
        weak = not hasattr(v, "dtype")  # Python numbers and lists take x's dtype
        if weak:
            v = _checked(v, "x[index] = value")
        mine = self._data.dtype
        if v.dtype.kind not in "biuf" or (v.dtype.kind == "f" and (mine.kind != "f" or (not weak and v.dtype != mine))):
            raise DTypeError(f"`x[index] = value`: value is {v.dtype}, x is {mine}; itnet-np never casts "
                             f"float data silently (convert the value explicitly)")
        from .ops.index import _normalize_index
        try:
            self._data[_normalize_index(index)] = v
        except ValueError as e:
            raise ShapeError(f"`x[index] = value`: value of shape {tuple(v.shape)} does not fit "
                             f"x{list(self.shape)}[index] ({e})") from None
        self._bump()

    # Comparisons give bool tensors that carry no gradient.
    def _compare(self, other, op):
        other = other._data if isinstance(other, Tensor) else other
        return Tensor._wrap(op(self._data, other), None)

    def __lt__(self, o): return self._compare(o, np.less)
    def __le__(self, o): return self._compare(o, np.less_equal)
    def __gt__(self, o): return self._compare(o, np.greater)
    def __ge__(self, o): return self._compare(o, np.greater_equal)
    def __eq__(self, o): return self._compare(o, np.equal)
    def __ne__(self, o): return self._compare(o, np.not_equal)

    # ----- methods (NumPy names; dtype= and out= let np.sum(t), np.mean(t), ... call them) ------
    def _np(self, dtype, out, what):
        if out is not None:
            raise TypeError(f"{what}(out=...) is not supported on Tensors: results are new tensors")
        return self if dtype is None or np.dtype(dtype) == self.dtype else self.astype(dtype)

    def sum(self, axis=None, keepdims=False, dtype=None, out=None):
        return _ops.sum(self._np(dtype, out, "sum"), axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False, dtype=None, out=None):
        return _ops.mean(self._np(dtype, out, "mean"), axis=axis, keepdims=keepdims)

    def var(self, axis=None, keepdims=False, ddof=0, dtype=None, out=None):
        return _ops.var(self._np(dtype, out, "var"), axis=axis, keepdims=keepdims, ddof=ddof)

    def max(self, axis=None, keepdims=False, out=None):
        return _ops.max(self._np(None, out, "max"), axis=axis, keepdims=keepdims)

    def min(self, axis=None, keepdims=False, out=None):
        return _ops.min(self._np(None, out, "min"), axis=axis, keepdims=keepdims)

    def prod(self, axis=None, keepdims=False, dtype=None, out=None):
        return _ops.prod(self._np(dtype, out, "prod"), axis=axis, keepdims=keepdims)

    def reshape(self, *shape):
        return _ops.reshape(self, shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape)

    def transpose(self, *axes):
        return _ops.transpose(self, axes=(axes[0] if len(axes) == 1 and not isinstance(axes[0], int)
                                          else (axes or None)))

    def swapaxes(self, a, b): return _ops.swapaxes(self, a, b)
    def squeeze(self, axis=None): return _ops.squeeze(self, axis=axis)
    def flatten(self): return _ops.reshape(self, (-1,))
    def exp(self): return _ops.exp(self)
    def log(self): return _ops.log(self)
    def sqrt(self): return _ops.sqrt(self)
    def tanh(self): return _ops.tanh(self)
    def clip(self, a_min=None, a_max=None): return _ops.clip(self, a_min, a_max)
    def std(self, axis=None, keepdims=False, ddof=0):
        return _ops.std(self, axis=axis, keepdims=keepdims, ddof=ddof)

    def norm(self, ord=2, axis=None, keepdims=False):
        return _ops.norm(self, ord=ord, axis=axis, keepdims=keepdims)

    def cumsum(self, axis=None): return _ops.cumsum(self, axis=axis)
    def cumprod(self, axis=None): return _ops.cumprod(self, axis=axis)
    def argmax(self, axis=None, keepdims=False): return _ops.argmax(self, axis=axis, keepdims=keepdims)
    def argmin(self, axis=None, keepdims=False): return _ops.argmin(self, axis=axis, keepdims=keepdims)
    def sort(self, axis=-1, descending=False): return _ops.sort(self, axis=axis, descending=descending)
    def topk(self, k, axis=-1, largest=True): return _ops.topk(self, k, axis=axis, largest=largest)
    def tril(self, k=0): return _ops.tril(self, k=k)
    def triu(self, k=0): return _ops.triu(self, k=k)


def tensor(data, dtype=None, requires_grad=False):
    """Create a leaf tensor. Python floats become the default dtype; ndarrays keep theirs.

    Accepts bool, integer and float data: arrays, Tensors, Python numbers and (rectangular) nested
    lists of them; None, strings, objects and complex numbers raise DTypeError, ragged lists ShapeError.
    """
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


# Bound last: engine and ops import Tensor, so importing them above would be a cycle.
from . import engine as _engine
from . import ops as _ops
