"""Support S(i): which sources j take part in the integral at query i.

A support is a boolean matrix keep[b, i, j] (True = j is in S(i)); the constraints below are ANDed:

    'full'            every j
    'causal'          p_j <= p_i                (1-D positions; on the default grid: j <= i)
    'strict_causal'   p_j <  p_i                (j < i)
    window=w          max_d |p_i,d - p_j,d| <= w  (1-D: |i - j| <= w), an int w >= 0
    radius=r          ||p_i - p_j||_2 <= r      (closed ball, as in neighbour search), a real r >= 0
    mask=...          an explicit bool array (N, M) or (B, N, M), or per head (B, H, N, M) (B, H
                      may be 1), True = keep

Causality is defined on positions rather than on array indices, so that a cross transform whose
sources are a boundary (e.g. an initial state at p = -1) followed by a sequence stays causal.

All-masked rows: if S(i) is empty, y_i gets no integral contribution (zeros, before skip and
bias) for every normalisation; never NaN. Masked pairs never influence the output or any gradient.
The mask depends on positions only through comparisons, so it is a constant for autograd.
"""
import math

import numpy as np

from ..autograd.backend import xp_of
from ..autograd.tensor import Tensor
from ..errors import ConfigError, ShapeError, describe
from ._config import number, optional_integer
from .positions import grid_shift, relative_offsets

KINDS = ("full", "causal", "strict_causal")


class Support:
    """A support specification: ``Support(kind='full', window=None, radius=None)`` (see module doc)."""

    def __init__(self, kind="full", window=None, radius=None):
        if kind is None:
            kind = "full"
        if kind not in KINDS:
            raise ConfigError(f"support: unknown kind {kind!r}; expected one of {KINDS} "
                              "(use window=w or radius=r for local supports, mask=... for an explicit one)")
        window = optional_integer("support", "window", window, 0)
        radius = None if radius is None else number("support", "radius", radius, minimum=0.0)
        self.kind, self.window, self.radius = kind, window, radius

    @property
    def is_full(self):
        return self.kind == "full" and self.window is None and self.radius is None

    def __repr__(self):
        parts = [repr(self.kind)]
        if self.window is not None:
            parts.append(f"window={self.window}")
        if self.radius is not None:
            parts.append(f"radius={self.radius}")
        return f"Support({', '.join(parts)})"

    def keep(self, delta):
        """keep (...) raw bool for offsets delta = p_j - p_i of shape (..., D): the constraints of the
        module docstring, evaluated on whatever offsets are given (all pairs, or only a stencil's taps)."""
        xp = xp_of(delta)
        keep = xp.ones(delta.shape[:-1], dtype=bool)
        if self.kind != "full":
            self._check_dim(delta.shape[-1])
            keep &= delta[..., 0] <= 0 if self.kind == "causal" else delta[..., 0] < 0
        if self.window is not None:
            keep &= xp.abs(delta).max(axis=-1) <= self.window
        if self.radius is not None:
            keep &= (delta * delta).sum(axis=-1) <= self.radius * self.radius
        return keep

    def _check_dim(self, dim):
        if self.kind != "full" and dim != 1:
            raise ConfigError(f"support {self.kind!r} needs 1-D positions (sequences); got "
                              f"D = {dim}: use radius=, window= or an explicit mask")

    def mask(self, query_positions, source_positions):
        """keep (1 or B, N, M) raw bool array, or None for the full support (dense: N x M)."""
        if self.is_full:
            return None
        return self.keep(relative_offsets(query_positions, source_positions))  # p_j - p_i

    def plan(self, query_positions, source_positions, mask=None):
        """The :class:`SupportPlan` of one call (positions (1|B, N, D), (1|B, M, D); ``mask`` the
        user's checked raw mask or None). O(N + M): nothing of size N x M is formed."""
        pq, ps = _raw(query_positions), _raw(source_positions)
        self._check_dim(pq.shape[-1])
        shifts = (grid_shift(pq), grid_shift(ps))
        exact = grid_shift(pq, exact=True), grid_shift(ps, exact=True)
        return SupportPlan(self, pq, ps, mask, None if None in shifts else shifts,
                           None if None in exact else int(exact[1] - exact[0]))


