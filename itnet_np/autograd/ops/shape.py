"""Ops that move data without computing on it. Their VJPs move the gradient back.

Every output element is a copy of one input element (or a constant, for pad), so each VJP sends
g back to where the element came from: reshape/transpose/flip undo themselves, concatenate/stack
slice g apart, and the gathers (split, take, take_along_axis, non-constant pad) are written as
``getitem`` so that their VJP is getitem's scatter-*add*, which accumulates repeated indices.

A shape that does not fit raises ShapeError naming the op and the shapes involved.
"""
import itertools
import numbers

import numpy as np

from ...errors import ConfigError, ShapeError
from ..backend import xp_of
from ..primitive import primitive
from ._util import raw


def _shape(a):
    return tuple(getattr(a, "shape", ()))


def _axis(axis, ndim, op):
    """One axis (negatives allowed) as a non-negative int, or ShapeError naming ``op``."""
    if not -ndim <= axis < ndim:
        raise ShapeError(f"{op}: axis {axis} is out of range for an array with {ndim} dimensions")
    return axis % ndim


# ----- reshape, transpose, swapaxes, broadcast_to ---------------------------------------------
def _reshape(x, shape):
    try:
        return x.reshape(shape)
    except ValueError as e:
        raise ShapeError(f"reshape: cannot reshape an array of shape {x.shape} ({x.size} elements) into "
                         f"shape {shape}; the number of elements must stay the same") from e


reshape = primitive(_reshape, "reshape").defvjp(lambda g, out, x, shape: reshape(g, x.shape))


def _transpose(x, axes=None):
    try:
        return x.transpose(axes)
    except ValueError as e:
        raise ShapeError(f"transpose: axes {axes} are not a permutation of the {x.ndim} axes of an "
                         f"array of shape {x.shape}") from e


def _inverse_axes(axes, ndim):
    if axes is None:
        return None
    return tuple(np.argsort([a % ndim for a in axes]))


transpose = primitive(_transpose, "transpose").defvjp(
    lambda g, out, x, axes=None: transpose(g, axes=_inverse_axes(axes, x.ndim)))


def _broadcast_to(x, shape):
    try:
        return xp_of(x).broadcast_to(x, shape)
    except ValueError as e:
        raise ShapeError(f"broadcast_to: cannot broadcast an array of shape {x.shape} to shape {shape}") from e


# The engine sums the gradient back down to x's shape (un-broadcasting is done once, there).
broadcast_to = primitive(_broadcast_to, "broadcast_to").defvjp(lambda g, out, x, shape: g)


def _swapaxes(x, axis1, axis2):
    _axis(axis1, x.ndim, "swapaxes")
    _axis(axis2, x.ndim, "swapaxes")
    return x.swapaxes(axis1, axis2)


swapaxes = primitive(_swapaxes, "swapaxes").defvjp(lambda g, out, x, axis1, axis2: swapaxes(g, axis1, axis2))


# ----- expand_dims, squeeze, flip: reshapes and reversed views ---------------------------------
def _axes(axis, ndim, op):
    """None (all axes), an int or a tuple of ints as a set of non-negative axes, checked for ``op``."""
    if axis is None:
        return set(range(ndim))
    axes = [_axis(a, ndim, op) for a in ((axis,) if isinstance(axis, numbers.Integral) else axis)]
    if len(set(axes)) != len(axes):
        raise ShapeError(f"{op}: repeated axis in {axis}")
    return set(axes)


def _expanded_shape(shape, axis):
    ndim = len(shape) + (1 if isinstance(axis, numbers.Integral) else len(axis))
    axes = _axes(axis, ndim, "expand_dims")
    rest = iter(shape)
    return tuple(1 if i in axes else next(rest) for i in range(ndim))


