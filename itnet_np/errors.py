"""One exception type per family of mistakes, so callers can catch what they can act on.

Every message names the argument or op involved, what was received, and what was expected.
"""


class ITNetError(Exception):
    """Base class of every error raised on purpose by itnet-np."""


class ShapeError(ITNetError, ValueError):
    """An array has the wrong shape for the op or argument it was given to."""


class DTypeError(ITNetError, TypeError):
    """Dtypes disagree (float32 mixed with float64) or a dtype cannot do what was asked."""


class DeviceError(ITNetError, RuntimeError):
    """Arrays live on different devices, or the requested device is unavailable."""


class ConfigError(ITNetError, ValueError):
    """A hyper-parameter or option is out of range or inconsistent with another one."""


class GraphError(ITNetError, RuntimeError):
    """The autograd graph cannot do what was asked (freed graph, missing gradient, ...)."""


class AnomalyError(ITNetError, FloatingPointError):
    """detect_anomaly() found NaN or Inf in a forward output or a backward gradient."""


class CheckpointError(ITNetError, ValueError):
    """A checkpoint file is missing, truncated, foreign or inconsistent with the model."""


class DataError(ITNetError, ValueError):
    """A data file a loader was given is malformed (missing column, bad label, unreadable image);
    the message names the file and, for text files, the line."""


def describe(array):
    """Short 'shape (2, 3) float32' description used in error messages."""
    shape = getattr(array, "shape", None)
    dtype = getattr(array, "dtype", None)
    if shape is None:
        return f"{type(array).__name__} {array!r}"
    return f"shape {tuple(shape)} {dtype}"
