"""IntegralTransform(backend='numba') against backend='dense': forward and every gradient (features,
positions, source, weights, each parameter of the kernel and of the operator), for the dot-product
kernel with and without ALiBi and the MLP kernel on all six pair inputs; self and cross; full,
causal, window, explicit and per-call masks with empty rows; none / sum / softmax; float64 (1e-10)
and float32 (1e-4). Also: band_of against a brute-force band, the single-node graph, create_graph,
the shared backward under retain_graph, declining calls, and numba being unavailable.

The dense path is the independent reference here (engine ops composed from the published formulas,
itself checked by gradcheck in test_operator_props.py); the raw kernels have their own NumPy-oracle
tests in test_fused_*_raw.py.
"""
import sys

import numpy as np
import pytest
from _graph_helpers import graph_nodes
from hypothesis import given
from hypothesis import strategies as st

import itnet_np as itn
from itnet_np import transform as T
from itnet_np.errors import ConfigError, GraphError
from itnet_np.nn.functional.activations import get_activation
from itnet_np.transform import planner
from itnet_np.transform.fused import numba_plans as FB
from itnet_np.transform.fused._tiles import ACTIVATIONS as FUSED_ACTIVATIONS
from itnet_np.transform.fused.engine_ops import ATTENTION_OP, MLP_OP

F64, F32 = np.float64, np.float32
TOL = {F64: 1e-10, F32: 1e-4}
KINDS = ("dot", "alibi", "mlp")
NORMS = ("none", "sum", "softmax")


def make_op(kind, normalization, dtype, support="full", window=None, C=3, H=2):
    if kind == "mlp":
        k = T.MLPKernel(C, heads=H, hidden=5, inputs=("dp", "dist2", "fourier", "prod", "fi", "fj"),
                        position_dim=1, fourier=2, learn_frequencies=True, product_rank=2, activation="tanh",
                        rng=1, dtype=dtype)
        if normalization == "sum":                   # keep Z = sum_j w_j s_ij away from 0
            k.b2.data[...] = 3.0
            k.W2.data[...] *= 0.1
    else:
        k = T.DotProductKernel(C, heads=H, head_dim=2, bias=True, position_bias="alibi" if kind == "alibi" else None,
                               rng=1, dtype=dtype)
        if normalization == "sum":                   # q . k > 0 on average, so Z stays away from 0
            k.b_q.data[...] = 1.5
            k.b_k.data[...] = 1.5
            if kind == "alibi":
                k.position_bias.slopes[...] *= 0.05
    return T.IntegralTransform(C, 2, k, embed_dim=2 * H, normalization=normalization, support=support,
                               window=window, value_bias=True, skip=True, rng=2, dtype=dtype)


