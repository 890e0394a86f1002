"""Tensor: an ndarray (NumPy or CuPy) plus what autograd needs to know about it.

``data`` is the array, ``requires_grad`` says whether gradients flow to it, ``node`` is the graph
node that produced it (None for leaves), and ``grad`` accumulates dL/dself over backward calls on
leaves that require grad (zero it with ``x.grad = None`` or ``Module.zero_grad()``).

Operators and methods forward to the ops in :mod:`itnet_np.autograd.ops`; nothing is computed here.
"""
import numpy as np

from ..errors import DTypeError
from . import backend

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


def _as_array(data, dtype):
    """Convert user data to an array: Python floats take the default dtype, arrays keep theirs."""
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, np.ndarray) or backend.is_cupy(data):
        return data if dtype is None else data.astype(dtype, copy=False)
    array = np.asarray(data)
    if dtype is not None:
        return array.astype(dtype, copy=False)
    if array.dtype.kind == "f" and not isinstance(data, np.generic):
        return array.astype(_default_dtype, copy=False)
    return array


class Tensor:
    """An n-dimensional array that records the ops applied to it (see the module docstring)."""

    __slots__ = ("data", "grad", "requires_grad", "node", "__weakref__")
    __array_ufunc__ = None  # make numpy defer: ndarray * Tensor -> Tensor.__rmul__
    __hash__ = object.__hash__

    def __init__(self, data, requires_grad=False, dtype=None):
        self.data = _as_array(data, dtype)
        self.grad = None
        self.node = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @classmethod
    def _wrap(cls, data, node):
        """Fast internal constructor for op outputs (no conversion, no checks)."""
        t = object.__new__(Tensor)
        t.data = data
        t.grad = None
        t.node = node
        t.requires_grad = node is not None
        return t

    def requires_grad_(self, flag=True):
        if flag and self.data.dtype.kind != "f":
            raise DTypeError(
                f"requires_grad=True needs a floating tensor; this one is {self.data.dtype} "
                "(integer and bool tensors cannot carry gradients)")
        self.requires_grad = bool(flag)
        return self

    # ----- array facts ------------------------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: self.data.size)
    device = property(lambda self: backend.device_of(self.data))
    T = property(lambda self: _ops.transpose(self))
    is_leaf = property(lambda self: self.node is None)

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        device = ", device='cuda'" if self.device == "cuda" else ""
        body = np.array2string(backend.to_device(self.data, "cpu") if device else self.data,
                               separator=", ", prefix="tensor(")
        return f"tensor({body}, dtype={self.dtype}{device}{grad})"

    def __bool__(self):
        return bool(self.data)

    def __array__(self, dtype=None, copy=None):
        if self.device != "cpu":
            from ..errors import DeviceError
            raise DeviceError("this tensor lives on cuda; call .to('cpu') before converting to numpy")
        return np.asarray(self.data, dtype=dtype)

    # ----- conversion -------------------------------------------------------------------------
    def numpy(self):
        """The underlying host ndarray (shares memory). Raises for a cuda tensor: use .to('cpu')."""
        if self.device != "cpu":
            from ..errors import DeviceError
            raise DeviceError("numpy() on a cuda tensor: call .to('cpu').numpy() (an explicit copy)")
        return self.data

    def item(self):
        return self.data.item()

    def tolist(self):
        return self.numpy().tolist()

    def detach(self):
        """A new leaf sharing this tensor's data, cut from the graph."""
        return Tensor._wrap(self.data, None)

    def to(self, device):
        """Copy to 'cpu' or 'cuda'; differentiable (the gradient is copied back)."""
        if device == self.device:
            return self
        return _ops.to_device(self, device=device)

    def astype(self, dtype):
        """Explicit, differentiable dtype conversion (the only way float32 and float64 meet)."""
        return _ops.astype(self, dtype=np.dtype(dtype))

    def backward(self, gradient=None, retain_graph=False, create_graph=False):
        """Accumulate dself/dleaf (times ``gradient``) into ``.grad`` of every leaf requiring grad.

        ``gradient`` is required unless this tensor has one element. The graph is freed afterwards
        unless ``retain_graph=True``; ``create_graph=True`` records the backward pass itself so the
        resulting ``.grad`` can be differentiated again.
        """
        from .engine import check_seed, run_backward
        if not self.requires_grad:
            from ..errors import GraphError
            raise GraphError("backward() on a tensor that does not require grad: no input of the "
                             "computation had requires_grad=True (or it ran under no_grad())")
        seed = check_seed(self, gradient)
        run_backward(self, seed, retain_graph=retain_graph or create_graph, create_graph=create_graph)

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

    # Comparisons give bool tensors that carry no gradient.
    def _compare(self, other, op):
        other = other.data if isinstance(other, Tensor) else other
        return Tensor._wrap(op(self.data, other), None)

    def __lt__(self, o): return self._compare(o, np.less)
    def __le__(self, o): return self._compare(o, np.less_equal)
    def __gt__(self, o): return self._compare(o, np.greater)
    def __ge__(self, o): return self._compare(o, np.greater_equal)
    def __eq__(self, o): return self._compare(o, np.equal)
    def __ne__(self, o): return self._compare(o, np.not_equal)

    # ----- methods (NumPy names) --------------------------------------------------------------
    def sum(self, axis=None, keepdims=False): return _ops.sum(self, axis=axis, keepdims=keepdims)
    def mean(self, axis=None, keepdims=False): return _ops.mean(self, axis=axis, keepdims=keepdims)
    def var(self, axis=None, keepdims=False, ddof=0):
        return _ops.var(self, axis=axis, keepdims=keepdims, ddof=ddof)
    def max(self, axis=None, keepdims=False): return _ops.max(self, axis=axis, keepdims=keepdims)
    def min(self, axis=None, keepdims=False): return _ops.min(self, axis=axis, keepdims=keepdims)
    def prod(self, axis=None, keepdims=False): return _ops.prod(self, axis=axis, keepdims=keepdims)

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


def tensor(data, dtype=None, requires_grad=False):
    """Create a leaf tensor. Python floats become the default dtype; ndarrays keep theirs."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


from . import ops as _ops  # noqa: E402  (ops import Tensor; bound here to break the cycle)