def _squeezed_shape(shape, axis):
    if axis is None:
        return tuple(s for s in shape if s != 1)
    axes = _axes(axis, len(shape), "squeeze")
    for a in axes:
        if shape[a] != 1:
            raise ShapeError(f"squeeze: axis {a} has length {shape[a]} in shape {shape}; only "
                             "length-1 axes can be squeezed")
    return tuple(s for i, s in enumerate(shape) if i not in axes)


_back = lambda g, out, x, axis=None: reshape(g, x.shape)
# out = x with length-1 axes inserted at ``axis`` (positions in the output, negatives allowed).
expand_dims = primitive(lambda x, axis: x.reshape(_expanded_shape(x.shape, axis)), "expand_dims").defvjp(_back)
_squeeze_p = primitive(lambda x, axis=None: x.reshape(_squeezed_shape(x.shape, axis)), "squeeze").defvjp(_back)


def squeeze(x, axis=None):
    """Remove length-1 axes: all of them (axis=None) or those named (ShapeError if not length 1)."""
    return _squeeze_p(x, axis=axis)


def _flip(x, axis=None):
    axes = _axes(axis, x.ndim, "flip")
    return x[tuple(slice(None, None, -1) if i in axes else slice(None) for i in range(x.ndim))]


# Reversing is its own inverse: the VJP flips g back along the same axes.
flip = primitive(_flip, "flip").defvjp(lambda g, out, x, axis=None: flip(g, axis=axis))


# ----- concatenate, stack (variadic), split -----------------------------------------------------
def _join_error(op, arrays, axis, e):
    shapes = ", ".join(str(_shape(a)) for a in arrays)
    need = "the same shape" if op == "stack" else f"the same shape except along axis {axis}"
    return ShapeError(f"{op}: input shapes {shapes} do not fit together (axis={axis}); all inputs "
                      f"need {need}")


def _concatenate(*arrays, axis=0):
    try:
        return xp_of(arrays[0]).concatenate(arrays, axis=axis)
    except ValueError as e:  # includes AxisError
        raise _join_error("concatenate", arrays, axis, e) from e


def _concatenate_vjp(g, out, needs, *arrays, axis=0):
    """Input i's gradient is g's slice along ``axis`` where input i landed."""
    from .index import getitem
    axis = axis % g.ndim
    grads, start = [], 0
    for a, needed in zip(arrays, needs):
        stop = start + a.shape[axis]
        grads.append(getitem(g, (slice(None),) * axis + (slice(start, stop),)) if needed else None)
        start = stop
    return grads


_concatenate_p = primitive(_concatenate, "concatenate").defvjp_all(_concatenate_vjp)


def concatenate(arrays, axis=0):
    """Join arrays along an existing ``axis`` (None: flatten first); the VJP slices g back apart."""
    arrays = list(arrays)
    if not arrays:
        raise ShapeError("concatenate: got no arrays; expected at least one")
    if axis is None:
        arrays, axis = [reshape(a, (-1,)) for a in arrays], 0
    return _concatenate_p(*arrays, axis=axis)


def _stack(*arrays, axis=0):
    if len({_shape(a) for a in arrays}) > 1:
        raise _join_error("stack", arrays, axis, None)
    _axis(axis, arrays[0].ndim + 1, "stack")
    return xp_of(arrays[0]).stack(arrays, axis=axis)


def _stack_vjp(g, out, needs, *arrays, axis=0):
    """Input i's gradient is g's entry i along the new ``axis``."""
    from .index import getitem
    lead = (slice(None),) * (axis % g.ndim)
    return [getitem(g, lead + (i,)) if needed else None for i, needed in enumerate(needs)]


_stack_p = primitive(_stack, "stack").defvjp_all(_stack_vjp)


def stack(arrays, axis=0):
    """Join same-shape arrays along a new ``axis``: out[..., i, ...] = arrays[i]."""
    arrays = list(arrays)
    if not arrays:
        raise ShapeError("stack: got no arrays; expected at least one")
    return _stack_p(*arrays, axis=axis)


