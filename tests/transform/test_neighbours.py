"""Radius supports on point clouds as CSR neighbour lists (neighbours.py, SupportPlan.neighbours):
the lists against the definition ||p_j - p_i||_2 <= r evaluated pair by pair, in 1-D, 2-D and 3-D,
per batch item, with causal / window constraints on top; the operator's dense path (materialised
from the lists) and the fused path against an explicit mask built by loops; and the lists' memory."""
import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_support_plan import loop_mask

from itnet_np import transform as T
from itnet_np.transform.neighbours import radius_neighbours
from itnet_np.transform.support import Support


@given(D=st.integers(1, 3), n=st.integers(0, 25), m=st.integers(0, 25), radius=st.floats(0.0, 8.0),
       kind=st.sampled_from(["full", "causal", "strict_causal"]), window=st.sampled_from([None, 0, 3]),
       batch=st.sampled_from([(1, 1), (2, 1), (1, 3), (2, 2)]), seed=st.integers(0, 2**16))
def test_lists_are_the_radius_support(D, n, m, radius, kind, window, batch, seed):
    rng = np.random.default_rng(seed)
    if D > 1:
        kind = "full"                                     # causal supports are 1-D only
    pq, ps = 10 * rng.random((batch[0], n, D)), 10 * rng.random((batch[1], m, D))
    if n and m and seed % 3 == 0:                         # shared points: distance 0, window 0 keeps them
        pq[..., : min(n, m), :] = ps[:1, : min(n, m), :]
    plan = Support(kind, window, radius).plan(pq, ps)
    lists = plan.neighbours()
    B = max(batch)
    assert lists.indptr.shape == (B, n + 1) and lists.indptr[-1, -1] == lists.indices.size
    assert (np.diff(lists.indptr, axis=1) >= 0).all()
    dense = lists.dense()
    for b in range(B):
        expected = loop_mask(kind, window, radius, pq[min(b, batch[0] - 1)], ps[min(b, batch[1] - 1)])
        np.testing.assert_array_equal(dense[b], expected)
        for i in range(n):                                # each row's list, sorted ascending
            row = lists.indices[lists.indptr[b, i]:lists.indptr[b, i + 1]]
            np.testing.assert_array_equal(row, np.flatnonzero(expected[i]))
    np.testing.assert_array_equal(plan.dense_mask(), dense)


@pytest.mark.parametrize("D", [2, 3])
@pytest.mark.parametrize("radius", [1.0, 2.0, np.sqrt(2.0), np.sqrt(3.0), 2.5])
def test_integer_lattice_boundaries(D, radius):
    """Points at exactly distance r (1, sqrt 2, 2, ...) are kept, as the closed ball says."""
    axes = np.meshgrid(*[np.arange(4.0)] * D, indexing="ij")
    grid = np.stack([a.reshape(-1) for a in axes], -1)[None]
    lists = radius_neighbours(grid, grid, radius)
    np.testing.assert_array_equal(lists.dense()[0], loop_mask("full", None, radius, grid[0], grid[0]))


def test_no_lists_without_radius_or_for_nonfinite_positions():
    p = np.random.default_rng(0).random((1, 5, 2))
    assert Support(window=1).plan(p, p).neighbours() is None
    q = p.copy()
    q[0, 2, 0] = np.nan
    plan = Support(radius=0.5).plan(q, p)
    assert plan.neighbours() is None
    np.testing.assert_array_equal(plan.dense_mask()[0, 2], False)    # NaN positions: no pair kept


@pytest.mark.parametrize("D", [2, 3])
@pytest.mark.parametrize("backend", ["dense", "auto", "numba"])
def test_operator_radius_on_point_clouds_matches_an_explicit_mask(D, backend):
    rng = np.random.default_rng(D)
    B, N, M, C = 2, 60, 45, 3
    pq, ps = rng.random((B, N, D)), rng.random((B, M, D))
    x, src = rng.standard_normal((B, N, C)), rng.standard_normal((B, M, C))
    kernel = T.MLPKernel(C, heads=2, hidden=4, inputs=("dp", "dist2", "fi", "fj"), position_dim=D,
                         activation="tanh", rng=0, dtype=np.float64)
    make = lambda **kw: T.IntegralTransform(C, 2, kernel, normalization="softmax", rng=1, dtype=np.float64, **kw)
    radius = 0.3
    y = make(radius=radius, backend=backend)(x, positions=pq, source=src, source_positions=ps).data
    mask = np.stack([loop_mask("full", None, radius, pq[b], ps[b]) for b in range(B)])
    expected = make()(x, positions=pq, source=src, source_positions=ps, mask=mask).data
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)


def test_lists_memory_is_o_n_k():
    """N = 20000 points in the unit square, r = 0.01 (about 6 neighbours each): the traced peak of
    building the lists is O(N k), far below one N x N bool mask (400 MB)."""
    N = 20000
    p = np.random.default_rng(0).random((1, N, 2))
    plan = Support(radius=0.01).plan(p, p)
    tracemalloc.start()
    try:
        lists = plan.neighbours()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    k = lists.indices.size / N
    assert 2 < k < 20
    assert peak < 400 * N * 8, peak / N          # O(N k): a few int64 per pair plus per-row lists
    assert peak < N * N / 20
