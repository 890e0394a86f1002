"""scaled_dot_product_attention: both backends against proofs.reference.sdpa_ref (torch's documented
pseudo-code in NumPy), the fused path against the dense one for every gradient, finite differences
(gradcheck) for both, and torch itself when it is installed.

Covered: bool masks (True = attend) of every broadcast shape, float masks (with -inf), is_causal,
scale, cross attention with N != M not multiples of the 64-row tile, float32 and float64, logits of
+-1e4, all-masked rows (zeros, zero gradients, never NaN), create_graph through the fused node, the
'auto' choice and the error messages.
"""
import numpy as np
import pytest
from _graph_helpers import graph_nodes
from hypothesis import given
from hypothesis import strategies as st
from itnet_np.proofs.reference.attention import sdpa_ref

import itnet_np as itn
from itnet_np import transform as T
from itnet_np.errors import ConfigError, DTypeError, GraphError, ShapeError
from itnet_np.transform import sdpa as S
from itnet_np.transform.fused.engine_ops import ATTENTION_OP

sdpa = S.scaled_dot_product_attention
F64, F32 = np.float64, np.float32
TOL = {F64: 1e-10, F32: 1e-4}
FLOOR = {F64: 1e-3, F32: 1e-1}


def qkv(rng, B, H, N, M, d, dv, dtype=F64, scale=1.0):
    return (scale * rng.standard_normal((B, H, N, d)).astype(dtype),
            rng.standard_normal((B, H, M, d)).astype(dtype), rng.standard_normal((B, H, M, dv)).astype(dtype))


def rel(a, b, floor=1e-300):
    """max |a - b| relative to max |b|, floored (an exactly-zero gradient, e.g. dq when M = 1, is
    compared against the scale of the other gradients instead). Python floats throughout: under
    NumPy 2, max(float32(0), 1e-300) is float32(0) (1e-300 rounds to 0 in float32), and 0/0 is NaN."""
    a, b = np.asarray(a, F64), np.asarray(b, F64)
    return float(np.abs(a - b).max(initial=0)) / max(float(np.abs(b).max(initial=0)), float(floor))


def grads(q, k, v, cot, backend, mask=None, **kw):
    """out and (dq, dk, dv[, dmask]) for one backend; a float mask is differentiated too."""
    ts = [itn.tensor(a, requires_grad=True) for a in (q, k, v)]
    m = mask
    if mask is not None and mask.dtype.kind == "f":
        m = itn.tensor(mask, requires_grad=True)
        ts.append(m)
    out = sdpa(*ts[:3], attn_mask=m, backend=backend, **kw)
    assert isinstance(out, itn.Tensor)
    out.backward(cot)
    return out.data, [t.grad.data for t in ts]


def assert_backends_agree(q, k, v, dtype, rng, mask=None, **kw):
    ref = sdpa_ref(q, k, v, attn_mask=mask, **kw)
    cot = rng.standard_normal(ref.shape).astype(dtype)
    dense, fused = grads(q, k, v, cot, "dense", mask, **kw), grads(q, k, v, cot, "numba", mask, **kw)
    for out, _ in (dense, fused):
        assert out.dtype == dtype
        assert rel(out, ref) <= TOL[dtype]
    # an exactly-zero gradient (dq when M = 1) is compared against the other gradients' scale; in
    # float32 the fused rounding there is ~eps |dout| |v| |k|, so the floor is 10% of that scale
    floor = max(FLOOR[dtype] * max(float(np.abs(g).max(initial=0)) for g in dense[1]), 1e-300)
    for a, b in zip(dense[1], fused[1]):
        assert a.dtype == b.dtype == dtype and rel(b, a, floor) <= TOL[dtype]
    return dense, fused


def random_mask(rng, shape, kind):
    if kind == "bool":
        m = rng.uniform(size=shape) < 0.6
        return m
    if kind == "float":
        m = rng.standard_normal(shape)
        m[rng.uniform(size=shape) < 0.2] = -np.inf
        return m
    return None


@given(B=st.integers(1, 2), H=st.integers(1, 3), N=st.integers(1, 70), M=st.integers(1, 70),
       d=st.integers(1, 5), dv=st.integers(1, 4), mask=st.sampled_from([None, "bool", "float", "causal"]),
       mask_shape=st.sampled_from(["NM", "B1NM", "1HNM", "M", "B11M"]), scale=st.sampled_from([None, 0.3]),
       dtype=st.sampled_from([F64, F32]), seed=st.integers(0, 2**16))