def make_inputs(kind, dtype, B, N, M, cross, weights, mask, rng, sorted_positions=True):
    """Call arguments (arrays); positions are the integer grid + 3 for the dot kernels (ALiBi needs a
    grid), random 1-D points for the MLP kernel (sorted: causal/window supports are index bands)."""
    C = 3
    args = {"x": rng.standard_normal((B, N, C))}
    if kind == "mlp":
        pos = rng.uniform(-2, 2, (N, 1))
        args["positions"] = np.sort(pos, axis=0) if sorted_positions else pos
    else:
        args["positions"] = np.arange(N, dtype=F64)[:, None] + 3.0
    if cross:
        args["source"] = rng.standard_normal((B, M, C))
        if kind == "mlp":
            sp = rng.uniform(-2, 2, (M, 1))
            args["source_positions"] = np.sort(sp, axis=0) if sorted_positions else sp
        else:
            args["source_positions"] = np.arange(M, dtype=F64)[:, None] + 3.0
    M = M if cross else N
    if weights == "shared":
        args["weights"] = rng.uniform(0.5, 2.0, (B, M))
    elif weights == "per_head":
        args["weights"] = rng.uniform(0.5, 2.0, (B, 2, M))
    elif weights == "zeros":                          # some w_j = 0: excluded under softmax, grad 0 there
        w = rng.uniform(0.5, 2.0, (B, M))
        w[:, ::3] = 0.0
        args["weights"] = w
    if mask:
        keep = rng.uniform(size=(B, N, M)) < 0.7
        keep[:, N // 2] = False                       # an all-masked row
        args["mask"] = keep
    return {k: (v.astype(dtype) if v.dtype.kind == "f" else v) for k, v in args.items()}


def run(op, backend, args, cotangent):
    """y and every gradient (float inputs and named parameters) for one backend."""
    op.backend = backend
    op.zero_grad()
    leaves = {k: itn.tensor(v, requires_grad=True) if v.dtype.kind == "f" else v for k, v in args.items()}
    x = leaves.pop("x")
    y = op(x, **leaves)
    y.backward(cotangent)
    out = {"y": y.data, "x": x.grad.data}
    out.update({k: (t.grad.data if t.grad is not None else None) for k, t in leaves.items()
                if isinstance(t, itn.Tensor)})
    out.update({k: (p.grad.data if p.grad is not None else None) for k, p in op.named_parameters()})
    return out


def assert_parity(op, args, dtype, rng):
    y = op(args["x"], **{k: v for k, v in args.items() if k != "x"})
    cot = rng.standard_normal(y.shape).astype(dtype)
    dense, fused = run(op, "dense", args, cot), run(op, "numba", args, cot)
    assert dense.keys() == fused.keys()
    scale = max(np.abs(a).max() for a in dense.values() if a is not None and a.size)
    for key, a in dense.items():
        b = fused[key]
        if a is None:                                 # no gradient on either path (e.g. ALiBi positions)
            assert b is None, key
            continue
        assert b is not None and b.dtype == a.dtype == dtype and b.shape == a.shape, key
        # relative to the array, floored at 1e-3 of the largest value (b2 under softmax has exact grad 0)
        err = float(np.abs(a - b).max(initial=0)) / max(float(np.abs(a).max(initial=0)), 1e-3 * float(scale))
        assert err <= TOL[dtype], (key, err)
    return dense, fused


# supports and call options for each parity case: (support, window, cross, weights, mask)
CASES = [("full", None, False, None, False), ("causal", None, False, "shared", False),
         ("full", 4, True, "per_head", False), ("causal", 6, True, None, True),
         ("full", None, True, "zeros", True), ("strict_causal", None, False, "per_head", True)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("normalization", NORMS)
def test_parity_float64(kind, normalization):
    rng = np.random.default_rng(0)
    for support, window, cross, weights, mask in CASES:
        op = make_op(kind, normalization, F64, support, window)
        args = make_inputs(kind, F64, 2, 37, 70, cross, weights, mask, rng)
        assert_parity(op, args, F64, rng)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("normalization", NORMS)
def test_parity_float32(kind, normalization):
    rng = np.random.default_rng(1)
    for support, window, cross, weights, mask in CASES[1:5]:
        op = make_op(kind, normalization, F32, support, window)
        assert_parity(op, make_inputs(kind, F32, 2, 41, 19, cross, weights, mask, rng), F32, rng)


@given(kind=st.sampled_from(KINDS), normalization=st.sampled_from(NORMS), B=st.integers(1, 2),
       N=st.integers(1, 70), M=st.integers(1, 70), cross=st.booleans(),
       support=st.sampled_from(["full", "causal", "strict_causal"]), window=st.sampled_from([None, 0, 3]),
       weights=st.sampled_from([None, "shared", "per_head", "zeros"]), mask=st.booleans(),
       sorted_positions=st.booleans(), seed=st.integers(0, 2**16))
def test_parity_any_shape(kind, normalization, B, N, M, cross, support, window, weights, mask,
                          sorted_positions, seed):
    """Sizes that are not multiples of any tile (64 attention, 16 x 32 MLP), any support (unsorted
    positions give masks that are not index bands), any weights."""
    rng = np.random.default_rng(seed)
    op = make_op(kind, normalization, F64, support, window)
    args = make_inputs(kind, F64, B, N, M, cross, weights, mask, rng, sorted_positions)
    assert_parity(op, args, F64, rng)


def test_empty_rows_give_zeros_and_zero_gradients():
    rng = np.random.default_rng(3)
    for kind in KINDS:
        for normalization in NORMS:
            op = make_op(kind, normalization, F64)
            op.b = op.W_skip = None                   # y_i = W_O (integral)_i only
            args = make_inputs(kind, F64, 2, 9, 13, True, "shared", True, rng)
            args["mask"][1, 2:5] = False
            _, fused = assert_parity(op, args, F64, rng)
            empty = ~args["mask"].any(-1)
            assert empty.sum() >= 4
            assert np.all(fused["y"][empty] == 0) and np.all(fused["x"][empty] == 0)
            assert np.isfinite(np.concatenate([a.ravel() for a in fused.values() if a is not None])).all()


def test_band_of_against_brute_force():
    rng = np.random.default_rng(4)
    i, j = np.ogrid[:23, :31]
    bands = [np.ones((23, 31), bool), j <= i, j < i, np.abs(i - j) <= 3, (j <= i) & (i - j <= 5),
             np.zeros((23, 31), bool), rng.uniform(size=(23, 31)) < 0.5, (j <= i) & (rng.uniform(size=(23, 31)) < .8)]
    for m in bands:
        for mask in (m, np.stack([m, m & (rng.uniform(size=m.shape) < 0.9)])):
            causal, window, rest = FB.band_of(mask)
            band = np.ones(mask.shape[-2:], bool)
            if causal:
                band &= j <= i
            if window is not None:
                band &= np.abs(i - j) <= window
            assert not (mask & ~band).any()           # the band holds every kept pair
            if rest is None:
                assert (mask == band).all()
            else:
                assert rest is mask
    assert FB.band_of(j <= i)[:3:2] == (True, None)
    assert FB.band_of(np.abs(i - j) <= 3)[:2] == (False, 3)
    assert FB.band_of((j <= i) & (i - j <= 5))[:2] == (True, 5)
    assert FB.band_of(j < i)[0] and FB.band_of(j < i)[2] is not None


def fused_nodes(y):
    """Every node of y's graph, by op name."""
    return [node.prim.name for node in graph_nodes(y)]


@pytest.mark.parametrize("kind,name", [("dot", ATTENTION_OP), ("mlp", MLP_OP)])
def test_one_fused_node_and_create_graph_raises(kind, name):
    rng = np.random.default_rng(5)
    op = make_op(kind, "softmax", F64, "causal")
    args = make_inputs(kind, F64, 2, 20, 20, False, "shared", False, rng)
    op.backend = "numba"
    x = itn.tensor(args.pop("x"), requires_grad=True)
    y = op(x, **args)
    names = fused_nodes(y)
    assert names.count(name) == 1 and names.count(ATTENTION_OP) + names.count(MLP_OP) == 1
    node = next(n for n in graph_nodes(y) if n.prim.name == name)
    assert node.params["mask"] is None                 # causal support -> tile skipping, no mask
    if kind == "dot":                                  # the integer grid: the index band j <= i
        assert node.params["causal"] and node.params["ranges"] is None
    else:                                              # sorted random positions: per-row ranges
        lo, hi = node.params["ranges"]
        np.testing.assert_array_equal(lo, 0)
        np.testing.assert_array_equal(hi, np.arange(1, 21))
    assert node.residuals.shape == (2, 2, 20)          # the per-row statistic, kept by the node
    with pytest.raises(GraphError, match=name):
        y.sum().backward(create_graph=True)


def test_shared_backward_with_retain_graph_and_grad_api():
    """The raw backward runs once per upstream gradient and serves every input; a second backward
    (retain_graph) recomputes and accumulates; itn.grad sees the same numbers, with closed-over
    parameters requiring grad (first order, guarded against a second differentiation) or frozen."""
    rng = np.random.default_rng(6)
    for kind in ("dot", "mlp"):
        op = make_op(kind, "softmax", F64)
        args = make_inputs(kind, F64, 1, 11, 11, False, None, False, rng)
        op.backend = "numba"
        x = itn.tensor(args["x"], requires_grad=True)
        y = (op(x, positions=args["positions"]) ** 2).sum()
        y.backward(retain_graph=True)
        once = {k: p.grad.data.copy() for k, p in op.named_parameters()}
        gx = x.grad.data.copy()
        y.backward()
        for k, p in op.named_parameters():
            np.testing.assert_allclose(p.grad.data, 2 * once[k], rtol=1e-13, atol=1e-300)
        def f(x, op=op, positions=args["positions"]):
            return (op(x, positions=positions) ** 2).sum()
        # Closing over parameters that require grad: the gradient is first order and correct,
        # and differentiating it again raises (the fused node has no differentiable VJP).
        g = itn.grad(f)(args["x"])
        np.testing.assert_allclose(g.data, gx, rtol=1e-13)
        with pytest.raises(GraphError, match="cannot be differentiated again"):
            g.sum().backward()
        op.requires_grad_(False)
        np.testing.assert_allclose(itn.grad(f)(args["x"]).data, gx, rtol=1e-13)


def test_declined_calls():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 6, 3))
    t5 = T.DotProductKernel(3, heads=1, position_bias="t5", num_buckets=4, max_distance=4, rng=0, dtype=F64)
    lowrank = T.LowRankKernel(3, feature_dim=2, rng=0, dtype=F64)
    for kernel in (t5, lowrank, T.MLPKernel(3, activation="identity", rng=0, dtype=F64)):
        auto = T.IntegralTransform(3, 2, kernel, normalization="softmax", backend="auto", rng=0, dtype=F64)
        dense = T.IntegralTransform(3, 2, kernel, normalization="softmax", rng=0, dtype=F64)
        positions = np.arange(6.0)[:, None]
        np.testing.assert_array_equal(auto(x, positions=positions).data, dense(x, positions=positions).data)
        auto.backend = "numba"
        with pytest.raises(ConfigError, match="cannot run this call"):
            auto(x, positions=positions)
    # ALiBi on positions that are not an index grid: 'auto' -> dense, 'numba' -> ConfigError
    op = make_op("alibi", "softmax", F64)
    odd = np.array([0.0, 2, 3, 4, 5, 6])[:, None]
    ref = op(x, positions=odd).data
    op.backend = "auto"
    np.testing.assert_array_equal(op(np.tile(x, (1, 10, 1)), positions=np.arange(60.0)[:, None] * 2).data,
                                  make_op("alibi", "softmax", F64)(np.tile(x, (1, 10, 1)),
                                                                   positions=np.arange(60.0)[:, None] * 2).data)
    np.testing.assert_array_equal(op(x, positions=odd).data, ref)
    op.backend = "numba"
    with pytest.raises(ConfigError, match="ALiBi on positions"):
        op(x, positions=odd)


