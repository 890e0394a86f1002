"""Argument checks shared by nn.functional (one home: each message is written once)."""
import numbers

from ...autograd.ops._util import raw
from ...errors import ConfigError, DTypeError


def array_of(name, x, arg="input"):
    """The array behind ``x``, which must be a Tensor or an array (NumPy or CuPy).

    Lists, tuples and Python numbers are refused, as torch refuses non-tensors: converting them
    here would have to guess a dtype (float32? the weight's?), and a guess is a silent cast.
    """
    d = raw(x)
    if not (hasattr(d, "shape") and hasattr(d, "dtype")):
        raise DTypeError(f"{name}: {arg} must be a Tensor or an array, got {type(x).__name__}; "
                         "convert it with itn.tensor(...) (Python floats become float32)")
    return d


def ints(name, arg, value, nd, minimum):
    """``value`` (an int or a sequence of nd ints, each >= minimum) as a tuple of nd ints."""
    items = (value,) * nd if isinstance(value, numbers.Integral) else value
    try:
        items = tuple(items)
    except TypeError:
        items = None
    if (items is None or len(items) != nd or any(isinstance(v, bool) or not isinstance(v, numbers.Integral)
                                                 or v < minimum for v in items)):
        raise ConfigError(f"{name}: {arg} must be an int >= {minimum} or a tuple of {nd} such ints, "
                          f"got {value!r}")
    return tuple(int(v) for v in items)


def check_dtypes(name, **arrays):
    """Floating inputs must share one dtype (itnet-np never upcasts); say which ones differ."""
    kinds = {k: raw(v).dtype for k, v in arrays.items() if v is not None and hasattr(raw(v), "dtype")}
    if len(set(kinds.values())) > 1:
        raise DTypeError(f"{name}: inputs must share one dtype, got "
                         + ", ".join(f"{k} {d}" for k, d in kinds.items())
                         + "; convert explicitly with .astype(...)")


def positive(name, arg, value):
    """A number > 0 (eps, delta, ...) as a float, or ConfigError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise ConfigError(f"{name}: {arg} must be a number > 0, got {value!r}")
    return float(value)
