"""Parity of the tiled Numba MLP-kernel transform with a dense NumPy reference built here.

The reference forms pre (B, N, M, K) and s (B, H, N, M) explicitly and differentiates them
analytically; test_dense_reference_gradients checks that gradient against central differences.
Errors are max|fused - ref| / max(|ref|, |terms|) per array, where |terms| is the same formula on
absolute values (the rounding-error yardstick when a gradient cancels): <= 1e-10 in float64,
<= 1e-4 in float32.
"""
import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from itnet_np.errors import ConfigError, DTypeError, ShapeError
from itnet_np.transform.fused import mlp_backward, mlp_forward
from itnet_np.transform.fused.mlp_numba import TK, TQ

TOL = {np.float64: 1e-10, np.float32: 1e-4}
NORMS = ("softmax", "sum", "none")
ACTS = ("relu", "gelu_tanh", "silu", "tanh")
NAMES = ("a", "b", "x", "y", "W", "W2", "b2", "v", "w")
C = np.sqrt(2 / np.pi)


def act_and_grad(z, name):
    if name == "relu":
        return np.maximum(z, 0), (z > 0).astype(z.dtype)
    if name == "tanh":
        t = np.tanh(z)
        return t, 1 - t * t
    if name == "silu":
        sg = 1 / (1 + np.exp(-z))
        return z * sg, sg * (1 + z * (1 - sg))
    t = np.tanh(C * (z + 0.044715 * z ** 3))
    return 0.5 * z * (1 + t), 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * C * (1 + 3 * 0.044715 * z * z)


def dense(p, dout=None, act="relu", causal=False, mask=None, window=None, norm="softmax",
          magnitude=False):
    """Dense forward (out, stats, |terms| of out), or with dout the gradients dict (or their
    term magnitudes when magnitude=True)."""
    a, b, x, y, W, W2, b2, v, w = (p[n] for n in NAMES)
    B, N, _ = a.shape
    M, H = b.shape[1], W2.shape[0]
    pre = a[:, :, None, :] + b[:, None, :, :] + np.einsum("kr,bir,bjr->bijk", W, x, y)
    A, dA = act_and_grad(pre, act)
    s = np.einsum("hk,bijk->bhij", W2, A) + b2[:, None, None]
    i, j = np.arange(N)[:, None], np.arange(M)[None, :]
    allow = np.ones((B, H, N, M), bool)
    allow &= (j <= i) if causal else True
    allow &= (np.abs(i - j) <= window) if window is not None else True
    allow &= mask if mask is not None else True
    w4 = w[:, None, None, :] if w.ndim == 2 else w[:, :, None, :]
    if norm == "softmax":
        m = np.where(allow, s, -np.inf).max(-1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)
        u = w4 * np.exp(np.where(allow, s - m, -np.inf))
        l = u.sum(-1, keepdims=True)
        P, E = u / np.where(l > 0, l, 1), np.exp(np.where(allow, s - m, -np.inf)) / np.where(l > 0, l, 1)
        stats = np.where(l[..., 0] > 0, m[..., 0] + np.log(np.where(l > 0, l, 1))[..., 0], -np.inf)
    else:
        kx = np.where(allow, w4 * s, 0)
        stats = kx.sum(-1)
        Z = stats[..., None]
        P = kx / np.where(Z != 0, Z, 1) * (Z != 0) if norm == "sum" else kx
    out = P @ v
    if dout is None:
        return out, stats, np.abs(P) @ np.abs(v)
    f = np.abs if magnitude else (lambda z: z)
    dP = f(dout) @ np.swapaxes(f(v), -1, -2)
    D = (f(dout) * f(out)).sum(-1, keepdims=True)
    diff = dP + D if magnitude else dP - D
    if norm == "softmax":
        dS, dWt = f(w4) * E * diff, E * diff
    elif norm == "sum":
        G = np.where(allow & (Z != 0), diff / np.where(Z != 0, f(Z), 1), 0)
        dS, dWt = f(w4) * G, f(s) * G
    else:
        dS, dWt = np.where(allow, f(w4) * dP, 0), np.where(allow, f(s) * dP, 0)
    dw = dWt.sum(2) if w.ndim == 3 else dWt.sum((1, 2))
    A, x, y, W, W2 = f(A), f(x), f(y), f(W), f(W2)
    dpre = np.einsum("bhij,hk->bijk", dS, W2) * f(dA)
    return {"a": dpre.sum(2), "b": dpre.sum(1), "x": np.einsum("bijk,kr,bjr->bir", dpre, W, y),
            "y": np.einsum("bijk,kr,bir->bjr", dpre, W, x),
            "W": np.einsum("bijk,bir,bjr->kr", dpre, x, y),
            "W2": np.einsum("bhij,bijk->hk", dS, A), "b2": dS.sum((0, 2, 3)),
            "v": np.swapaxes(f(P), -1, -2) @ f(dout), "w": dw}


