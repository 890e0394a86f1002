"""Radius supports as CSR neighbour lists in the fused backend (issue 8): IntegralTransform(backend=
'numba') against backend='dense' on random point clouds in 2-D and 3-D, unsorted 1-D points and
positions per batch item: forward and the gradients of every input (features, positions, source,
quadrature weights, every parameter), dot-product and MLP kernels, every normalisation, heads, self
and cross, user masks, rows with no neighbours; float64 to 1e-10 and float32 to 1e-4. The dense path
is the independent reference (engine ops from the published formulas, gradchecked in
test_operator_props.py). Also: the raw kernels over per-head lists against a NumPy oracle written
from the formula, the transposed lists against brute force, the plan's note, and that no dense mask
is formed on this path. Last, 1-D causal / window supports on unsorted or per-batch positions, which
run as row ranges over the sources sorted by position (sorted_plan.py): parity and no dense mask.
"""
import numpy as np
import pytest
from _graph_helpers import graph_nodes
from hypothesis import given
from hypothesis import strategies as st
from test_fused_engine import assert_parity

import itnet_np as itn
from itnet_np import transform as T
from itnet_np.errors import ShapeError
from itnet_np.transform.neighbours import radius_neighbours
from itnet_np.transform.support import Support, SupportPlan

pytest.importorskip("numba")
from itnet_np.transform.fused.engine_ops import NEIGHBOUR_ATTENTION_OP, NEIGHBOUR_MLP_OP
from itnet_np.transform.fused.neighbour_attention_numba import (
    neighbour_attention_backward,
    neighbour_attention_forward,
)
from itnet_np.transform.fused.pair_lists import PairLists, pair_lists

F64, F32 = np.float64, np.float32
NORMS = ("none", "sum", "softmax")


def make_op(kind, normalization, dtype, D, H=2, radius=0.6, C=3):
    """A layer whose kernel sees D-dimensional positions (the MLP kernel through dp, |dp|^2, Fourier
    features and products, so the positions get gradients)."""
    if kind == "mlp":
        k = T.MLPKernel(C, heads=H, hidden=5, inputs=("dp", "dist2", "fourier", "prod", "fi", "fj"), position_dim=D,
                        fourier=2, learn_frequencies=True, product_rank=2, activation="tanh", rng=1, dtype=dtype)
        if normalization == "sum":                   # keep Z = sum_j w_j s_ij away from 0
            k.b2.data[...] = 3.0
            k.W2.data[...] *= 0.1
    else:
        k = T.DotProductKernel(C, heads=H, head_dim=2, bias=True, rng=1, dtype=dtype)
        if normalization == "sum":
            k.b_q.data[...] = 1.5
            k.b_k.data[...] = 1.5
    return T.IntegralTransform(C, 2, k, embed_dim=2 * H, normalization=normalization, radius=radius,
                               value_bias=True, skip=True, rng=2, dtype=dtype)


def cloud_args(rng, dtype, D, B, N, M, cross, per_batch, weights=None, mask=False, C=3):
    """Call arguments on random points in [0, 2]^D (per batch item when per_batch)."""
    lead = (B,) if per_batch else ()
    args = {"x": rng.standard_normal((B, N, C)), "positions": rng.uniform(0, 2, lead + (N, D))}
    if cross:
        args["source"] = rng.standard_normal((B, M, C))
        args["source_positions"] = rng.uniform(0, 2, lead + (M, D))
    M = M if cross else N
    if weights == "shared":
        args["weights"] = rng.uniform(0.5, 2.0, (B, M))
    elif weights == "per_head":
        args["weights"] = rng.uniform(0.5, 2.0, (B, 2, M))
    elif weights == "zeros":                          # w_j = 0 excluded under softmax, grad 0 there
        w = rng.uniform(0.5, 2.0, (B, M))
        w[:, ::3] = 0.0
        args["weights"] = w
    if mask:
        args["mask"] = rng.uniform(size=(B, N, M)) < 0.7
    return {k: (v.astype(dtype) if v.dtype.kind == "f" else v) for k, v in args.items()}


