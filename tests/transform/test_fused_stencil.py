"""Banded StencilKernel backend (fused/stencil_plan.py) against IntegralTransform(backend='dense').

Forward and gradients (features, source, weights, the kernel's table, W_V / W_O / b) for conv-like
configurations: stride, dilation and padding through query anchors q_i = s i - P, 2-D grids,
grouped heads, cross and self mode, causal / window / explicit masks (with empty rows), 'none' and
'sum'; float64 (1e-10 relative) and float32 (1e-4). The dense path (indicator einsum, transform_matrix,
matmul) is the independent reference. Also: tap indices against a brute-force search, gradcheck of
the engine op, declined calls, and proofs.conv's stencil layer run on this backend.
"""
import numpy as np
import pytest

import itnet_np as itn
from itnet_np.errors import ConfigError, GraphError
from itnet_np.transform import (
    IntegralTransform,
    StencilKernel,
    conv_offsets,
    grid_positions,
    planner,
    register_backend,
)
from itnet_np.transform.fused.stencil_plan import fused_stencil, plan_stencil, stencil_indices

F64, F32 = np.float64, np.float32
TOL = {F64: 1e-10, F32: 1e-4}
NAME = "stencil-test"


@pytest.fixture(autouse=True, scope="module")
def _registered():
    """The backend exists only while this module runs ('auto' elsewhere must not see it)."""
    register_backend(NAME, lambda call: plan_stencil(call, NAME))
    yield
    planner._BACKENDS.pop(NAME, None)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


# Conv-like cases: (kernel_size, dilation, stride, padding, source spatial shape, heads or None)
CASES = {
    "1d_plain": ((3,), 1, 1, 0, (12,), None),
    "1d_stride_dil_pad": ((3,), 2, 2, 2, (13,), None),
    "1d_mixed_heads": ((4,), 1, 3, 1, (11,), 3),
    "2d": ((3, 2), (1, 2), (2, 1), (1, 1), (5, 6), None),
}


def _case(name, dtype, support="full", window=None, normalization="none", heads_dim=2, mode="cross"):
    ks, dil, stride, pad, spatial, heads = CASES[name]
    offsets = conv_offsets(ks, dil)
    kern = StencilKernel(offsets, heads=heads, rng=4, dtype=dtype)
    if normalization == "sum":                       # keep the row sums away from 0
        kern.table.data[...] = np.abs(kern.table.data) + 0.5
    H = kern.heads
    C = 3
    t = IntegralTransform(C, 4, kern, query_features=C if mode == "self" else 2, embed_dim=H * heads_dim,
                          normalization=normalization, support=support, window=window, skip=True, rng=5,
                          dtype=dtype)
    rng = np.random.default_rng(6)
    D = len(spatial)
    src_pos = grid_positions(spatial, dtype=dtype)
    M = src_pos.shape[0]
    if mode == "self":
        return t, {"x": rng.normal(size=(2, M, C)).astype(dtype)}, M
    st = np.broadcast_to(np.asarray(stride), (D,))
    pd = np.broadcast_to(np.asarray(pad), (D,))
    out = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, p, d, k, s in
                zip(spatial, pd, np.broadcast_to(np.asarray(dil), (D,)), ks, st))
    anchors = grid_positions(out, spacing=st, origin=-pd, dtype=dtype)
    N = anchors.shape[0]
    return t, {"x": rng.normal(size=(2, N, 2)).astype(dtype), "positions": anchors,
               "source": rng.normal(size=(2, M, C)).astype(dtype), "source_positions": src_pos}, M


def _run(t, backend, inputs, weights=None, mask=None):
    """(y, grads of every Tensor input and parameter) for a fixed random cotangent."""
    t.backend = backend
    t.zero_grad()
    tens = {k: itn.Tensor(v, requires_grad=True) for k, v in inputs.items() if k in ("x", "source")}
    args = dict(inputs, **tens)
    w = None if weights is None else itn.Tensor(weights, requires_grad=True)
    y = t(**args, weights=w, mask=mask)
    cot = np.random.default_rng(7).normal(size=y.shape).astype(y.dtype)
    (y * cot).sum().backward()
    grads = {k: v.grad.data for k, v in tens.items()}
    if w is not None:
        grads["weights"] = w.grad.data
    for name, p in t.named_parameters():
        grads[name] = None if p.grad is None else p.grad.data
    return y.data, grads


def _compare(t, inputs, dtype, weights=None, mask=None):
    y0, g0 = _run(t, "dense", inputs, weights, mask)
    y1, g1 = _run(t, NAME, inputs, weights, mask)
    assert y1.dtype == dtype
    assert _rel(y1, y0) <= TOL[dtype]
    assert set(g0) == set(g1) and "kernel.table" in g0
    for k in g0:
        assert (g0[k] is None) == (g1[k] is None), k
        if g0[k] is not None:
            assert g1[k].dtype == dtype and _rel(g1[k], g0[k]) <= TOL[dtype], k


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("name", sorted(CASES))
def test_conv_like_parity(name, dtype):
    t, inputs, _ = _case(name, dtype)
    _compare(t, inputs, dtype)


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("wshape", ["M", "BM", "BHM"])
@pytest.mark.parametrize("normalization", ["none", "sum"])
def test_weights_and_normalization(normalization, wshape, dtype):
    t, inputs, M = _case("1d_stride_dil_pad", dtype, normalization=normalization)
    rng = np.random.default_rng(8)
    shape = {"M": (M,), "BM": (2, M), "BHM": (2, t.heads, M)}[wshape]
    weights = rng.uniform(0.5, 1.5, size=shape).astype(dtype)
    _compare(t, inputs, dtype, weights=weights)