def test_both_backends_match_the_reference(B, H, N, M, d, dv, mask, mask_shape, scale, dtype, seed):
    rng = np.random.default_rng(seed)
    q, k, v = qkv(rng, B, H, N, M, d, dv, dtype)
    shape = {"NM": (N, M), "B1NM": (B, 1, N, M), "1HNM": (1, H, N, M), "M": (M,), "B11M": (B, 1, 1, M)}[mask_shape]
    m = random_mask(rng, shape, mask)
    if m is not None:
        m = m.astype(dtype) if m.dtype.kind == "f" else m
    assert_backends_agree(q, k, v, dtype, rng, m, is_causal=mask == "causal", scale=scale)


@pytest.mark.parametrize("dtype", [F64, F32])
def test_huge_logits_stay_finite_and_correct(dtype):
    """Logits of order +-1e4 (scale 1, |q.k| ~ 1e4): the online softmax subtracts the running max."""
    rng = np.random.default_rng(1)
    q, k, v = qkv(rng, 1, 2, 67, 70, 4, 3, dtype, scale=2500.0)
    s = np.einsum("bhnd,bhmd->bhnm", q.astype(F64), k.astype(F64))
    assert np.abs(s).max() > 1e4
    for mask in (None, np.tri(67, 70, dtype=bool)):
        _, fused = assert_backends_agree(q, k, v, dtype, rng, mask, scale=1.0)
        assert all(np.isfinite(g).all() for g in fused[1])


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_all_masked_rows_give_zeros_and_zero_gradients(kind):
    """Documented convention (torch returns NaN here): an empty row's output and its dq are 0."""
    rng = np.random.default_rng(2)
    q, k, v = qkv(rng, 2, 2, 9, 13, 3, 2)
    keep = rng.uniform(size=(2, 2, 9, 13)) < 0.7
    keep[0, 1, 4] = keep[1, 0, :3] = False
    mask = keep if kind == "bool" else np.where(keep, rng.standard_normal(keep.shape), -np.inf)
    dense, fused = assert_backends_agree(q, k, v, F64, rng, mask)
    empty = ~keep.any(-1)
    for out, (dq, *_rest) in (dense, fused):
        assert np.all(out[empty] == 0) and np.all(dq[empty] == 0)
        assert all(np.isfinite(g).all() for g in [out, dq, *_rest])
    fully = np.zeros((2, 2, 9, 13), bool)             # every row empty: zeros everywhere
    for backend in ("dense", "numba"):
        assert not sdpa(q, k, v, attn_mask=fully, backend=backend).any()


@pytest.mark.parametrize("backend", ["dense", "numba"])
def test_gradcheck_finite_differences(backend):
    rng = np.random.default_rng(3)
    q, k, v = qkv(rng, 1, 2, 5, 7, 3, 2)
    fm = rng.standard_normal((5, 7))
    keep = rng.uniform(size=(1, 2, 5, 7)) < 0.7
    assert itn.gradcheck(lambda q, k, v, fm: sdpa(q, k, v, attn_mask=fm, backend=backend), [q, k, v, fm])
    assert itn.gradcheck(lambda q, k, v: sdpa(q, k, v, attn_mask=keep, backend=backend), [q, k, v])
    assert itn.gradcheck(lambda q, k, v: sdpa(q, k, v, is_causal=True, scale=0.7, backend=backend), [q, k, v])


def test_create_graph_dense_works_fused_raises():
    rng = np.random.default_rng(4)
    q, k, v = qkv(rng, 1, 1, 4, 6, 2, 2)
    assert itn.gradgradcheck(lambda q, k, v: sdpa(q, k, v, is_causal=True, backend="dense"), [q, k, v])
    qt = itn.tensor(q, requires_grad=True)
    out = sdpa(qt, k, v, backend="numba")
    with pytest.raises(GraphError, match=ATTENTION_OP):
        out.sum().backward(create_graph=True)


def test_against_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    q, k, v = qkv(rng, 2, 3, 37, 71, 4, 5)
    keep = rng.uniform(size=(2, 1, 37, 71)) < 0.8
    keep[..., 0] = True                               # no empty rows: torch's convention differs there
    cot = rng.standard_normal((2, 3, 37, 5))
    for kw in ({"attn_mask": keep}, {"is_causal": True}, {"scale": 0.4}):
        tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
        tkw = {key: torch.tensor(val) if isinstance(val, np.ndarray) else val for key, val in kw.items()}
        to = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, **tkw)
        to.backward(torch.tensor(cot))
        _, ours = grads(q, k, v, cot, "numba", kw.pop("attn_mask", None), **kw)
        for g, t in zip(ours, (tq, tk, tv)):
            assert rel(g, t.grad.numpy()) <= 1e-10