def note_of(op, args):
    op.backend = "numba"
    return op.explain(args["x"], **{k: v for k, v in args.items() if k != "x"})


def numba_without_dense_mask(op, x, args, monkeypatch):
    """(the dense output, the 'numba' output y, the op names of y's graph), the 'numba' forward and
    backward run with SupportPlan.dense_mask and Support.mask (the N x M constructions) refusing."""
    op.backend = "dense"
    expected = op(x, **args).data

    def refuse(*_):
        raise AssertionError("the fused path formed a dense mask")
    with monkeypatch.context() as m:
        m.setattr(SupportPlan, "dense_mask", refuse)
        m.setattr(Support, "mask", refuse)
        op.backend = "numba"
        y = op(x, **args)
        names = [node.prim.name for node in graph_nodes(y)]
        y.sum().backward()
    return expected, y, names


@given(D=st.sampled_from([1, 2, 3]), kind=st.sampled_from(["dot", "mlp"]), normalization=st.sampled_from(NORMS),
       heads=st.sampled_from([1, 2]), cross=st.booleans(), per_batch=st.booleans(), N=st.integers(1, 24),
       M=st.integers(1, 24), radius=st.floats(0.05, 1.5), weights=st.sampled_from([None, "shared", "per_head",
                                                                                   "zeros"]),
       mask=st.booleans(), seed=st.integers(0, 2**16))
def test_parity_on_point_clouds(D, kind, normalization, heads, cross, per_batch, N, M, radius, weights, mask,
                                seed):
    rng = np.random.default_rng(seed)
    if heads == 1 and weights == "per_head":
        weights = "shared"
    op = make_op(kind, normalization, F64, D, H=heads, radius=radius)
    args = cloud_args(rng, F64, D, 2, N, M, cross, per_batch, weights, mask)
    if D > 1 or per_batch:                            # otherwise unsorted 1-D points (sorted ones: row ranges)
        assert "neighbour lists" in note_of(op, args)
    assert_parity(op, args, F64, rng)


@pytest.mark.parametrize("kind", ["dot", "mlp"])
@pytest.mark.parametrize("normalization", NORMS)
def test_parity_float32(kind, normalization):
    rng = np.random.default_rng(3)
    op = make_op(kind, normalization, F32, 2, radius=0.5)
    args = cloud_args(rng, F32, 2, 2, 40, 33, True, False, "shared")
    assert_parity(op, args, F32, rng)


@pytest.mark.parametrize("kind", ["dot", "mlp"])
@pytest.mark.parametrize("normalization", NORMS)
@pytest.mark.parametrize("D", [2, 3])
def test_rows_without_neighbours_match_the_dense_convention(kind, normalization, D):
    """Some queries have no source within r, one query sits far from everything: y_i gets no integral
    (zeros before skip and bias; the softmax of an empty set is not NaN), on both paths, with the
    same gradients."""
    rng = np.random.default_rng(5)
    op = make_op(kind, normalization, F64, D, radius=0.3)
    args = cloud_args(rng, F64, D, 2, 20, 15, True, False)
    args["positions"][3] = 50.0                       # no neighbour at all
    _, fused = assert_parity(op, args, F64, rng)
    op.backend = "numba"
    positions = args["positions"][None]
    plan = op.support.plan(positions, args["source_positions"][None])
    empty = np.diff(plan.neighbours().indptr[0]) == 0
    assert empty[3] and empty.sum() >= 2              # the case is really exercised
    skip_only = op.W_skip.data @ args["x"][:, empty].transpose(0, 2, 1) + op.b.data[:, None]
    np.testing.assert_allclose(fused["y"][:, empty], skip_only.transpose(0, 2, 1), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["dot", "mlp"])