@pytest.mark.parametrize("dtype", [F64, F32])
@pytest.mark.parametrize("support,window", [("causal", None), ("strict_causal", None), ("full", 2)])
@pytest.mark.parametrize("normalization", ["none", "sum"])
def test_self_mode_supports(normalization, support, window, dtype):
    name = "1d_plain"
    t, inputs, _ = _case(name, dtype, support=support, window=window, normalization=normalization,
                         mode="self")
    t.kernel.offsets[...] = np.array([[-2], [-1], [1]], dtype)     # taps on both sides of i
    _compare(t, inputs, dtype)


@pytest.mark.parametrize("dtype", [F64, F32])
def test_explicit_mask_with_empty_rows(dtype):
    t, inputs, M = _case("2d", dtype)
    N = inputs["x"].shape[1]
    mask = np.random.default_rng(9).random((2, N, M)) < 0.6
    mask[:, 0] = False                                              # an empty row
    _compare(t, inputs, dtype, weights=np.linspace(0.5, 2, M).astype(dtype), mask=mask)


def test_indices_match_brute_force():
    rng = np.random.default_rng(10)
    src = rng.permutation(np.stack(np.meshgrid(np.arange(4), np.arange(5), indexing="ij"), -1).reshape(-1, 2))
    src = (src * [2, 1] + [3, -1]).astype(F64)[None]                 # shuffled, spaced, shifted grid
    qry = rng.integers(-3, 10, size=(2, 7, 2)).astype(F64)
    off = np.array([[0, 0], [2, -1], [-2, 3], [4, 4]])
    mask = rng.random((1, 7, src.shape[1])) < 0.7
    idx = stencil_indices(qry, src, off, mask)
    assert idx.shape == (2, 7, 4)
    for b in range(2):
        for i in range(7):
            for a in range(4):
                hits = [j for j in range(src.shape[1]) if np.all(src[0, j] - qry[b, i] == off[a])
                        and mask[0, i, j]]
                assert idx[b, i, a] == (hits[0] if hits else -1)
    assert stencil_indices(qry + 0.5, src, off) is None             # not integers
    assert stencil_indices(qry, np.concatenate([src, src[:, :1]], 1), off) is None   # repeated source


def test_gradcheck_engine_op():
    rng = np.random.default_rng(11)
    idx = np.array([[[0, 2], [-1, 3], [1, 1]]])                     # (1, N=3, T=2), a repeated source
    table, w, v = rng.normal(size=(2, 2)), rng.uniform(0.5, 1, (2, 1, 4)), rng.normal(size=(2, 2, 4, 3))
    assert itn.gradcheck(lambda a, b, c: fused_stencil(a, b, c, idx), [table, w, v])
    # the op is raw Numba code: a second-order graph through it is refused
    ts = [itn.Tensor(a, requires_grad=True) for a in (table, w, v)]
    y = fused_stencil(*ts, idx).sum()
    with pytest.raises(GraphError):
        y.backward(create_graph=True)


def test_declines():
    t = IntegralTransform(2, 3, StencilKernel([-1, 0, 1], dtype=F64), backend=NAME, dtype=F64)
    x = np.ones((1, 4, 2))
    with pytest.raises(ConfigError):
        t(x, positions=np.arange(4.0)[:, None] * 0.5)               # non-integer positions
    with pytest.raises(ConfigError):
        t(x, positions=np.zeros((4, 1)))                            # every source at one point
    t.normalization = "softmax"
    with pytest.raises(ConfigError):
        t(x)


def test_proofs_conv_layer_on_this_backend():
    conv = pytest.importorskip("itnet_np.proofs.conv")
    rng = np.random.default_rng(12)
    weight = itn.Tensor(rng.normal(size=(4, 3, 3)), requires_grad=True)
    x = itn.Tensor(rng.normal(size=(2, 6, 17)), requires_grad=True)
    layer = conv.conv1d_as_itnet(weight, rng.normal(size=4), stride=2, padding=2, dilation=2, groups=2)
    results = []
    for backend in ("dense", NAME):
        layer.transform.backend = backend
        weight.grad = x.grad = None
        y = layer(x)
        (y * y).sum().backward()
        results.append((y.data, weight.grad.data, x.grad.data))
    for a, b in zip(*results):
        assert _rel(b, a) <= 1e-10


def test_auto_uses_banded_when_it_pays(monkeypatch):
    from itnet_np.transform.fused import stencil_plan as SB
    calls = []
    real = SB.fused_stencil
    monkeypatch.setattr(SB, "fused_stencil", lambda *a: calls.append(1) or real(*a))
    t = IntegralTransform(3, 6, StencilKernel([-1, 0, 2], dtype=F64), rng=0, dtype=F64)
    x = np.random.default_rng(13).normal(size=(1, 64, 3))
    t.backend = "dense"
    ref = t(x).data
    t.backend = "auto"
    assert _rel(t(x).data, ref) <= 1e-10 and len(calls) == 1      # N M = 64^2 pays: banded
    half = np.arange(64.0)[:, None] * 0.5
    t.backend = "dense"
    ref = t(x, positions=half).data
    t.backend = "auto"
    assert _rel(t(x, positions=half).data, ref) <= 1e-10 and len(calls) == 1   # declined: dense
    t(x[:, :8])
    assert len(calls) == 1                                          # too small to pay: dense