def rel(got, ref, mag):
    ref = np.asarray(ref, np.float64)
    if not ref.size:
        return 0.0
    return np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), np.max(np.abs(mag)), 1e-300)


def make_params(seed, B, N, M, K, R, H, dv, norm, dtype, w_per_head=False):
    rng = np.random.default_rng(seed)
    p = {"a": rng.standard_normal((B, N, K)), "b": rng.standard_normal((B, M, K)),
         "x": rng.standard_normal((B, N, R)), "y": rng.standard_normal((B, M, R)),
         "W": rng.standard_normal((K, R)) / np.sqrt(max(R, 1)),
         "W2": rng.standard_normal((H, K)) / np.sqrt(K), "b2": rng.standard_normal(H),
         "v": rng.standard_normal((B, H, M, dv)),
         "w": rng.uniform(0.5, 1.5, (B, H, M) if w_per_head else (B, M))}
    if norm == "sum":    # s >= 1 for every activation (each is >= -1): Z stays away from 0
        p["W2"] = np.abs(p["W2"])
        p["b2"] = 1 + p["W2"].sum(1)
    dout = rng.standard_normal((B, H, N, dv))
    return {n: z.astype(dtype) for n, z in p.items()}, dout.astype(dtype)


def check_parity(p, dout, act, causal, mask, window, norm, dtype):
    opts = {"act": act, "causal": causal, "mask": mask, "window": window, "normalization": norm}
    before = {n: z.copy() for n, z in p.items()}
    out, stats = mlp_forward(*(p[n] for n in NAMES), **opts)
    p64 = {n: z.astype(np.float64) for n, z in p.items()}
    dense_opts = {"act": act, "causal": causal, "mask": mask, "window": window, "norm": norm}
    ref_out, ref_stats, mag = dense(p64, **dense_opts)
    tol = TOL[dtype]
    assert out.dtype == dtype and stats.dtype == dtype
    assert rel(out, ref_out, mag) <= tol
    fin = np.isfinite(ref_stats)
    assert np.array_equal(np.isfinite(stats), fin)
    assert rel(stats[fin], ref_stats[fin], 1.0) <= tol
    grads = mlp_backward(*(p[n] for n in NAMES), out, stats, dout, **opts)
    refs = dense(p64, dout.astype(np.float64), **dense_opts)
    mags = dense(p64, dout.astype(np.float64), magnitude=True, **dense_opts)
    for n in NAMES:
        g = grads[n]
        assert g.shape == p[n].shape and g.dtype == dtype, n
        assert np.all(np.isfinite(g)), n
        assert rel(g, refs[n], mags[n]) <= tol, (n, rel(g, refs[n], mags[n]))
    for n, z in before.items():
        np.testing.assert_array_equal(z, p[n])
    return out, stats, grads


def _loss_along(t, u, name, p, dout, opts):
    """sum(dout * out) at p[name] + t u (the dense reference)."""
    return np.sum(dense({**p, name: p[name] + t * u}, **opts)[0] * dout)


