"""The scan backend (fused/scan_plan.py) against the dense reference: DecayKernel and SelectiveKernel.

The scan is registered locally as backend 'scan-test', so the operator path (projection, weights,
support mask, value and output maps) is exercised; the oracle is the same module with backend='dense'
(O(N^2) scores from the published formulas in kernels/decay.py and kernels/selective.py).
"""
import numpy as np
import pytest

pytest.importorskip("numba")

from _graph_helpers import graph_nodes

import itnet_np as itn
from itnet_np.errors import ConfigError, GraphError
from itnet_np.transform import (
    DecayKernel,
    IntegralTransform,
    Points,
    SelectiveKernel,
    planner,
    register_backend,
)
from itnet_np.transform.fused.scan_plan import plan_scan, run_scan, support_strictness
from itnet_np.transform.support import Support


@pytest.fixture(autouse=True, scope="module")
def _registered():
    """The backend exists only while this module runs ('auto' elsewhere must not see it)."""
    register_backend("scan-test", lambda call: plan_scan(call, "scan-test"))
    yield
    planner._BACKENDS.pop("scan-test", None)

TOL = {np.float64: 1e-10, np.float32: 1e-4}


def _np(t):
    return np.array(getattr(t, "data", t))


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _run(module, x, backend, g, **kw):
    """(output, {name: grad}) of sum(y * g), gradients w.r.t. x and every parameter."""
    for p in module.parameters():
        p.grad = None
    xt = itn.Tensor(x, requires_grad=True)
    module.backend = backend
    y = module(xt, **kw)
    (y * g).sum().backward()
    grads = {name: _np(p.grad) for name, p in module.named_parameters()}
    grads["x"] = _np(xt.grad)
    return y.data.copy(), grads


def _parity(module, x, dtype, **kw):
    rng = np.random.default_rng(7)
    module.backend = "dense"
    g = rng.standard_normal(module(itn.Tensor(x), **kw).shape).astype(dtype)
    y0, g0 = _run(module, x, "dense", g, **kw)
    y1, g1 = _run(module, x, "scan-test", g, **kw)
    tol = TOL[dtype]
    assert _rel(y1, y0) <= tol
    assert set(g0) == set(g1)
    for name in g0:
        assert g1[name].dtype == g0[name].dtype
        assert _rel(g1[name], g0[name]) <= tol, name


