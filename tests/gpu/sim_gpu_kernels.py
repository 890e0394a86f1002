"""The numba-CUDA kernels under numba's CUDA simulator, against the dense float64 references
(_gpu_dense_refs.py: the formulas written with the engine's ops, gradients from its backward).

Not collected by a plain ``pytest`` run (the name does not start with ``test_``): test_gpu_kernels_sim.py
runs this file in a child process with NUMBA_ENABLE_CUDASIM=1, which must be set before numba loads
and must not leak into the CPU numba tests. Sizes are odd and not multiples of the 32-row tile.
"""
import os

import numpy as np
import pytest
from _gpu_dense_refs import attention as dense_attention
from _gpu_dense_refs import mlp as dense_mlp
from _gpu_dense_refs import value_and_grads

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("run through test_gpu_kernels_sim.py (needs NUMBA_ENABLE_CUDASIM=1 before numba loads)",
                allow_module_level=True)

from itnet_np.gpu import attention_forward as gpu_attention_forward_module
from itnet_np.gpu.attention import attention_backward, attention_forward
from itnet_np.gpu.mlp import mlp_backward, mlp_forward

from itnet_np.errors import ConfigError, DTypeError, ShapeError

TOL = {"rtol": 1e-10, "atol": 1e-11}


def _close(got, want, name):
    np.testing.assert_allclose(got, want, err_msg=name, **TOL)


def _att_case(rng, B, H, N, M, d, dv):
    return {"q": rng.standard_normal((B, H, N, d)), "k": rng.standard_normal((B, H, M, d)),
            "v": rng.standard_normal((B, H, M, dv))}


ATTENTION_CASES = [
    # (B, H, N, M, d, dv, options)
    (1, 2, 45, 37, 5, 3, {}),
    (2, 1, 33, 33, 4, 2, {"causal": True}),
    (1, 1, 50, 64, 3, 4, {"window": 5, "normalization": "none"}),
    (1, 2, 40, 40, 3, 2, {"causal": True, "window": 7, "alibi": True}),
    (1, 2, 35, 29, 4, 3, {"mask": True, "bias": True}),
    (1, 1, 39, 47, 3, 2, {"ranges": True}),
    (1, 1, 34, 34, 2, 2, {"window": 3, "normalization": "sum", "positive": True}),
]