def test_dense_reference_gradients():
    """The analytic dense gradient agrees with central differences (directional, float64)."""
    rng = np.random.default_rng(1)
    mask = rng.random((2, 2, 6, 8)) > 0.3
    h = 1e-6
    for norm in NORMS:
        for act in ACTS:
            p, dout = make_params(2, 2, 6, 8, 3, 2, 2, 2, norm, np.float64, w_per_head=True)
            opts = {"act": act, "causal": True, "mask": mask, "window": 4, "norm": norm}
            grads = dense(p, dout, **opts)
            for n in NAMES:
                u = rng.standard_normal(p[n].shape)
                numeric = (_loss_along(h, u, n, p, dout, opts)
                           - _loss_along(-h, u, n, p, dout, opts)) / (2 * h)
                assert abs(numeric - np.sum(grads[n] * u)) <= 1e-6 * max(1, abs(numeric)), (norm, act, n)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("act,causal,window,mask_kind,R,w_per_head", [
    ("gelu_tanh", False, None, None, 2, False),
    ("relu", True, None, "bhnm", 0, True),
    ("silu", False, 11, "key", 3, False),
    ("tanh", True, 40, "nm", 1, True),
])
def test_parity_multi_tile(dtype, norm, act, causal, window, mask_kind, R, w_per_head):
    """N, M straddle the tiles (not multiples), with every support option and activation."""
    B, N, M, H = 2, 2 * TQ + 3, 2 * TK + 5, 2
    p, dout = make_params(3, B, N, M, 5, R, H, 3, norm, dtype, w_per_head)
    rng = np.random.default_rng(8)
    shapes = {None: None, "bhnm": (B, H, N, M), "key": (B, 1, 1, M), "nm": (N, M)}
    mask = None if mask_kind is None else rng.random(shapes[mask_kind]) > 0.3
    check_parity(p, dout, act, causal, mask, window, norm, dtype)


@st.composite
def cases(draw):
    B, N, M = draw(st.integers(1, 2)), draw(st.integers(1, 70)), draw(st.integers(1, 70))
    K, R, H, dv = (draw(st.integers(lo, hi)) for lo, hi in ((1, 5), (0, 3), (1, 3), (1, 3)))
    norm, dtype = draw(st.sampled_from(NORMS)), draw(st.sampled_from([np.float64, np.float32]))
    seed = draw(st.integers(0, 2**31))
    p, dout = make_params(seed, B, N, M, K, R, H, dv, norm, dtype, draw(st.booleans()))
    kind = draw(st.sampled_from([None, "nm", "bhnm", "key"]))
    shapes = {None: None, "nm": (N, M), "bhnm": (B, H, N, M), "key": (B, 1, 1, M)}
    mask = None if kind is None else np.random.default_rng(seed).random(shapes[kind]) > 0.3
    return (p, dout, draw(st.sampled_from(ACTS)), draw(st.booleans()), mask,
            draw(st.one_of(st.none(), st.integers(0, 75))), norm, dtype)


@given(cases())
def test_parity_hypothesis(case):
    check_parity(*case)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_huge_logits_stay_finite_and_exact(dtype):
    """Kernel values beyond +-1e4 (exact integers in both dtypes) under the online softmax, over
    two source tiles (the second moves the lazily kept shift)."""
    rng = np.random.default_rng(4)
    B, N, M, K, H = 1, 40, TK + 70, 4, 2
    p, dout = make_params(5, B, N, M, K, 0, H, 3, "softmax", np.float64)
    p["a"], p["b"] = rng.integers(-10, 11, (B, N, K)) * 1.0, rng.integers(-10, 11, (B, M, K)) * 1.0
    p["W2"], p["b2"] = rng.integers(-1000, 1001, (H, K)) * 1.0, rng.integers(-50, 51, H) * 1.0
    p["w"] = np.ones((B, M))
    s = np.einsum("hk,bijk->bhij", p["W2"], np.maximum(p["a"][:, :, None] + p["b"][:, None], 0))
    assert np.abs(s).max() >= 1e4
    check_parity({n: z.astype(dtype) for n, z in p.items()}, dout.astype(dtype), "relu", True, None,
                 None, "softmax", dtype)


@pytest.mark.parametrize("norm", NORMS)
def test_fully_masked_rows_give_zeros(norm):
    B, N, M, H = 1, 37, 40, 2
    p, dout = make_params(6, B, N, M, 3, 2, H, 2, norm, np.float64)
    mask = np.random.default_rng(0).random((B, H, N, M)) > 0.3
    mask[:, :, ::5] = False
    out, stats, grads = check_parity(p, dout, "gelu_tanh", False, mask, None, norm, np.float64)
    assert np.all(out[:, :, ::5] == 0)
    assert np.all(stats[:, :, ::5] == (-np.inf if norm == "softmax" else 0))
    assert np.all(grads["a"][:, ::5] == 0) and np.all(grads["x"][:, ::5] == 0)
    nothing = np.zeros((N, M), bool)
    out, stats, grads = check_parity(p, dout, "silu", True, nothing, 3, norm, np.float64)
    assert np.all(out == 0) and all(np.all(g == 0) for g in grads.values())