def split(x, indices_or_sections, axis=0):
    """NumPy's split: ``k`` equal sections, or pieces between the given split points.

    Returns a list of views ``x[..., a:b, ...]`` (getitem nodes; their gradients accumulate into
    x through the engine, so no multi-output op is needed). Split points follow Python slice
    rules, as in NumPy: negatives count from the end, points past the end give empty pieces.
    """
    axis = _axis(axis, len(_shape(x)), "split")
    n = _shape(x)[axis]
    if isinstance(indices_or_sections, numbers.Integral):
        k = int(indices_or_sections)
        if k <= 0:
            raise ConfigError(f"split: the number of sections must be positive, got {k}")
        if n % k:
            raise ShapeError(f"split: an axis of length {n} (axis {axis} of shape {_shape(x)}) cannot be "
                             f"split into {k} equal sections; pass split points instead")
        bounds = [j * (n // k) for j in range(k + 1)]
    else:
        points = raw(indices_or_sections)
        points = points.tolist() if hasattr(points, "tolist") else list(points)
        bounds = [0] + [int(p) for p in np.ravel(points)] + [n]
    from .index import getitem
    lead = (slice(None),) * axis
    return [getitem(x, lead + (slice(a, b),)) for a, b in itertools.pairwise(bounds)]


# ----- pad ---------------------------------------------------------------------------------------
_GATHER_MODES = ("edge", "reflect", "symmetric", "wrap")


def _pad_pairs(pad_width, ndim):
    """NumPy's pad_width forms (int, (before, after), per-axis pairs) as ndim (before, after) pairs."""
    width = np.asarray(raw(pad_width))
    if width.dtype.kind not in "iu":
        raise ConfigError(f"pad: pad_width must hold integers, got {pad_width!r}")
    try:
        pairs = np.broadcast_to(width, (ndim, 2))
    except ValueError as e:
        raise ShapeError(f"pad: pad_width of shape {width.shape} cannot be read as (before, after) pairs "
                         f"for an array with {ndim} dimensions; expected an int, (before, after) or "
                         f"{ndim} pairs") from e
    if (pairs < 0).any():
        raise ConfigError(f"pad: pad_width must be non-negative, got {pad_width!r}")
    return tuple((int(b), int(a)) for b, a in pairs)


def _pad_constant(x, pairs, constant_values=0):
    return xp_of(x).pad(x, pairs, mode="constant", constant_values=raw(constant_values))


# The constant border does not depend on x: g's border is dropped, its interior is x's gradient.
_pad_constant_p = primitive(_pad_constant, "pad").defvjp(
    lambda g, out, x, pairs, constant_values=0:
        _getitem(g, tuple(slice(b, b + n) for (b, _), n in zip(pairs, x.shape))))


def pad(x, pad_width, mode="constant", constant_values=0):
    """NumPy's pad for ``mode`` in constant (the default), edge, reflect, symmetric and wrap.

    constant: out = c outside x, x inside; VJP slices g. The other modes copy elements of x, so
    they are a gather ``x[ix_(i_0, i_1, ...)]`` with i_d = pad(arange(n_d), mode) -- and
    their VJP scatter-adds (a border element is the copy of an interior one). ``constant_values``
    (NumPy's forms) is a constant: no gradient flows to it.
    """
    pairs = _pad_pairs(pad_width, len(_shape(x)))
    if mode == "constant" or (mode in _GATHER_MODES and not any(b or a for b, a in pairs)):
        return _pad_constant_p(x, pairs=pairs, constant_values=constant_values)
    if mode not in _GATHER_MODES:
        raise ConfigError(f"pad: mode {mode!r} is not supported; expected 'constant' or one of {_GATHER_MODES}")
    xp = xp_of(raw(x))
    try:
        idx = [np.pad(np.arange(n), pair, mode=mode) for n, pair in zip(_shape(x), pairs)]
    except ValueError as e:  # NumPy refuses to extend an empty axis
        raise ShapeError(f"pad: cannot pad an array of shape {_shape(x)} in mode {mode!r}: {e}") from e
    return _getitem(x, tuple(xp.asarray(i) for i in np.ix_(*idx)))


# ----- take, take_along_axis: gathers written as getitem ----------------------------------------
def _getitem(x, index):
    from .index import getitem
    return getitem(x, index)


def take(x, indices, axis=None):
    """NumPy's take: ``x.ravel()[indices]`` (axis=None) or ``x[..., indices, ...]`` along ``axis``.

    Written as getitem, so repeated indices accumulate their gradients (scatter-add).
    """
    from .index import _normalize_index
    indices = _normalize_index(indices)
    if axis is None:
        return _getitem(reshape(x, (-1,)), indices)
    axis = _axis(axis, len(_shape(x)), "take")
    return _getitem(x, (slice(None),) * axis + (indices,))


def take_along_axis(x, indices, axis):
    """NumPy's take_along_axis: out[..., j, ...] = x[..., indices[..., j, ...], ...] along ``axis``.

    ``indices`` has x's number of dimensions (1-D for axis=None, which flattens x); its other
    dimensions broadcast against x's. It is x indexed by (arange, ..., indices, ..., arange),
    whose VJP scatter-adds, correct with repeated indices.
    """
    from .index import _normalize_index
    idx = _normalize_index(indices)
    idx = xp_of(raw(x)).asarray(idx)
    if idx.dtype.kind not in "iu":
        raise ShapeError(f"take_along_axis: indices must be integers, got {idx.dtype}")
    if axis is None:
        x, axis = reshape(x, (-1,)), 0
    shape = _shape(x)
    if idx.ndim != len(shape):
        raise ShapeError(f"take_along_axis: indices of shape {idx.shape} need as many dimensions as x of "
                         f"shape {shape}")
    axis = _axis(axis, len(shape), "take_along_axis")
    others = [1 if d == axis else n for d, n in enumerate(shape)]
    try:
        np.broadcast_shapes(tuple(others), tuple(1 if d == axis else n for d, n in enumerate(idx.shape)))
    except ValueError as e:
        raise ShapeError(f"take_along_axis: indices of shape {idx.shape} do not broadcast against x of "
                         f"shape {shape} outside axis {axis}") from e
    xp = xp_of(idx)
    index = tuple(idx if d == axis else xp.arange(n).reshape([n if k == d else 1 for k in range(len(shape))])
                  for d, n in enumerate(shape))
    return _getitem(x, index)


# ----- tril, triu: keep one triangle of the last two axes ---------------------------------------
def _triangle(x, k, op):
    if x.ndim < 2:
        raise ShapeError(f"{op}: needs an array with at least 2 dimensions (the last two form the "
                         f"matrices), got shape {x.shape}")
    return getattr(xp_of(x), op)(x, k)


# Each keeps the entries on one side of diagonal k and zeroes the rest: a fixed mask, self-adjoint.
_tril_p = primitive(lambda x, k=0: _triangle(x, k, "tril"), "tril").defvjp(lambda g, out, x, k=0: tril(g, k))
_triu_p = primitive(lambda x, k=0: _triangle(x, k, "triu"), "triu").defvjp(lambda g, out, x, k=0: triu(g, k))


def _diagonal(k, op):
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ConfigError(f"{op}: k (the diagonal offset) must be an int, got {k!r}")
    return int(k)


def tril(x, k=0):
    """The lower triangle of the last two axes: out[..., i, j] = x[..., i, j] if j <= i + k, else 0."""
    return _tril_p(x, k=_diagonal(k, "tril"))


def triu(x, k=0):
    """The upper triangle of the last two axes: out[..., i, j] = x[..., i, j] if j >= i + k, else 0."""
    return _triu_p(x, k=_diagonal(k, "triu"))