@pytest.mark.parametrize("B, H, N, M, d, dv, opts", ATTENTION_CASES)
def test_attention_forward_and_gradients_match_dense(B, H, N, M, d, dv, opts):
    rng = np.random.default_rng(N * 7 + M)
    arrays = _att_case(rng, B, H, N, M, d, dv)
    if opts.get("positive"):           # 'sum' needs Z away from 0: positive logits
        arrays["q"], arrays["k"] = np.abs(arrays["q"]) + 0.1, np.abs(arrays["k"]) + 0.1
    kw = {key: opts[key] for key in ("causal", "window", "normalization") if key in opts}
    raw = dict(kw)
    if opts.get("mask"):
        mask = rng.random((1, H, N, M)) > 0.3
        mask[0, 0, 3] = False                               # one empty row
        kw["mask"] = raw["mask"] = mask
    if opts.get("bias"):
        arrays["bias"] = rng.standard_normal((H, N, M))
        arrays["bias"][0, 5, :4] = -np.inf                  # -inf entries count as masked
    if opts.get("alibi"):
        arrays["slopes"] = rng.random(H) + 0.1
    if opts.get("ranges"):
        lo = np.sort(rng.integers(0, M // 2, N))
        raw["ranges"] = kw["ranges"] = (lo, np.minimum(lo + rng.integers(0, M // 2, N), M))
    scale = 0.45
    dout = rng.standard_normal((B, H, N, dv))
    want, grads = value_and_grads(dense_attention, arrays, dout, scale=scale, **kw)
    q, k, v = arrays["q"], arrays["k"], arrays["v"]
    bias, slopes = arrays.get("bias"), arrays.get("slopes")
    out, stats = attention_forward(q, k, v, scale, bias=bias, alibi_slopes=slopes, **raw)
    _close(out, want, "out")
    dq, dk, dv_, dbias, dslopes = attention_backward(q, k, v, out, stats, dout, scale, bias=bias,
                                                     alibi_slopes=slopes, **raw)
    for name, got in (("q", dq), ("k", dk), ("v", dv_), ("bias", dbias), ("slopes", dslopes)):
        if name in grads:
            _close(got, grads[name], "d" + name)
    if bias is None:
        assert dbias is None


def test_attention_stats_are_the_row_logsumexp_and_empty_rows_give_zero():
    rng = np.random.default_rng(3)
    a = _att_case(rng, 1, 1, 37, 33, 3, 2)
    mask = np.ones((37, 33), bool)
    mask[4] = False
    out, stats = attention_forward(a["q"], a["k"], a["v"], 0.7, mask=mask, causal=True)
    x = 0.7 * a["q"][0, 0] @ a["k"][0, 0].T
    keep = mask & (np.arange(33)[None, :] <= np.arange(37)[:, None])
    want = np.array([np.log(np.exp(r[kp]).sum()) if kp.any() else -np.inf for r, kp in zip(x, keep)])
    np.testing.assert_allclose(stats[0, 0], want, rtol=1e-12)
    assert np.all(out[0, 0, 4] == 0) and stats[0, 0, 4] == -np.inf


def test_attention_float32_error_within_twice_the_dense_float32_error():
    """FlashAttention's rule: the fused float32 error at most 2x the dense float32 path's error
    (both against float64), and never NaN."""
    rng = np.random.default_rng(5)
    a = _att_case(rng, 1, 2, 61, 53, 8, 4)
    dout = rng.standard_normal((1, 2, 61, 4))
    ref, gref = value_and_grads(dense_attention, a, dout, scale=0.35, causal=True)
    a32 = {n: x.astype(np.float32) for n, x in a.items()}
    d32, g32 = value_and_grads(dense_attention, a32, dout.astype(np.float32), scale=0.35, causal=True)
    out, stats = attention_forward(a32["q"], a32["k"], a32["v"], 0.35, causal=True)
    grads = attention_backward(a32["q"], a32["k"], a32["v"], out, stats, dout.astype(np.float32), 0.35,
                               causal=True)
    assert out.dtype == np.float32 and not np.isnan(out).any()
    assert np.abs(out - ref).max() <= 2 * np.abs(d32 - ref).max() + 1e-7
    for name, got in zip("qkv", grads[:3]):
        assert np.abs(got - gref[name]).max() <= 2 * np.abs(g32[name] - gref[name]).max() + 1e-6, name


MLP_CASES = [
    # (B, H, N, M, K, R, dv, w heads, options)
    (1, 2, 37, 41, 4, 2, 3, 1, {"act": "gelu_tanh"}),
    (2, 1, 33, 35, 3, 0, 2, 1, {"act": "relu", "causal": True}),
    (1, 2, 45, 39, 3, 2, 2, 2, {"act": "silu", "window": 4, "normalization": "none"}),
    (1, 2, 35, 35, 3, 1, 2, 1, {"act": "tanh", "mask": True, "normalization": "sum", "positive": True}),
    (1, 1, 41, 36, 2, 2, 2, 1, {"act": "gelu_tanh", "ranges": True}),
]


@pytest.mark.parametrize("B, H, N, M, K, R, dv, hw, opts", MLP_CASES)
def test_mlp_forward_and_gradients_match_dense(B, H, N, M, K, R, dv, hw, opts):
    rng = np.random.default_rng(N * 11 + M)
    arrays = {"a": rng.standard_normal((B, N, K)), "b": rng.standard_normal((B, M, K)),
              "x": rng.standard_normal((B, N, R)), "y": rng.standard_normal((B, M, R)),
              "W": rng.standard_normal((K, R)), "W2": rng.standard_normal((H, K)),
              "b2": rng.standard_normal(H), "v": rng.standard_normal((B, H, M, dv)),
              "w": rng.random((B, M) if hw == 1 else (B, H, M)) + 0.1}
    if opts.get("positive"):           # 'sum' needs Z away from 0
        arrays["W2"], arrays["b2"] = np.abs(arrays["W2"]), np.abs(arrays["b2"]) + 1.0
    kw = {key: opts[key] for key in ("act", "causal", "window", "normalization") if key in opts}
    if opts.get("mask"):
        kw["mask"] = rng.random((B, H, N, M)) > 0.3
    if opts.get("ranges"):
        lo = np.sort(rng.integers(0, M // 2, N))
        kw["ranges"] = (lo, np.minimum(lo + rng.integers(1, M // 2, N), M))
    dout = rng.standard_normal((B, H, N, dv))
    want, grads = value_and_grads(dense_mlp, arrays, dout, **kw)
    out, stats = mlp_forward(*arrays.values(), **kw)
    _close(out, want, "out")
    got = mlp_backward(*arrays.values(), out, stats, dout, **kw)
    for name, array in arrays.items():
        assert got[name].shape == array.shape, name
        # db2 under softmax is 0 in exact arithmetic (shift invariance): compare absolutely
        _close(got[name], grads[name], "d" + name)


def test_kernels_compile_once_per_dtype_and_shape():
    rng = np.random.default_rng(1)
    a = _att_case(rng, 1, 1, 9, 7, 3, 2)
    cache = gpu_attention_forward_module.kernel
    attention_forward(a["q"], a["k"], a["v"], 1.0)
    before = cache.cache_info()
    attention_forward(a["q"] * 2, a["k"], a["v"], 0.5, causal=True)
    after = cache.cache_info()
    assert after.misses == before.misses and after.hits == before.hits + 1
    attention_forward(*(x.astype(np.float32) for x in (a["q"], a["k"], a["v"])), 1.0)
    assert cache.cache_info().misses == after.misses + 1


def test_bad_arguments_raise_named_errors():
    rng = np.random.default_rng(2)
    a = _att_case(rng, 1, 1, 9, 7, 3, 2)
    with pytest.raises(DTypeError, match="k is .*float32 but the inputs are float64"):
        attention_forward(a["q"], a["k"].astype(np.float32), a["v"], 1.0)
    with pytest.raises(ShapeError, match="v must have shape"):
        attention_forward(a["q"], a["k"], a["v"][:, :, :5], 1.0)
    with pytest.raises(ConfigError, match="normalization"):
        attention_forward(a["q"], a["k"], a["v"], 1.0, normalization="max")
    with pytest.raises(ShapeError, match="mask must broadcast"):
        attention_forward(a["q"], a["k"], a["v"], 1.0, mask=np.ones((9, 6), bool))
    w = -np.ones((1, 7))
    m = {"a": np.zeros((1, 9, 2)), "b": np.zeros((1, 7, 2)), "x": np.zeros((1, 9, 0)), "y": np.zeros((1, 7, 0)),
         "W": np.zeros((2, 0)), "W2": np.zeros((1, 2)), "b2": np.zeros(1), "v": np.zeros((1, 1, 7, 2))}
    with pytest.raises(ConfigError, match="w >= 0"):
        mlp_forward(*m.values(), w)
    with pytest.raises(ConfigError, match="act must be one of"):
        mlp_forward(*m.values(), np.ones((1, 7)), act="gelu")
