"""The promotion rule every op follows (torch's rule), the same on NumPy 1.26 and 2.x.

The *data* inputs of an op are its positional inputs that have a VJP (``where``'s condition,
declared with ``None``, is not data; keyword parameters never are):

- all floating data must have one dtype: float32 with float64 is a DTypeError naming both inputs;
- Python numbers, and integer or bool arrays, Tensors and NumPy scalars, take that float dtype;
  nested lists are converted as ``itn.tensor`` does, then follow the same rule;
- with no floating input at all, a floating result takes the default dtype (``int_tensor / 2``);
- strings, objects, complex numbers and other non-numeric data are refused (DTypeError).

NumPy < 2 promotes a 0-d float32 array combined with a Python number to float64 (value-based
casting treats both as scalars; NEP 50 ended that in NumPy 2). VJPs run on raw arrays and build
constants from Python numbers (``g / (2 * out)``), so on old NumPy the engine gives such 0-d
results their float32 back: op outputs here, gradients in ``restore_gradient_dtype``. On NumPy 2
none of that runs and the dtype checks stay strict, so CI on both versions catches real upcasts.

Everything here is off the hot path: ``Primitive.__call__`` only comes here for non-float data,
a dtype conflict, or a NumPy error.
"""
import numpy as np

from ..errors import DTypeError, ShapeError

LEGACY_PROMOTION = int(np.__version__.split(".")[0]) < 2
_ACCEPTED = "expected bool, integer or float data (arrays, Tensors, Python numbers or nested lists)"


def is_data(prim, i):
    """Whether positional input ``i`` of ``prim`` is data (it has a VJP; with ``defvjp_all``, all do)."""
    if prim.vjp_all is not None:
        return True
    vjps = prim.vjps
    return i < len(vjps) and vjps[i] is not None


def arg_name(prim, i):
    """'input 1 (y)': an input by position and, when the forward's signature says, by name."""
    import inspect
    try:
        names = [p.name for p in inspect.signature(prim.forward).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):  # NumPy ufuncs on some versions
        names = []
    return f"input {i} ({names[i]})" if i < len(names) else f"input {i}"


def mix_error(prim, first, dtype, i, kind):
    return DTypeError(
        f"{prim.name}: cannot mix {dtype} and {kind}: {arg_name(prim, first)} is {dtype}, "
        f"{arg_name(prim, i)} is {kind}; convert one explicitly (e.g. x.astype('{dtype}')): "
        "itnet-np never upcasts silently")


def shape_error(prim, arrays, error):
    """NumPy's broadcasting / core-dimension ValueError, said with the op's name and the shapes."""
    shapes = [str(tuple(a.shape)) for a in arrays if hasattr(a, "shape")]
    return ShapeError(f"{prim.name}: inputs of shapes {' and '.join(shapes)} do not fit together ({error})")


def promote(prim, args, raw, fix, dtype):
    """Give the non-float data at positions ``fix`` the float dtype ``dtype``.

    Returns (args, values, dtype): args with converted constants, the values the forward gets,
    and the float dtype (the default one when only a list brought floats in).
    """
    from .tensor import Tensor, get_default_dtype
    args = list(args)
    values = list(raw) if raw is not None else list(args)
    for i in fix:
        v = values[i]
        if getattr(v, "dtype", None) is None:
            try:
                v = np.asarray(v)
            except ValueError as e:
                raise ShapeError(f"{prim.name}: {arg_name(prim, i)} is a ragged nested list ({e})") from None
            if v.dtype.kind == "f" and dtype is None:
                dtype = get_default_dtype()
        if v.dtype.kind not in "biuf":
            raise DTypeError(f"{prim.name}: {arg_name(prim, i)} is {type(args[i]).__name__} data of dtype "
                             f"{v.dtype}; {_ACCEPTED}")
        values[i] = v
    for i in fix:
        if dtype is not None and values[i].dtype != dtype:
            values[i] = values[i].astype(dtype)
        if not isinstance(args[i], Tensor):
            args[i] = values[i]
    return tuple(args), values, dtype


def result_dtype(prim, out, dtype):
    """The output's float dtype: the inputs' one (undoing NumPy < 2's value-based upcast of 0-d
    float32 with Python numbers), or the default one when no input was floating."""
    if prim.changes_dtype or getattr(out, "dtype", None) is None or out.dtype.kind != "f":
        return out
    if dtype is None:
        from .tensor import get_default_dtype
        dtype = get_default_dtype()
    return out if out.dtype == dtype else out.astype(dtype)


def legacy_scalar(args, first, i):
    """NumPy < 2, raw inputs only: of inputs ``first`` and ``i`` (float32 and float64), the float64
    one is 0-d and no Tensor follows -- a constant value-based casting widened inside a VJP
    (np.float32(3) - 1 is float64 there). Tensors and arrays with dimensions never qualify."""
    from .tensor import Tensor
    wide, narrow = (args[first], args[i]) if args[first].dtype == np.float64 else (args[i], args[first])
    return (narrow.dtype == np.float32 and not np.ndim(wide)
            and not any(isinstance(a, Tensor) for a in args[i + 1:]))


def narrow_legacy_scalars(args):
    """``args`` with 0-d float64 values given float32 back (see legacy_scalar)."""
    f32 = np.dtype(np.float32)
    return [a.astype(f32) if getattr(a, "dtype", None) == np.float64 and not np.ndim(a) else a for a in args]


def restore_gradient_dtype(prim, i, gi, pdata):
    """A gradient whose dtype differs from its input's: NumPy < 2's value-based upcast of a raw
    0-d float32 intermediate is undone; anything else is a bug in the VJP, reported as such."""
    if (LEGACY_PROMOTION and pdata.dtype == np.float32 and gi.dtype == np.float64
            and isinstance(gi, (np.ndarray, np.generic))):
        return np.asarray(gi, np.float32)
    raise DTypeError(f"internal: VJP of '{prim.name}' returned {gi.dtype} for input {i} of dtype {pdata.dtype}")