def test_auto_choice_return_types_and_tile_skipping():
    rng = np.random.default_rng(6)
    from itnet_np.transform.fused.numba_plans import MIN_PAIRS
    n = int(np.ceil(np.sqrt(MIN_PAIRS["dot", 8])))
    for size, fused in ((8, False), (n, True)):
        q, k, v = (itn.tensor(a, requires_grad=True) for a in qkv(rng, 1, 1, size, size, 2, 2))
        out = sdpa(q, k, v)
        assert (out.node.prim.name == ATTENTION_OP) is fused
    raw = qkv(rng, 1, 1, 3, 3, 2, 2)
    assert type(sdpa(*raw, backend="numba")) is np.ndarray and type(sdpa(*raw)) is np.ndarray
    q, k, v = (itn.tensor(a, requires_grad=True) for a in qkv(rng, 1, 1, 20, 20, 2, 2))
    node = sdpa(q, k, v, attn_mask=np.tri(20, dtype=bool), backend="numba").node
    assert node.params["causal"] and node.params["mask"] is None     # a tril mask becomes causal=True


def test_errors():
    rng = np.random.default_rng(7)
    q, k, v = qkv(rng, 1, 2, 3, 4, 2, 2)
    cases = [
        (ConfigError, "either attn_mask or is_causal", lambda: sdpa(q, k, v, np.ones((3, 4), bool), True)),
        (ShapeError, r"q must be a 4-D array", lambda: sdpa(q[0], k, v)),
        (ShapeError, r"expected q \(B, H, N, d\)", lambda: sdpa(q, k[..., :1], v)),
        (ShapeError, r"attn_mask must broadcast to \(1, 2, 3, 4\)", lambda: sdpa(q, k, v, np.ones((4, 3), bool))),
        (DTypeError, "float attn_mask must be float64", lambda: sdpa(q, k, v, np.ones((3, 4), F32))),
        (DTypeError, "share one dtype", lambda: sdpa(q, k, v.astype(F32))),
        (DTypeError, r"q must be float32 or float64 \(float16 only as CuPy arrays on a GPU",
         lambda: sdpa(q.astype(np.float16), k.astype(np.float16), v.astype(np.float16))),
        (ConfigError, "'nope' is not available", lambda: sdpa(q, k, v, backend="nope")),
        (ConfigError, "backend='cuda' cannot run this call: the data are NumPy arrays",
         lambda: sdpa(q, k, v, backend="cuda")),
    ]
    for err, pattern, call in cases:
        with pytest.raises(err, match=pattern):
            call()


# ------------------------------------------------------------------ the planner decides (issue 8)

class _NotNumPy(np.ndarray):
    """An ndarray subclass: not exactly np.ndarray, so the CPU kernels' precondition fails (a stand-in
    for CuPy arrays, which this machine lacks)."""


def test_auto_follows_the_planners_crossover():
    """'auto' asks planner.plan: numba from N M >= MIN_PAIRS (per itemsize) on, dense below; explain
    says so in words, and backend='dense' stays dense at any size."""
    from itnet_np.transform.fused.numba_plans import MIN_PAIRS
    rng = np.random.default_rng(8)
    for dtype in (F64, F32):
        need = MIN_PAIRS["dot", np.dtype(dtype).itemsize]
        n = int(np.ceil(np.sqrt(need)))
        for N, M, fused in ((n, n, True), (n - 1, n - 1, (n - 1) ** 2 >= need), (need, 1, True),
                            (need - 1, 1, False), (4, 4, False)):
            q, k, v = qkv(rng, 1, 2, N, M, 2, 2, dtype)
            call = S.attention_call(q, k, v, is_causal=True)
            assert T.planner.plan("auto", call).backend == ("numba" if fused else "dense"), (dtype, N, M)
            assert T.planner.plan("dense", call).backend == "dense"
            text = S.explain(q, k, v, is_causal=True)
            assert text.startswith(f"backend='auto' runs {'numba' if fused else 'dense'!r}")
            if not fused:
                assert f"N M = {N * M} pairs < {need}" in text
            out = sdpa(itn.tensor(q, requires_grad=True), k, v, is_causal=True)
            assert (out.node.prim.name == ATTENTION_OP) is fused


def test_explicit_numba_declining_raises_with_the_reason():
    """A call numba declines (arrays that are not plain NumPy arrays): backend='numba' raises
    ConfigError with the decline reason, 'auto' falls back to dense, explain lists the reason."""
    rng = np.random.default_rng(9)
    q, k, v = qkv(rng, 1, 2, 60, 60, 3, 2)
    odd = v.view(_NotNumPy)
    with pytest.raises(ConfigError, match=r"backend='numba' cannot run this call: arrays that are not NumPy"):
        sdpa(q, k, odd, is_causal=True, backend="numba")
    assert T.planner.plan("auto", S.attention_call(q, k, odd, is_causal=True)).backend == "dense"
    text = S.explain(q, k, odd, is_causal=True, backend="numba")
    assert text.startswith("backend='numba' raises ConfigError")
    assert "numba: declines: arrays that are not NumPy arrays" in text
    ref = sdpa_ref(q, k, v, is_causal=True)
    assert rel(np.asarray(sdpa(q, k, odd, is_causal=True)), ref) <= 1e-10


