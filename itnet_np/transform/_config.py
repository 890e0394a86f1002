"""Constructor argument checks of the operator and its kernels: each kind of mistake has one message,
naming the owner, the argument, what was received and what is expected (a ConfigError; a DTypeError
for a dtype). Nothing is truncated or coerced: 2.7, 2.0, '3' and True are not ints."""
import numbers

import numpy as np

from ..errors import ConfigError, DTypeError


def integer(owner, arg, value, minimum=1):
    """``value`` as an int >= minimum (an int or NumPy integer, not a bool, float or string)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ConfigError(f"{owner}: {arg} must be an int >= {minimum}, got {value!r}")
    return int(value)


def optional_integer(owner, arg, value, minimum=1):
    """None, or ``value`` as an int >= minimum."""
    return None if value is None else integer(owner, arg, value, minimum)


def number(owner, arg, value, minimum=None, positive=False):
    """``value`` as a float (a real number, not a bool or NaN), >= minimum / > 0 when asked."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and not np.isnan(value)
    if ok and minimum is not None:
        ok = value >= minimum
    if ok and positive:
        ok = value > 0
    if not ok:
        bound = " > 0" if positive else f" >= {minimum}" if minimum is not None else ""
        raise ConfigError(f"{owner}: {arg} must be a real number{bound}, got {value!r}")
    return float(value)


def flag(owner, arg, value):
    """``value`` as a bool (True/False or a NumPy bool; not 0, 1 or a string)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{owner}: {arg} must be True or False, got {value!r}")
    return bool(value)


def choice(owner, arg, value, options):
    """``value`` if it is one of ``options``."""
    if not isinstance(value, str) or value not in options:
        raise ConfigError(f"{owner}: {arg} must be one of {tuple(options)}, got {value!r}")
    return value


def float_dtype(owner, dtype):
    """None (the default dtype) or float32 / float64 as a NumPy dtype."""
    if dtype is None:
        from ..autograd.tensor import get_default_dtype
        return np.dtype(get_default_dtype())
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt not in (np.dtype(np.float32), np.dtype(np.float64)):   # (None == float64 in NumPy)
        raise DTypeError(f"{owner}: dtype must be None, float32 or float64, got {dtype!r}")
    return dt


def generator(rng, owner=None):
    """A NumPy Generator from None, an int seed >= 0 or a Generator (ConfigError otherwise)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is not None and (isinstance(rng, bool) or not isinstance(rng, numbers.Integral) or rng < 0):
        where = f"{owner}: " if owner else ""
        raise ConfigError(f"{where}rng must be None, an int seed >= 0 or a numpy Generator, got {rng!r}")
    return np.random.default_rng(rng)
