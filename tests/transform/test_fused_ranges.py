"""Per-row source ranges in the raw fused kernels (``ranges=(lo, hi)``: S(i) = [lo_i, hi_i), the
support descriptor's row ranges) against the same support given as an explicit bool mask, whose
path is itself checked against NumPy oracles in test_fused_*_raw.py: forward and every gradient,
with causal / window on top, empty rows, N != M, float64."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from itnet_np.errors import ShapeError
from itnet_np.transform.fused import attention_backward, attention_forward, mlp_backward, mlp_forward


def ranges_and_mask(rng, n, m):
    lo = rng.integers(0, m + 1, n)
    hi = np.minimum(lo + rng.integers(0, m + 1, n), m)
    empty = rng.random(n) < 0.2
    hi[empty] = lo[empty]                                   # some empty rows
    j = np.arange(m)
    return (lo, hi), (j[None] >= lo[:, None]) & (j[None] < hi[:, None])


@given(n=st.integers(1, 150), m=st.integers(1, 150), causal=st.booleans(), window=st.sampled_from([None, 0, 7]),
       norm=st.sampled_from(["softmax", "sum", "none"]), seed=st.integers(0, 2**16))
def test_attention_ranges_equal_the_mask(n, m, causal, window, norm, seed):
    rng = np.random.default_rng(seed)
    q, k = rng.standard_normal((2, 2, n, 4)), rng.standard_normal((2, 2, m, 4))
    v, dout = rng.standard_normal((2, 2, m, 3)), rng.standard_normal((2, 2, n, 3))
    ranges, mask = ranges_and_mask(rng, n, m)
    kw = {"causal": causal, "window": window, "normalization": norm}
    out_r, st_r = attention_forward(q, k, v, 0.5, ranges=ranges, **kw)
    out_m, st_m = attention_forward(q, k, v, 0.5, mask=mask, **kw)
    np.testing.assert_allclose(out_r, out_m, rtol=1e-12, atol=1e-12)
    g_r = attention_backward(q, k, v, out_r, st_r, dout, 0.5, ranges=ranges, **kw)
    g_m = attention_backward(q, k, v, out_m, st_m, dout, 0.5, mask=mask, **kw)
    for a, b in zip(g_r[:3], g_m[:3]):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)


@given(n=st.integers(1, 60), m=st.integers(1, 60), causal=st.booleans(), norm=st.sampled_from(["softmax", "sum"]),
       seed=st.integers(0, 2**16))
def test_mlp_ranges_equal_the_mask(n, m, causal, norm, seed):
    rng = np.random.default_rng(seed)
    B, K, R, H, dv = 2, 5, 3, 2, 3
    a, b = rng.standard_normal((B, n, K)), rng.standard_normal((B, m, K))
    x, y = rng.standard_normal((B, n, R)), rng.standard_normal((B, m, R))
    W, W2, b2 = rng.standard_normal((K, R)), rng.standard_normal((H, K)), rng.standard_normal(H)
    if norm == "sum":
        b2 += 4.0
    v, w = rng.standard_normal((B, H, m, dv)), rng.uniform(0.5, 1.5, (B, m))
    dout = rng.standard_normal((B, H, n, dv))
    ranges, mask = ranges_and_mask(rng, n, m)
    kw = {"act": "tanh", "causal": causal, "normalization": norm}
    out_r, st_r = mlp_forward(a, b, x, y, W, W2, b2, v, w, ranges=ranges, **kw)
    out_m, st_m = mlp_forward(a, b, x, y, W, W2, b2, v, w, mask=mask, **kw)
    np.testing.assert_allclose(out_r, out_m, rtol=1e-12, atol=1e-12)
    g_r = mlp_backward(a, b, x, y, W, W2, b2, v, w, out_r, st_r, dout, ranges=ranges, **kw)
    g_m = mlp_backward(a, b, x, y, W, W2, b2, v, w, out_m, st_m, dout, mask=mask, **kw)
    for key in g_r:
        np.testing.assert_allclose(g_r[key], g_m[key], rtol=1e-10, atol=1e-10, err_msg=key)


def test_ranges_are_checked():
    q = np.zeros((1, 1, 4, 2))
    with pytest.raises(ShapeError, match="ranges must be two int arrays of shape \\(4,\\)"):
        attention_forward(q, q, q, 1.0, ranges=(np.zeros(3), np.zeros(3)))