@pytest.mark.parametrize("normalization", NORMS)
@pytest.mark.parametrize("D", [2, 3])
@pytest.mark.parametrize("lattice", [False, True])
def test_window_on_point_clouds_goes_as_neighbour_lists(kind, normalization, D, lattice):
    """A window max_d |p_j,d - p_i,d| <= w on D > 1 positions (no radius) runs over the lists of a
    ball holding the window's cube; on an integer lattice the cube's corners lie exactly at
    distance w sqrt(D) and must be kept."""
    rng = np.random.default_rng(14)
    op = make_op(kind, normalization, F64, D)
    op.support = T.Support("full", window=1)
    args = cloud_args(rng, F64, D, 2, 30, 26, True, lattice, "shared")
    for key in ("positions", "source_positions"):
        args[key] = np.round(args[key] * 2) if lattice else args[key] * 2
    assert "window (in a radius ball) neighbour lists" in note_of(op, args)
    assert_parity(op, args, F64, rng)


@pytest.mark.parametrize("kind", ["dot", "mlp"])
def test_softmax_row_whose_neighbours_all_have_zero_weight(kind):
    """Under softmax w_j = 0 excludes j: a query whose every neighbour has w = 0 attends nothing
    (zero integral, finite gradients equal to the dense ones; 0 * log-sum-exp = NaN must not leak)."""
    rng = np.random.default_rng(6)
    op = make_op(kind, "softmax", F64, 2, radius=0.5)
    args = cloud_args(rng, F64, 2, 2, 20, 30, True, False, "shared")
    near = np.linalg.norm(args["source_positions"] - args["positions"][0], axis=-1) <= 0.5
    assert near.any()
    args["weights"][:, near] = 0.0
    _, fused = assert_parity(op, args, F64, rng)
    assert all(np.isfinite(g).all() for g in fused.values() if g is not None)


@pytest.mark.parametrize("kind", ["dot", "mlp"])
@pytest.mark.parametrize("case", ["2d", "3d_cross", "unsorted_1d", "per_batch_1d", "window_2d"])
def test_neighbour_path_never_forms_a_dense_mask(kind, case, monkeypatch):
    """Forward and backward on the neighbour-list path call neither SupportPlan.dense_mask nor
    Support.mask (the N x M constructions), and the plan's note says it uses the lists."""
    rng = np.random.default_rng(9)
    D = {"2d": 2, "3d_cross": 3, "window_2d": 2}.get(case, 1)
    op = make_op(kind, "softmax", F64, D, radius=0.5)
    args = cloud_args(rng, F64, D, 2, 30, 25, case == "3d_cross", case == "per_batch_1d", "zeros")
    if case == "window_2d":
        op.support = T.Support(window=1)
        args["positions"] = args["positions"] * 4
    assert "neighbour lists (CSR from a k-d tree" in note_of(op, args)
    x = itn.tensor(args.pop("x"), requires_grad=True)
    expected, y, names = numba_without_dense_mask(op, x, args, monkeypatch)
    np.testing.assert_allclose(y.data, expected, rtol=1e-12, atol=1e-12)
    assert x.grad is not None and np.isfinite(x.grad.data).all()
    assert names.count(NEIGHBOUR_MLP_OP if kind == "mlp" else NEIGHBOUR_ATTENTION_OP) == 1


# ----------------------------------------------------------------------------- the raw kernels

def oracle_attention(q, k, v, keep, scale, normalization):
    """y (B, H, N, dv) by explicit loops over the kept pairs, from the module docstring's formula."""
    B, H, N, _ = q.shape
    out = np.zeros((B, H, N, v.shape[3]))
    for b in range(B):
        for h in range(H):
            for i in range(N):
                js = np.flatnonzero(keep[b, h, i])
                if js.size == 0:
                    continue
                x = scale * np.array([q[b, h, i] @ k[b, h, j] for j in js])
                if normalization == "softmax":
                    p = np.exp(x - x.max())
                    p /= p.sum()
                elif normalization == "sum":
                    p = x / x.sum() if x.sum() != 0 else 0 * x
                else:
                    p = x
                out[b, h, i] = p @ v[b, h, js]
    return out