class SupportPlan:
    """What a backend needs to know about S(i) for one call, computed once by the operator.

    Fields (read-only): ``support`` (the configured :class:`Support`: kind 'full' / 'causal' /
    'strict_causal', window, radius), ``query_positions`` / ``source_positions`` (raw, (1|B, N, D) /
    (1|B, M, D)), ``mask`` (the user's explicit bool mask as given, (1|B, N, M) or per head
    (1|B, H, N, M), or None), ``shift`` ((c_q, c_s) when both position sets are the index grid
    p_i = i + c within GRID_TOL, else None) and ``offset`` (c_s - c_q when both are exactly on an
    integer grid, so that p_j - p_i = j - i + offset exactly; else None).

    Derived facts: :meth:`index_band` (the support as the raw kernels' index band j <= i, |i - j| <= w),
    :meth:`row_ranges` (per-row source ranges [lo_i, hi_i) for band supports on sorted 1-D positions),
    :meth:`keep_offsets` (the support on given offsets, e.g. a stencil's taps), :meth:`neighbours` (a
    radius support as CSR neighbour lists, any D, from a k-d tree). Only the dense
    reference calls :meth:`dense_mask`, the N x M AND of the support and the user's mask.
    """

    __slots__ = ("_neighbours", "mask", "offset", "query_positions", "shift", "source_positions", "support")

    def __init__(self, support, query_positions, source_positions, mask, shift, offset):
        fields = {"support": support, "query_positions": query_positions, "source_positions": source_positions,
                  "mask": mask, "shift": shift, "offset": offset, "_neighbours": False}
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError("SupportPlan is read-only; use restricted() for a smaller support")

    @property
    def kind(self):
        return self.support.kind

    @property
    def n(self):
        return self.query_positions.shape[1]

    @property
    def m(self):
        return self.source_positions.shape[1]

    @property
    def is_full(self):
        """True when every pair is kept without looking at any data."""
        return self.support.is_full and self.mask is None

    @property
    def per_head(self):
        """True when the user's mask differs per head ((1|B, H, N, M))."""
        return self.mask is not None and self.mask.ndim == 4

    def restricted(self, keep):
        """The same plan with ``keep`` (raw bool (1|B, N, M) or (1|B, H, N, M)) ANDed into the mask."""
        return SupportPlan(self.support, self.query_positions, self.source_positions,
                           combine_masks(self.mask, keep), self.shift, self.offset)

    def keep_offsets(self, delta):
        """The configured support (not the user's mask) on offsets delta = p_j - p_i (..., D)."""
        return self.support.keep(delta)

    def index_band(self):
        """(causal, window) such that the configured support is exactly {j <= i if causal} and
        {|i - j| <= window if window is not None} on indices, or None when it is not such a band
        (strictly causal, positions off the exact integer grid or with different shifts, D > 1
        with a local support). The user's mask is not included."""
        sup = self.support
        if sup.is_full:
            return False, None
        if self.offset != 0 or sup.kind == "strict_causal":
            return None
        window = sup.window
        if sup.radius is not None:                     # |i - j|^2 <= r^2 for integer i - j
            r = math.floor(sup.radius)
            window = r if window is None else min(window, r)
        return sup.kind == "causal", window

    def row_ranges(self):
        """(lo, hi) int64 (N,): S(i) = {j : lo_i <= j < hi_i} for a band support (causal, strictly
        causal, window, radius) on 1-D positions shared by the batch with sources sorted ascending,
        found by binary search, O(N log M); None otherwise. The user's mask is not included.
        Comparisons are on positions, so off-grid positions agree with the dense mask up to
        rounding of p_i +- w at the band's edge (exactly on integer grids)."""
        pq, ps = self.query_positions, self.source_positions
        if pq.shape[0] != 1 or ps.shape[0] != 1 or pq.shape[-1] != 1:
            return None
        xp = xp_of(ps)
        p, s = pq[0, :, 0], ps[0, :, 0]
        if s.size > 1 and not bool((s[1:] >= s[:-1]).all()):
            return None
        sup = self.support
        lo = xp.zeros(p.shape, np.int64)
        hi = xp.full(p.shape, s.shape[0], np.int64)
        if sup.kind != "full":
            hi = xp.searchsorted(s, p, side="right" if sup.kind == "causal" else "left").astype(np.int64)
        for reach in (sup.window, sup.radius):
            if reach is not None:
                lo = xp.maximum(lo, xp.searchsorted(s, p - reach, side="left"))
                hi = xp.minimum(hi, xp.searchsorted(s, p + reach, side="right"))
        return lo, xp.maximum(hi, lo)

    def neighbours(self):
        """The configured support as CSR neighbour lists (neighbours.Neighbours) when it has a radius
        (any D): the radius ball from a k-d tree, O((N + M) log M) time and O(N k) memory, then the
        other constraints (causal, window) on the listed pairs only. None without a radius, for
        positions that are not finite NumPy arrays, or D = 0. Computed once per plan. The user's
        mask is not included."""
        if self._neighbours is False:
            object.__setattr__(self, "_neighbours", self._build_neighbours())
        return self._neighbours

    def _build_neighbours(self):
        from .neighbours import radius_neighbours
        pq, ps, sup = self.query_positions, self.source_positions, self.support
        if sup.radius is None or type(pq) is not np.ndarray or type(ps) is not np.ndarray \
                or pq.shape[-1] == 0 or not (np.isfinite(pq).all() and np.isfinite(ps).all()):
            return None
        lists = radius_neighbours(pq, ps, sup.radius)
        if sup.kind == "full" and sup.window is None:
            return lists
        b, i, j = lists.pairs()
        delta = ps[np.minimum(b, ps.shape[0] - 1), j] - pq[np.minimum(b, pq.shape[0] - 1), i]
        return lists.select(sup.keep(delta))

    def dense_mask(self):
        """keep (1|B, N, M) or (1|B, H, N, M) raw bool, or None for everything: the dense
        reference's N x M mask (the only place one is formed; a radius support is materialised
        from its neighbour lists)."""
        lists = self.neighbours()
        keep = lists.dense() if lists is not None else \
            self.support.mask(self.query_positions, self.source_positions)
        return combine_masks(keep, self.mask)


