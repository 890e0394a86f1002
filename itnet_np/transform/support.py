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
from ..autograd.backend import xp_of
from ..autograd.tensor import Tensor
from ..errors import ConfigError, ShapeError, describe
from ._config import number, optional_integer
from .positions import relative_offsets

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

    def mask(self, query_positions, source_positions):
        """keep (1 or B, N, M) raw bool array, or None for the full support."""
        if self.is_full:
            return None
        delta = relative_offsets(query_positions, source_positions)  # p_j - p_i
        xp = xp_of(delta)
        keep = xp.ones(delta.shape[:-1], dtype=bool)
        if self.kind != "full":
            if delta.shape[-1] != 1:
                raise ConfigError(f"support {self.kind!r} needs 1-D positions (sequences); got "
                                  f"D = {delta.shape[-1]}: use radius=, window= or an explicit mask")
            keep &= delta[..., 0] <= 0 if self.kind == "causal" else delta[..., 0] < 0
        if self.window is not None:
            keep &= xp.abs(delta).max(axis=-1) <= self.window
        if self.radius is not None:
            keep &= (delta * delta).sum(axis=-1) <= self.radius * self.radius
        return keep


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
        import numpy as np
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