def _features(dtype, B=2, N=9, C=3, seed=0):
    return np.random.default_rng(seed).standard_normal((B, N, C)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("support", ["full", "causal"])
def test_decay_parity(dtype, strict, support):
    kernel = DecayKernel(heads=2, real_modes=2, complex_modes=2, strict=strict, rng=1, dtype=dtype)
    module = IntegralTransform(3, 4, kernel, support=support, quadrature="mean", rng=2, dtype=dtype)
    _parity(module, _features(dtype), dtype)


@pytest.mark.parametrize("modes", [(1, 0), (0, 1)])
def test_decay_single_mode_family(modes):
    kernel = DecayKernel(heads=1, real_modes=modes[0], complex_modes=modes[1], rng=3, dtype=np.float64)
    module = IntegralTransform(3, 2, kernel, rng=4, dtype=np.float64)
    _parity(module, _features(np.float64, N=7), np.float64)


def test_decay_strict_causal_support_on_non_strict_kernel():
    # the support drops lag 0: the scan runs the kernel as strict (and weights per call are used)
    kernel = DecayKernel(heads=2, real_modes=1, complex_modes=1, rng=5, dtype=np.float64)
    module = IntegralTransform(3, 4, kernel, support="strict_causal", rng=6, dtype=np.float64)
    w = np.random.default_rng(1).uniform(0.5, 1.5, (2, 9))
    _parity(module, _features(np.float64), np.float64, weights=w)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("options", [
    {},
    {"dt_softplus": False},
    {"direct_A": True},
    {"delta_as_weight": False},
])
def test_selective_parity(dtype, options):
    A = None
    if options.get("direct_A"):
        A = np.array([[-1.0, 0.3, -2.0], [0.2, -0.5, -1.5]])       # any real A
    kernel = SelectiveKernel(3, 2, state_dim=3, A=A, rng=7, dtype=dtype, **options)
    if not options.get("dt_softplus", True):
        kernel.b_dt.data[...] = np.abs(kernel.b_dt.data) + 0.3      # keep Delta > 0 for a tame clock
    module = IntegralTransform(3, 4, kernel, support="causal", rng=8, dtype=dtype)
    _parity(module, _features(dtype), dtype)


@pytest.mark.parametrize("support", ["strict_causal", "full"])
def test_selective_supports(support):
    kernel = SelectiveKernel(3, 2, state_dim=2, rng=9, dtype=np.float64)
    module = IntegralTransform(3, 2, kernel, support=support, rng=10, dtype=np.float64)
    _parity(module, _features(np.float64), np.float64)


def test_long_sequence_strong_decay_stays_finite():
    # A = -50 and Delta ~ 1.3 over N = 3000 steps: exp(-A tau_s) would overflow long before the end
    N, dtype = 3000, np.float64
    kernel = SelectiveKernel(2, 1, state_dim=2, A=np.array([[-50.0, -0.01]]), rng=11, dtype=dtype)
    kernel.b_dt.data[...] = 1.0
    module = IntegralTransform(2, 1, kernel, support="causal", rng=12, dtype=dtype)
    x = _features(dtype, B=1, N=N, C=2)
    y, grads = _run(module, x, "scan-test", np.ones((1, N, 1), dtype))
    assert np.all(np.isfinite(y)) and all(np.all(np.isfinite(v)) for v in grads.values())
    # the last rows against the published formula, clock gaps as segment sums (NumPy oracle)
    xt = itn.Tensor(x)
    points = Points(xt, np.arange(N, dtype=dtype)[None, :, None])
    proj = kernel.project(points, points)
    values = module.values(xt)
    out = run_scan(kernel, proj, values, kernel.source_weights(proj), _plan(N, dtype), "none").data
    delta, Bm, Cm, v = (np.asarray(a.data) for a in (proj.query["delta"], proj.source["B"],
                                                      proj.query["C"], values))
    A = -np.exp(kernel.A_log.data)
    for t in (N - 3, N - 1):
        gap = np.concatenate([np.cumsum(delta[0, t:0:-1, 0])[::-1], [0.0]])     # tau_t - tau_s, s <= t
        k = np.einsum("n,sn,sn->s", Cm[0, t], Bm[0, :t + 1], np.exp(gap[:, None] * A[0]))
        expected = (k * delta[0, :t + 1, 0]) @ v[0, 0, :t + 1]
        assert _rel(out[0, 0, t], expected) <= 1e-10


def test_long_sequence_matches_dense_float32():
    N, dtype = 400, np.float32
    kernel = SelectiveKernel(2, 1, state_dim=2, A=np.array([[-30.0, -0.05]]), rng=13, dtype=dtype)
    module = IntegralTransform(2, 2, kernel, support="causal", rng=14, dtype=dtype)
    _parity(module, _features(dtype, B=1, N=N, C=2), dtype)


def _plan(n, dtype=np.float64, mask=None, kind="full", window=None):
    grid = np.arange(n, dtype=dtype).reshape(1, n, 1)
    return Support(kind, window).plan(grid, grid, mask)


def test_declines():
    k = DecayKernel(heads=1, rng=0, dtype=np.float64)
    window = np.tril(np.ones((5, 5), bool)) & np.triu(np.ones((5, 5), bool), -2)
    assert support_strictness(k, _plan(5, mask=window[None])) is None
    assert support_strictness(k, _plan(5, window=2)) is None           # the same cut, as a descriptor
    assert support_strictness(k, _plan(5, mask=np.ones((1, 5, 5), bool))) is False
    assert support_strictness(k, _plan(5, kind="causal")) is False
    assert support_strictness(k, _plan(5, kind="strict_causal")) is True
    strict = DecayKernel(heads=1, strict=True, rng=0, dtype=np.float64)
    assert support_strictness(strict, _plan(5, mask=np.tril(np.ones((1, 5, 5), bool), -1))) is True
    assert support_strictness(strict, _plan(5)) is True
    module = IntegralTransform(3, 2, k, backend="scan-test", rng=0, dtype=np.float64)
    with pytest.raises(ConfigError, match="index grid"):
        module(itn.Tensor(_features(np.float64, N=5)), positions=np.arange(5.0)[:, None] * 2.0)
    # a grid shifted by a constant is fine (the lag only sees differences)
    module(itn.Tensor(_features(np.float64, N=5)), positions=np.arange(5.0)[:, None] + 3.0)


def _ops(y):
    return {node.prim.name for node in graph_nodes(y)}


def test_auto_and_create_graph():
    kernel = DecayKernel(heads=1, real_modes=1, complex_modes=1, rng=0, dtype=np.float64)
    x = itn.Tensor(_features(np.float64, N=6), requires_grad=True)
    module = IntegralTransform(3, 2, kernel, backend="auto", rng=0, dtype=np.float64)
    assert "scan_decay" in _ops(module(x))
    module.normalization = "softmax"                      # not scannable: 'auto' takes dense
    assert "scan_decay" not in _ops(module(x))
    module.normalization, module.backend = "none", "scan-test"
    with pytest.raises(GraphError):                       # a raw-array VJP: first order only
        module(x).sum().backward(create_graph=True)