def _raw(a):
    return a.data if isinstance(a, Tensor) else a


def as_support(support, window=None, radius=None):
    """A :class:`Support` from a kind string, None or a Support (window/radius are ANDed in)."""
    if isinstance(support, Support):
        if window is None and radius is None:
            return support
        return Support(support.kind, window if window is not None else support.window,
                       radius if radius is not None else support.radius)
    if support is not None and not isinstance(support, str):
        raise ConfigError(f"support must be a string in {KINDS}, a Support or None, got {support!r}")
    return Support(support, window, radius)


def check_mask(mask, batch, n, m, name="mask", heads=None):
    """Validate an explicit bool mask: (N, M) or (B, N, M) as (1 or B, N, M); a per-head mask
    (B, H, N, M) (B and H may be 1; needs ``heads``) as (1|B, H, N, M), or as (1|B, N, M) when
    its head axis is 1. Returned raw (a constant for autograd)."""
    if mask is None:
        return None
    data = mask.data if isinstance(mask, Tensor) else mask
    if not hasattr(data, "shape"):
        data = np.asarray(data)
    if data.dtype.kind != "b":
        raise ShapeError(f"{name}: expected a bool array (True = keep), got {describe(data)}")
    if data.ndim == 2 and data.shape == (n, m):
        return data[None]
    if data.ndim == 3 and data.shape[1:] == (n, m) and data.shape[0] in (1, batch):
        return data
    if heads is not None and data.ndim == 4 and data.shape[2:] == (n, m) and data.shape[0] in (1, batch) \
            and data.shape[1] in (1, heads):
        return data[:, 0] if data.shape[1] == 1 else data
    shapes = f"({n}, {m}) or ({batch}, {n}, {m})" if heads is None else \
        f"({n}, {m}), ({batch}, {n}, {m}) or per head ({batch}, {heads}, {n}, {m})"
    raise ShapeError(f"{name}: expected shape {shapes}, got {describe(data)}")


def combine_masks(*masks):
    """AND of the given raw masks (1|B, N, M) or (1|B, H, N, M) (None = keep everything); 4-D as soon
    as one is per head; None when all are None."""
    given = [m for m in masks if m is not None]
    if any(m.ndim == 4 for m in given):
        given = [m if m.ndim == 4 else m[:, None] for m in given]
    out = None
    for m in given:
        out = m if out is None else out & m
    return out