@pytest.mark.parametrize("normalization", NORMS)
def test_raw_attention_over_per_head_lists_against_loops(normalization):
    """Lists that differ per batch item (per-batch positions) and per head (a per-head mask read at
    the listed pairs): forward against loops, gradients against central differences (float64)."""
    rng = np.random.default_rng(11)
    B, H, N, M, d, dv = 2, 3, 17, 13, 4, 3
    pq, ps = rng.uniform(0, 2, (B, N, 2)), rng.uniform(0, 2, (B, M, 2))
    heads_mask = rng.uniform(size=(1, H, N, M)) < 0.75
    lists = pair_lists(radius_neighbours(pq, ps, 0.7), heads_mask)
    assert lists.indptr.shape == (B, H, N + 1)
    keep = radius_neighbours(pq, ps, 0.7).dense()[:, None] & heads_mask
    q, k = rng.standard_normal((B, H, N, d)), rng.standard_normal((B, H, M, d)) + 0.5
    v, dout = rng.standard_normal((B, H, M, dv)), rng.standard_normal((B, H, N, dv))
    out, stats = neighbour_attention_forward(q, k, v, 0.6, lists, normalization)
    np.testing.assert_allclose(out, oracle_attention(q, k, v, keep, 0.6, normalization), rtol=1e-12, atol=1e-12)
    grads = neighbour_attention_backward(q, k, v, out, stats, dout, 0.6, lists, normalization)
    for index, grad in enumerate(grads):
        direction = rng.standard_normal(grad.shape)
        args = [q, k, v]

        def f(t, index=index, direction=direction, args=args):
            moved = list(args)
            moved[index] = args[index] + t * direction
            return (oracle_attention(*moved, keep, 0.6, normalization) * dout).sum()
        numeric = (f(1e-6) - f(-1e-6)) / 2e-6
        np.testing.assert_allclose((grad * direction).sum(), numeric, rtol=1e-7, atol=1e-7)


def test_transposed_lists_against_brute_force():
    rng = np.random.default_rng(12)
    pq, ps = rng.uniform(0, 2, (2, 21, 3)), rng.uniform(0, 2, (1, 16, 3))
    per_head = rng.uniform(size=(1, 2, 21, 16)) < 0.6
    lists = pair_lists(radius_neighbours(pq, ps, 0.9), per_head)
    t = lists.transposed()
    assert t.indptr.shape == (2, 2, 17) and (t.n, t.m) == (16, 21) and t.nnz == lists.nnz
    for b in range(2):
        for h in range(2):
            rows = [set(lists.indices[lists.indptr[b, h, i]:lists.indptr[b, h, i + 1]]) for i in range(21)]
            for j in range(16):
                got = t.indices[t.indptr[b, h, j]:t.indptr[b, h, j + 1]]
                np.testing.assert_array_equal(got, [i for i in range(21) if j in rows[i]])


def test_lists_that_do_not_fit_raise_shape_errors():
    rng = np.random.default_rng(13)
    q, k, v = rng.standard_normal((1, 1, 5, 2)), rng.standard_normal((1, 1, 4, 2)), rng.standard_normal((1, 1, 4, 2))
    wrong_n = PairLists(np.zeros((1, 1, 5), np.int64), np.zeros(0, np.int64), 4, 4)
    with pytest.raises(ShapeError, match="indptr"):
        neighbour_attention_forward(q, k, v, 1.0, wrong_n)
    bad_index = PairLists(np.array([[[0, 1, 1, 1, 1, 1]]]), np.array([4]), 5, 4)
    with pytest.raises(ShapeError, match=r"\[0, 4\)"):
        neighbour_attention_forward(q, k, v, 1.0, bad_index)


# ------------------------------------------- 1-D band supports on unsorted / per-batch positions