def test_thread_count_does_not_change_results():
    """One thread vs all: with B < threads the source-side gradients go through per-chunk copies."""
    p, dout = make_params(9, 1, 3 * TQ + 1, TK + 3, 4, 2, 2, 3, "softmax", np.float64)
    args = [p[n] for n in NAMES]

    def run():
        out, stats = mlp_forward(*args, act="silu", causal=True)
        return out, mlp_backward(*args, out, stats, dout, act="silu", causal=True)
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        out1, g1 = run()
    finally:
        numba.set_num_threads(threads)
    out, g = run()
    assert np.max(np.abs(out - out1)) <= 1e-12 * np.max(np.abs(out1))
    for n in NAMES:   # (db2 is ~0 under softmax: shifting every logit changes nothing)
        assert np.max(np.abs(g[n] - g1[n])) <= 1e-12 * max(np.max(np.abs(g1[n])), 1.0), n


@pytest.mark.parametrize("N,M", [(0, 5), (4, 0)])
def test_empty_sides(N, M):
    p, dout = make_params(0, 1, N, M, 3, 1, 2, 2, "softmax", np.float64)
    out, stats = mlp_forward(*(p[n] for n in NAMES))
    assert out.shape == (1, 2, N, 2) and np.all(out == 0) and np.all(stats == -np.inf)
    grads = mlp_backward(*(p[n] for n in NAMES), out, stats, dout)
    assert all(grads[n].shape == p[n].shape and np.all(grads[n] == 0) for n in NAMES)


def test_bad_arguments_raise():
    p, _ = make_params(0, 1, 4, 5, 3, 2, 2, 2, "softmax", np.float64)
    args = [p[n] for n in NAMES]

    def call(**changes):
        z = dict(zip(NAMES, args))
        opts = {k: changes.pop(k) for k in list(changes) if k not in NAMES}
        z.update(changes)
        return mlp_forward(*(z[n] for n in NAMES), **opts)
    with pytest.raises(DTypeError, match="b is shape"):
        call(b=p["b"].astype(np.float32))
    with pytest.raises(ShapeError, match="W must have shape"):
        call(W=p["W"][:, :1])
    with pytest.raises(ShapeError, match="y must have shape"):
        call(y=p["y"][:, :2])
    with pytest.raises(ShapeError, match="v must have shape"):
        call(v=p["v"][:, :1])
    with pytest.raises(ShapeError, match="w must have shape"):
        call(w=p["w"][:, :3])
    with pytest.raises(ConfigError, match="w >= 0"):
        call(w=-p["w"])
    with pytest.raises(ConfigError, match="act"):
        call(act="gelu")
    with pytest.raises(ShapeError, match="mask must broadcast"):
        call(mask=np.ones((5, 4), bool))
    out, _ = call(w=-p["w"], normalization="none")   # signed weights are fine without softmax
    assert np.all(np.isfinite(out))


def test_float32_forward_runs_in_float32():
    """No float -> double conversion in the float32 forward kernel (Python float literals in the
    activations promoted them: 0.30 s against 0.18 s), and it vectorises."""
    from _ir_helpers import float32_ir_counts
    call = ("a = np.ones((1, 20, 4), np.float32); x = np.ones((1, 20, 2), np.float32); "
            "mod.mlp_forward(a, a, x, x, np.ones((4, 2), np.float32), np.ones((2, 4), np.float32), "
            "np.ones(2, np.float32), np.ones((1, 2, 20, 3), np.float32), np.ones((1, 20), np.float32), "
            "act='gelu_tanh', mask=np.ones((20, 20), bool))")
    fpext, vec = float32_ir_counts("itnet_np.transform.fused.mlp_numba", "_forward", call)
    assert fpext == 0
    assert vec > 0