def test_auto_fuses_only_when_it_pays():
    rng = np.random.default_rng(8)
    for kind, name in (("dot", ATTENTION_OP), ("mlp", MLP_OP)):
        n_min = int(np.ceil(np.sqrt(FB.MIN_PAIRS["dot" if kind == "dot" else "mlp", 8])))
        op = make_op(kind, "softmax", F64)
        op.backend = "auto"
        for n, fused in ((8, False), (n_min, True)):
            args = make_inputs(kind, F64, 1, n, n, False, None, False, rng)
            x = itn.tensor(args.pop("x"), requires_grad=True)
            assert (name in fused_nodes(op(x, **args))) is fused, (kind, n)


def test_numba_unavailable_raises_clearly(monkeypatch):
    """With numba not importable, backend='numba' raises ConfigError naming the cause; 'auto' and the
    SDPA entry point's 'auto' fall back to dense."""
    from itnet_np.transform.sdpa import scaled_dot_product_attention
    monkeypatch.setitem(sys.modules, "numba", None)          # `import numba` raises ImportError
    for name in [m for m in sys.modules if m.startswith("itnet_np.transform.fused")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(planner, "_BACKENDS", {"dense": planner.dense})
    monkeypatch.setattr(planner, "_load_errors", {})
    kernel = T.DotProductKernel(4, heads=2, rng=0, dtype=F64)
    with pytest.raises(ConfigError, match=r"backend='numba' needs numba.*import of numba.*pip install numba"):
        T.IntegralTransform(4, 4, kernel, backend="numba", dtype=F64)
    op = T.IntegralTransform(4, 4, kernel, normalization="softmax", backend="auto", rng=0, dtype=F64)
    x = np.random.default_rng(0).standard_normal((1, 80, 4))
    assert np.isfinite(op(x).data).all()
    q = np.random.default_rng(1).standard_normal((1, 1, 80, 4))
    assert scaled_dot_product_attention(q, q, q).shape == (1, 1, 80, 4)
    with pytest.raises(ConfigError, match="needs numba"):
        scaled_dot_product_attention(q, q, q, backend="numba")


# ----- every fused activation, and integer grids where the pre-activations sit on the kinks -------

def integer_mlp_op(act, normalization, H=2, C=3, rng=None):
    """An MLPKernel on (dp, dist2) with small integer W1 and b1: on integer positions every
    pre-activation is an exact integer, often 0 (relu's kink; the hat units of proofs/conv.py)."""
    k = T.MLPKernel(C, heads=H, hidden=6, inputs=("dp", "dist2"), activation=act, rng=1, dtype=F64)
    k.W1.data[...] = rng.integers(-2, 3, k.W1.shape)
    k.W1.data[:3] = [[1, 0], [-1, 0], [2, 0]]         # linear in dp: pre = 0 at dp = -b / w
    k.b1.data[...] = rng.integers(-2, 3, k.b1.shape) * 2
    if normalization == "sum":                        # keep Z = sum_j w_j s_ij away from 0
        k.b2.data[...] = 3.0
        k.W2.data[...] *= 0.1
    return T.IntegralTransform(C, 2, k, embed_dim=2 * H, normalization=normalization, value_bias=True,
                               skip=True, rng=2, dtype=F64)


@pytest.mark.parametrize("act", sorted(FUSED_ACTIVATIONS))
@pytest.mark.parametrize("normalization", NORMS)
def test_parity_every_fused_activation_on_integer_grids(act, normalization):
    rng = np.random.default_rng(10)
    for support, window, cross, weights, mask in CASES:
        for op in (integer_mlp_op(act, normalization, rng=rng), make_op("mlp", normalization, F64, support, window)):
            op.kernel.activation_name, op.kernel.activation = get_activation(act)
            op.support = T.Support(support, window)
            N, M = 37, 21
            args = make_inputs("mlp", F64, 2, N, M, cross, weights, mask, rng)
            args["positions"] = np.arange(N, dtype=F64)[:, None]
            if cross:
                args["source_positions"] = np.arange(M, dtype=F64)[:, None] + 5.0
            if op.kernel.inputs == ("dp", "dist2"):
                pre = op.kernel.preactivation(op.kernel.project(*points(op, args))).data
                assert np.all(pre == np.rint(pre)) and (pre == 0).any()     # on the kinks, exactly
            assert_parity(op, args, F64, rng)


def points(op, args):
    """Query and source Points of a call, as the operator builds them."""
    x = args["x"]
    pq = args["positions"][None]
    query = T.Points(itn.tensor(x), pq)
    if "source" not in args:
        return query, query
    return query, T.Points(itn.tensor(args["source"]), args["source_positions"][None])


@pytest.mark.parametrize("backend", ["dense", "numba"])
def test_relu_kernel_gradient_on_integer_positions_against_an_explicit_oracle(backend):
    """The issue's case: MLPKernel(activation='relu') on integer positions, where dense (relu through
    ops.maximum: gradient 1/2 at 0) and numba (0) disagreed in dW1. Oracle: NumPy loops over the
    pairs from the formula, relu'(0) = 0 (torch's convention), normalization 'none'."""
    rng = np.random.default_rng(11)
    k = T.MLPKernel(1, heads=1, hidden=3, inputs=("dp",), activation="relu", rng=0, dtype=F64)
    k.W1.data[...] = [[1.0], [1.0], [1.0]]
    k.b1.data[...] = [1.0, 0.0, -1.0]                 # hat units: pre = dp + 1, dp, dp - 1
    k.W2.data[...] = [[1.0, -2.0, 1.0]]
    op = T.IntegralTransform(1, 1, k, bias=False, backend=backend, rng=0, dtype=F64)
    N = 70                                            # past the fused tiles (16 x 32)
    x = rng.standard_normal((1, N, 1))
    g = rng.standard_normal((1, N, 1))
    y = op(x)
    y.backward(g)
    p = np.arange(N, dtype=F64)
    dp = p[:, None] - p[None, :]                      # z_ij = p_i - p_j
    pre = dp[..., None] * k.W1.data[:, 0] + k.b1.data  # (N, N, 3)
    act = np.maximum(pre, 0)
    v = x[0] @ op.W_V.data.T                          # (N, 1)
    s = act @ k.W2.data[0] + k.b2.data[0]             # (N, N)
    np.testing.assert_allclose(y.data[0], (s @ v) @ op.W_O.data.T, rtol=1e-12, atol=1e-12)
    G = (g[0] @ op.W_O.data) @ v.T                    # dL/ds_ij
    dpre = G[..., None] * k.W2.data[0] * (pre > 0)    # relu'(0) = 0
    np.testing.assert_allclose(k.W1.grad.data[:, 0], np.einsum("ijk,ij->k", dpre, dp), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(k.b1.grad.data, dpre.sum((0, 1)), rtol=1e-12, atol=1e-12)
    assert (pre == 0).sum() > N                       # the kinks were hit


# the support descriptor: cases that are index bands (read off the plan) and cases that fall back
# (strictly causal, a source grid shifted against the queries, off-grid shifts)
PLAN_CASES = [  # (support, window, radius, query shift, source shift)
    ("causal", None, None, 3.0, 3.0), ("full", None, 2.5, 0.0, 0.0), ("causal", 3, 4.0, -2.0, -2.0),
    ("causal", None, None, 0.0, -1.0), ("full", 2, None, 1.0, 0.0), ("strict_causal", 2, None, 0.0, 0.0),
    ("causal", 1, None, 0.5, 0.5)]


@pytest.mark.parametrize("case", PLAN_CASES)
@pytest.mark.parametrize("kind", ["dot", "mlp"])
def test_parity_support_descriptor(case, kind):
    support, window, radius, cq, cs = case
    rng = np.random.default_rng(7)
    op = make_op(kind, "softmax", F64, support, window)
    op.support = T.Support(support, window, radius)
    N, M = 37, 29
    args = {"x": rng.standard_normal((2, N, 3)), "source": rng.standard_normal((2, M, 3)),
            "positions": np.arange(N, dtype=F64)[:, None] + cq,
            "source_positions": np.arange(M, dtype=F64)[:, None] + cs}
    assert_parity(op, args, F64, rng)


@pytest.mark.parametrize("kind", ["dot", "mlp"])
def test_band_supports_never_form_the_dense_mask(kind, monkeypatch):
    """1-D band supports reach the raw kernels from the descriptor: causal, window and radius on the
    index grid as a band, strictly causal and sorted off-grid positions as per-row ranges, so
    SupportPlan.dense_mask is never called on the fused path."""
    from itnet_np.transform.support import SupportPlan

    rng = np.random.default_rng(8)
    grid = np.arange(20.0)[:, None]
    sorted_points = np.sort(rng.uniform(0, 20, (20, 1)), axis=0)
    cases = [("causal", None, None, grid), ("full", 3, None, grid), ("causal", None, 2.5, grid),
             ("strict_causal", None, None, grid), ("causal", 4, None, grid + 0.5)]
    if kind == "mlp":                                  # (ALiBi-free dot products take any positions too)
        cases += [("causal", None, None, sorted_points), ("strict_causal", 3, None, sorted_points)]
    for support, window, radius, positions in cases:
        op = make_op(kind, "softmax", F64, support, window)
        op.support, op.backend = T.Support(support, window, radius), "numba"
        x = itn.tensor(rng.standard_normal((1, 20, 3)), requires_grad=True)
        expected = op(x, positions=positions).data
        op.backend = "dense"
        np.testing.assert_allclose(op(x, positions=positions).data, expected, rtol=1e-12, atol=1e-12)

        def refuse(self):
            raise AssertionError("the fused path asked for a dense mask")
        with monkeypatch.context() as m:
            m.setattr(SupportPlan, "dense_mask", refuse)
            op.backend = "numba"
            y = op(x, positions=positions)
            y.sum().backward()
        np.testing.assert_array_equal(y.data, expected)
