"""The support descriptor (support.SupportPlan) and the package's one grid check (positions.grid_shift,
positions.as_integers): each derived fact against the dense mask built from the published definition
(support.py's module docstring) by explicit loops, and the descriptor's own cost (O(N), no N x M)."""
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from itnet_np.transform.positions import GRID_TOL, as_integers, grid_shift
from itnet_np.transform.support import Support, SupportPlan


def loop_mask(kind, window, radius, pq, ps):
    """keep[i, j] from the definition, pair by pair (positions (N, D), (M, D))."""
    keep = np.ones((len(pq), len(ps)), bool)
    for i, p in enumerate(pq):
        for j, s in enumerate(ps):
            delta = s - p
            if kind == "causal":
                keep[i, j] &= delta[0] <= 0
            if kind == "strict_causal":
                keep[i, j] &= delta[0] < 0
            if window is not None:
                keep[i, j] &= max(abs(delta)) <= window
            if radius is not None:
                keep[i, j] &= float(delta @ delta) <= radius * radius
    return keep


def band_mask(n, m, causal, window):
    i, j = np.arange(n)[:, None], np.arange(m)[None, :]
    keep = np.ones((n, m), bool)
    if causal:
        keep &= j <= i
    if window is not None:
        keep &= np.abs(i - j) <= window
    return keep


def test_grid_shift_and_as_integers():
    grid = np.arange(6.0).reshape(1, 6, 1)
    assert grid_shift(grid) == 0.0 and grid_shift(grid + 3) == 3.0 and grid_shift(grid - 2.5) == -2.5
    assert grid_shift(np.concatenate([grid, grid + 3])) is None               # one c for the batch
    assert grid_shift(np.concatenate([grid, grid])) == 0.0
    assert grid_shift(grid * 2) is None and grid_shift(np.zeros((1, 6, 2))) is None
    noisy = grid + 3 + GRID_TOL / 4
    assert grid_shift(noisy) == pytest.approx(3 + GRID_TOL / 4) and grid_shift(noisy, exact=True) is None
    assert grid_shift(grid + 3, exact=True) == 3.0 and grid_shift(grid + 0.5, exact=True) is None
    assert grid_shift(np.zeros((1, 0, 1))) == 0.0
    np.testing.assert_array_equal(as_integers(np.array([1.0, -2.0 + GRID_TOL / 2])), [1, -2])
    assert as_integers(np.array([1.0, 2.0 + GRID_TOL / 2]), exact=True) is None
    assert as_integers(np.array([0.5])) is None


@given(kind=st.sampled_from(["full", "causal", "strict_causal"]), window=st.sampled_from([None, 0, 1, 4]),
       radius=st.sampled_from([None, 0.0, 1.5, 3.0, 7.2]), n=st.integers(1, 12), m=st.integers(1, 12),
       cq=st.integers(-3, 3), cs=st.integers(-3, 3), batch=st.booleans())
def test_index_band_is_the_dense_support(kind, window, radius, n, m, cq, cs, batch):
    pq = (np.arange(n, dtype=np.float64) + cq).reshape(1, n, 1)
    ps = (np.arange(m, dtype=np.float64) + cs).reshape(1, m, 1)
    if batch:
        pq = np.concatenate([pq, pq])
    plan = Support(kind, window, radius).plan(pq, ps)
    assert plan.shift == (cq, cs) and plan.offset == cs - cq
    expected = loop_mask(kind, window, radius, pq[0], ps[0])
    dense = plan.dense_mask()
    np.testing.assert_array_equal(np.ones((n, m), bool) if dense is None else dense[-1], expected)
    band = plan.index_band()
    local = kind != "full" or window is not None or radius is not None
    if not local or (cq == cs and kind != "strict_causal"):
        assert band is not None                    # every support the raw kernels can band is banded
    if band is not None:
        np.testing.assert_array_equal(band_mask(n, m, *band), expected)


@given(kind=st.sampled_from(["full", "causal", "strict_causal"]), window=st.sampled_from([None, 0, 2, 5]),
       radius=st.sampled_from([None, 0.0, 2.0, 3.5]), n=st.integers(0, 15), m=st.integers(0, 15),
       seed=st.integers(0, 2**16), grid=st.booleans())
def test_row_ranges_are_the_dense_support(kind, window, radius, n, m, seed, grid):
    """Sorted 1-D sources (integers, with repeats, or the grid): [lo_i, hi_i) is exactly S(i)."""
    rng = np.random.default_rng(seed)
    if grid:
        pq, ps = np.arange(n, dtype=np.float64) + 2, np.arange(m, dtype=np.float64)
    else:
        pq, ps = rng.integers(-8, 8, n).astype(np.float64), np.sort(rng.integers(-8, 8, m)).astype(np.float64)
    plan = Support(kind, window, radius).plan(pq.reshape(1, n, 1), ps.reshape(1, m, 1))
    lo, hi = plan.row_ranges()
    assert lo.dtype == hi.dtype == np.int64 and lo.shape == hi.shape == (n,)
    j = np.arange(m)
    from_ranges = (j[None] >= lo[:, None]) & (j[None] < hi[:, None])
    np.testing.assert_array_equal(from_ranges, loop_mask(kind, window, radius, pq[:, None], ps[:, None]))


def test_row_ranges_decline():
    p = np.arange(5.0).reshape(1, 5, 1)
    causal = Support("causal")
    assert causal.plan(p, p[:, ::-1]).row_ranges() is None                   # unsorted sources
    assert causal.plan(np.concatenate([p, p]), p).row_ranges() is None       # per-batch positions
    assert Support(window=1).plan(np.zeros((1, 5, 2)), np.zeros((1, 5, 2))).row_ranges() is None   # D = 2


def test_user_mask_is_kept_as_given_and_anded_only_densely():
    rng = np.random.default_rng(0)
    p = np.arange(6.0).reshape(1, 6, 1)
    user = rng.random((2, 6, 6)) < 0.6
    plan = Support("causal").plan(p, p, user)
    assert plan.mask is user and not plan.per_head and not plan.is_full
    np.testing.assert_array_equal(plan.dense_mask(), user & np.tri(6, dtype=bool))
    extra = rng.random((1, 6, 6)) < 0.5
    smaller = plan.restricted(extra)
    np.testing.assert_array_equal(smaller.mask, user & extra)
    assert plan.mask is user                                                 # restricted() copies
    per_head = Support().plan(p, p, rng.random((1, 3, 6, 6)) < 0.5)
    assert per_head.per_head and per_head.index_band() == (False, None)
    assert Support().plan(p, p).is_full and Support().plan(p, p).dense_mask() is None
    with pytest.raises(AttributeError):
        plan.mask = None


def test_support_checks_dimension_when_planned():
    from itnet_np.errors import ConfigError
    with pytest.raises(ConfigError, match="1-D positions"):
        Support("causal").plan(np.zeros((1, 3, 2)), np.zeros((1, 3, 2)))


def test_plan_is_o_n():
    """Building the descriptor and reading its band and row ranges at N = M = 8192 allocates O(N)
    (a few int64 / float arrays of length N), far below one N x M bool mask (N^2 bytes)."""
    N = 8192
    p = np.arange(N, dtype=np.float32).reshape(1, N, 1)
    tracemalloc.start()
    try:
        plan = Support("causal", window=128).plan(p, p)
        band, ranges = plan.index_band(), plan.row_ranges()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert band == (True, 128) and ranges is not None
    assert peak < 64 * N, peak / N
    assert isinstance(plan, SupportPlan)
