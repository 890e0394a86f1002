"""Ops that move data without computing on it. Their VJPs move the gradient back."""
import numpy as np

from ..primitive import primitive


def _reshape(x, shape):
    return x.reshape(shape)


reshape = primitive(_reshape, "reshape").defvjp(lambda g, out, x, shape: reshape(g, x.shape))


def _transpose(x, axes=None):
    return x.transpose(axes)


def _inverse_axes(axes, ndim):
    if axes is None:
        return None
    return tuple(np.argsort([a % ndim for a in axes]))


transpose = primitive(_transpose, "transpose").defvjp(
    lambda g, out, x, axes=None: transpose(g, axes=_inverse_axes(axes, x.ndim)))


def _broadcast_to(x, shape):
    return np.broadcast_to(x, shape)


# The engine sums the gradient back down to x's shape (un-broadcasting is done once, there).
broadcast_to = primitive(_broadcast_to, "broadcast_to").defvjp(lambda g, out, x, shape: g)


def _swapaxes(x, axis1, axis2):
    return x.swapaxes(axis1, axis2)


swapaxes = primitive(_swapaxes, "swapaxes").defvjp(lambda g, out, x, axis1, axis2: swapaxes(g, axis1, axis2))


def _concatenate(*arrays, axis=0):
    from ..backend import xp_of
    return xp_of(arrays[0]).concatenate(arrays, axis=axis)


def _concatenate_vjp(i, g, out, *arrays, axis=0):
    axis = axis % g.ndim
    start = int(sum(a.shape[axis] for a in arrays[:i]))
    index = (slice(None),) * axis + (slice(start, start + arrays[i].shape[axis]),)
    from .index import getitem
    return getitem(g, index)


_concatenate_p = primitive(_concatenate, "concatenate").defvjp_argnum(_concatenate_vjp)


def concatenate(arrays, axis=0):
    """Join a sequence of arrays along an existing ``axis``; the VJP slices g back apart."""
    return _concatenate_p(*arrays, axis=axis)