def test_backends_receive_the_call_record():
    """SDPA hands every backend the operator's TransformCall: a parameter-free DotProductKernel with
    the given scale, the support as a descriptor (is_causal -> the causal index band, no dense mask;
    a bool mask as the explicit mask; a float mask as the score bias with its -inf entries as the
    mask), values v and softmax. A registered spy backend sees it and evaluates densely."""
    rng = np.random.default_rng(10)
    q, k, v = qkv(rng, 2, 3, 5, 7, 4, 2)
    seen = []

    def spy(call):
        seen.append(call)
        return T.planner.dense(call)
    T.register_backend("test-sdpa-spy", spy)
    try:
        keep = rng.uniform(size=(2, 1, 5, 7)) < 0.7
        fmask = np.where(rng.uniform(size=(3, 5, 7)) < 0.2, -np.inf, rng.standard_normal((3, 5, 7)))
        for kw in ({"is_causal": True, "scale": 0.3}, {"attn_mask": keep}, {"attn_mask": fmask}):
            out = sdpa(q, k, v, backend="test-sdpa-spy", **kw)
            assert rel(out, sdpa_ref(q, k, v, **kw)) <= 1e-10
    finally:
        T.planner._BACKENDS.pop("test-sdpa-spy")
    causal, masked, biased = seen
    assert isinstance(causal.kernel, T.DotProductKernel) and not list(causal.kernel.parameters())
    assert causal.kernel.scale == 0.3 and masked.kernel.scale == 0.5        # 1 / sqrt(d), d = 4
    assert causal.normalization == "softmax" and causal.weights is None and causal.values is v
    assert causal.support.kind == "causal" and causal.support.index_band() == (True, None)
    assert causal.support.mask is None and causal.score_bias is None
    assert masked.support.kind == "full" and np.array_equal(masked.support.mask, keep)
    assert masked.score_bias is None
    assert np.array_equal(biased.support.mask, np.isfinite(fmask)[None])
    np.testing.assert_array_equal(biased.score_bias, np.where(np.isfinite(fmask), fmask, 0.0)[None])


@pytest.mark.parametrize("dtype", [F64, F32])
def test_operator_attention_fuses_score_bias_and_per_head_masks(dtype):
    """What SDPA's float and per-head masks need, the operator's DotProductKernel gets too: numba now
    accepts a score_bias and a per-head mask for attention (other kernels still decline them), equal
    to the dense reference in value and in every gradient (the bias's included)."""
    rng = np.random.default_rng(11)
    B, N, C, H = 2, 70, 4, 2
    x = rng.standard_normal((B, N, C)).astype(dtype)
    bias = (0.5 * rng.standard_normal((1, H, N, N))).astype(dtype)
    bias[..., 3, :5] = -np.inf
    per_head = rng.uniform(size=(B, H, N, N)) < 0.8
    cot = rng.standard_normal((B, N, 4)).astype(dtype)
    results = []
    for backend in ("dense", "numba"):
        op = T.IntegralTransform(C, 4, T.DotProductKernel(C, heads=H, rng=0, dtype=dtype),
                                 normalization="softmax", support="causal", backend=backend, rng=0, dtype=dtype)
        xt, bt = itn.tensor(x, requires_grad=True), itn.tensor(bias, requires_grad=True)
        out = op(xt, mask=per_head, score_bias=bt)
        assert (ATTENTION_OP in [n.prim.name for n in graph_nodes(out)]) is (backend == "numba")
        out.backward(cot)
        results.append([out.data, xt.grad.data, bt.grad.data, op.kernel.W_q.grad.data])
    for a, b in zip(*results):
        assert a.dtype == b.dtype == dtype and rel(b, a) <= TOL[dtype]
    mlp = T.IntegralTransform(C, 4, T.MLPKernel(C, heads=H, hidden=4, activation="tanh", rng=0, dtype=dtype),
                              normalization="softmax", backend="numba", rng=0, dtype=dtype)
    with pytest.raises(ConfigError, match="a score_bias"):
        mlp(x, score_bias=bias)
    with pytest.raises(ConfigError, match="a per-head mask"):
        mlp(x, mask=per_head)