@given(kind=st.sampled_from(["dot", "mlp"]), normalization=st.sampled_from(NORMS),
       support=st.sampled_from([("causal", None), ("strict_causal", None), ("full", 2), ("causal", 3),
                                ("strict_causal", 4)]),
       per_batch=st.booleans(), cross=st.booleans(), N=st.integers(1, 24), M=st.integers(1, 24),
       weights=st.sampled_from([None, "shared", "per_head", "zeros"]), mask=st.booleans(),
       seed=st.integers(0, 2**16))
def test_band_supports_on_unsorted_points_sort_the_sources(kind, normalization, support, per_batch, cross, N, M,
                                                           weights, mask, seed):
    """Causal / window supports on unsorted or per-batch 1-D positions run as row ranges over the
    sources sorted by position (sorted_plan.py), equal to the dense reference with every gradient."""
    rng = np.random.default_rng(seed)
    op = make_op(kind, normalization, F64, 1)
    op.support = T.Support(*support)
    args = cloud_args(rng, F64, 1, 2, N, M, cross, per_batch, weights, mask)
    for key in ("positions", "source_positions"):    # integer-valued points: ties and exact boundaries
        if key in args and seed % 2:
            args[key] = np.round(args[key] * 4)
    plan = op.support.plan(np.reshape(args["positions"], (-1, N, 1)),
                           np.reshape(args.get("source_positions", args["positions"]), (-1, M if cross else N, 1)))
    if plan.row_ranges() is None and plan.index_band() is None:
        assert "sources sorted by position" in note_of(op, args)
    assert_parity(op, args, F64, rng)


@pytest.mark.parametrize("kind", ["dot", "mlp"])
@pytest.mark.parametrize("per_batch", [False, True])
def test_sorted_sources_path_never_forms_a_dense_mask(kind, per_batch, monkeypatch):
    rng = np.random.default_rng(10)
    op = make_op(kind, "softmax", F64, 1)
    op.support = T.Support("causal", 5)
    args = cloud_args(rng, F64, 1, 2, 30, 25, True, per_batch, "shared")
    args["positions"], args["source_positions"] = args["positions"] * 10, args["source_positions"] * 10
    x = itn.tensor(args.pop("x"), requires_grad=True)
    expected, y, _ = numba_without_dense_mask(op, x, args, monkeypatch)
    np.testing.assert_allclose(y.data, expected, rtol=1e-12, atol=1e-12)


def test_cell_order_relabels_the_lists_of_the_permuted_points():
    """locality.py: the relabelled lists are exactly the lists of the points in cell order, and the
    order groups points of a cell together."""
    from itnet_np.transform.fused.locality import cell_order, relabel

    rng = np.random.default_rng(15)
    pq, ps = rng.uniform(0, 5, (40, 2)), rng.uniform(0, 5, (33, 2))
    q_order, s_order = cell_order(pq, 0.7), cell_order(ps, 0.7)
    assert sorted(q_order) == list(range(40))
    cells = np.floor((pq[q_order] - pq.min(0)) / 0.7)
    keys = cells[:, 0] * 100 + cells[:, 1]
    assert (np.diff(keys) >= 0).all()
    pq2 = rng.uniform(0, 5, (40, 2))                  # a second batch item with its own points
    q_order2 = cell_order(pq2, 0.7)
    moved = relabel(radius_neighbours(np.stack([pq, pq2]), ps[None], 0.7), np.stack([q_order, q_order2]),
                    s_order[None])
    expected = radius_neighbours(np.stack([pq[q_order], pq2[q_order2]]), ps[s_order][None], 0.7)
    np.testing.assert_array_equal(moved.indptr, expected.indptr)
    for b in range(2):
        for i in range(40):                           # same sets per row (order within a row is free)
            np.testing.assert_array_equal(np.sort(moved.indices[moved.indptr[b, i]:moved.indptr[b, i + 1]]),
                                          expected.indices[expected.indptr[b, i]:expected.indptr[b, i + 1]])
