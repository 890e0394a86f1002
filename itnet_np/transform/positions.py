"""Point positions: grids, validation, relative offsets.

Positions are arrays of shape (N, D) (shared by the batch) or (B, N, D). Internally they are kept
as (1 or B, N, D) so that every kernel can broadcast them against batch-first features (B, N, C).
When no positions are given, the points are taken to be a 1-D grid, p_i = i (D = 1); that is the
sequence convention every conventional layer (conv, attention, SSM) uses.
"""
import numpy as np

from ..autograd.backend import xp_of
from ..autograd.tensor import Tensor
from ..errors import ConfigError, ShapeError, describe
from ._config import float_dtype, integer


def grid_positions(shape, spacing=1.0, origin=0.0, dtype=None):
    """Integer grid of ``shape`` = (n_1, ..., n_D) as positions, shape (prod(shape), D).

    Row ``r`` is the multi-index of the r-th point in C (row-major) order, times ``spacing``, plus
    ``origin``; so features flattened with ``x.reshape(B, -1, C)`` from (B, n_1, ..., n_D, C) line up
    with these rows. ``spacing`` and ``origin`` are scalars or length-D sequences.
    """
    items = tuple(shape) if np.iterable(shape) else (shape,)
    if not items:
        raise ConfigError(f"grid_positions: shape must be a non-empty tuple of ints >= 1, got {shape!r}")
    shape = tuple(integer("grid_positions", "shape entry", n) for n in items)
    dtype = float_dtype("grid_positions", dtype)
    axes = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    grid = np.stack([a.reshape(-1) for a in axes], axis=-1).astype(dtype)
    return grid * np.asarray(spacing, dtype) + np.asarray(origin, dtype)


def as_positions(positions, batch, n, dtype, name="positions", dim=None, xp=np):
    """Validate ``positions`` and return them as (1 or B, N, D) (a Tensor stays a Tensor).

    ``None`` gives the sequence grid p_i = i of shape (1, N, 1) in ``dtype``. Integer arrays are
    converted to ``dtype`` (grid indices are exact in floating point); floating arrays must already
    be ``dtype`` (itnet-np never casts floats silently). ``dim``: the position dimension D the
    kernel needs, or None for any. ``xp``: the array module (numpy or cupy) of the implied grid.
    """
    if positions is None:
        if dim not in (None, 1):
            raise ShapeError(f"{name}: the kernel works on {dim}-D positions, so they must be given "
                             f"explicitly as (N, {dim}) or (B, N, {dim}); only 1-D grids are implied")
        return xp.arange(n, dtype=dtype).reshape(1, n, 1)
    data = positions.data if isinstance(positions, Tensor) else positions
    if not hasattr(data, "shape"):
        data = positions = np.asarray(positions)
    if data.dtype.kind in "iub":
        positions = data = data.astype(dtype)
    want = f"({n}, D) or ({batch}, {n}, D)" if dim is None else f"({n}, {dim}) or ({batch}, {n}, {dim})"
    ok = data.ndim == 2 and data.shape[0] == n or data.ndim == 3 and data.shape[1] == n \
        and data.shape[0] in (1, batch)
    if not ok or (dim is not None and data.shape[-1] != dim):
        raise ShapeError(f"{name}: expected shape {want}, got {describe(data)}")
    if data.ndim == 2:
        from ..autograd.ops import reshape
        positions = reshape(positions, (1,) + tuple(data.shape))
    return positions


def relative_offsets(query_positions, source_positions):
    """Raw offsets p_j - p_i, shape (1 or B, N, M, D), for position-only constants (masks, tables)."""
    q = query_positions.data if isinstance(query_positions, Tensor) else query_positions
    s = source_positions.data if isinstance(source_positions, Tensor) else source_positions
    return s[:, None, :, :] - q[:, :, None, :]


# Positions within this distance of an integer (grid point) count as that integer: the one tolerance
# of every grid check in the package (support descriptors, ALiBi, relative tables, stencils, scans).
GRID_TOL = 1e-6


def as_integers(p, exact=False):
    """Raw positions ``p`` as int64 when every entry is within GRID_TOL of an integer (``exact``: is
    an integer), else None. O(size of p); NumPy or CuPy."""
    xp = xp_of(p)
    r = xp.rint(p)
    if p.size and float(xp.abs(p - r).max()) > (0.0 if exact else GRID_TOL):
        return None
    return r.astype(np.int64)


def grid_shift(p, exact=False):
    """c when raw positions ``p`` (1|B, N, 1) are the index grid p_i = i + c, with one c for the whole
    batch, else None (also for D > 1). Within GRID_TOL; with ``exact``, c must be an integer and
    p_i - i equal to it exactly (then every difference p_j - p_i is the exact integer j - i + c_s - c_q
    in floating point, so comparisons on positions are comparisons on indices). O(B N): the one
    "on the grid?" check of the package."""
    p = p.data if isinstance(p, Tensor) else p
    if p.ndim != 3 or p.shape[-1] != 1:
        return None
    n = p.shape[1]
    if n == 0 or p.shape[0] == 0:
        return 0.0
    xp = xp_of(p)
    shift = p[..., 0] - xp.arange(n, dtype=p.dtype)
    c = float(shift.reshape(-1)[0])
    if exact and (c != round(c) or abs(c) >= 2.0 ** 24):
        return None
    return c if float(xp.abs(shift - c).max()) <= (0.0 if exact else GRID_TOL) else None


def integer_offsets(query_positions, source_positions, what):
    """p_j - p_i for 1-D positions as an int64 array (1 or B, N, M); raises if not integral."""
    delta = relative_offsets(query_positions, source_positions)
    if delta.shape[-1] != 1:
        raise ShapeError(f"{what}: needs 1-D positions (D = 1), got D = {delta.shape[-1]}")
    rounded = as_integers(delta[..., 0])
    if rounded is None:
        raise ConfigError(f"{what}: relative positions must be integers (a grid); got non-integer offsets")
    return rounded
