"""Parity of the tiled Numba attention kernels with a dense NumPy reference built here.

The reference forms the full (B, H, N, M) logit tensor and differentiates it analytically; that
analytic gradient is itself checked against central differences (test_dense_reference_gradients),
so the fused backward is compared with something independent of its own code. Errors are
max|fused - ref| / max|ref| per array: <= 1e-10 in float64, <= 1e-4 in float32.
"""
import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from itnet_np.errors import ConfigError, DTypeError, ShapeError
from itnet_np.transform.fused import attention_backward, attention_forward
from itnet_np.transform.fused.attention_numba import BK, BQ

TOL = {np.float64: 1e-10, np.float32: 1e-4}
NORMS = ("softmax", "sum", "none")


# ------------------------------------------------------------------------ dense reference
def support(B, H, N, M, causal, window, mask):
    i, j = np.arange(N)[:, None], np.arange(M)[None, :]
    allow = np.ones((B, H, N, M), bool)
    if causal:
        allow &= j <= i
    if window is not None:
        allow &= np.abs(i - j) <= window
    if mask is not None:
        allow &= mask
    return allow


def logits(q, k, scale, bias, slopes):
    x = scale * np.einsum("bhnd,bhmd->bhnm", q, k)
    if bias is not None:
        x = x + bias
    if slopes is not None:
        dist = np.abs(np.arange(q.shape[2])[:, None] - np.arange(k.shape[2])[None, :])
        x = x - slopes[:, None, None] * dist
    return x


def dense_forward(q, k, v, scale, causal=False, mask=None, bias=None, slopes=None, window=None,
                  norm="softmax"):
    """Returns out, stats, the normalised weights P (B, H, N, M), the support and the logits."""
    x = logits(q, k, scale, bias, slopes)
    allow = support(*x.shape, causal, window, mask) & (x > -np.inf)
    if norm == "softmax":
        m = np.where(allow, x, -np.inf).max(-1, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)
        e = np.exp(np.where(allow, x - m, -np.inf))
        l = e.sum(-1, keepdims=True)
        P = e / np.where(l > 0, l, 1)
        stats = np.where(l[..., 0] > 0, m[..., 0] + np.log(np.where(l > 0, l, 1))[..., 0], -np.inf)
    else:
        kx = np.where(allow, x, 0)
        stats = kx.sum(-1)
        Z = stats[..., None]
        P = kx / np.where(Z != 0, Z, 1) * (Z != 0) if norm == "sum" else kx
    return P @ v, stats, P, allow, x


def dense_backward(q, k, v, dout, scale, causal=False, mask=None, bias=None, slopes=None,
                   window=None, norm="softmax", magnitude=False):
    """Analytic gradients of sum(dout * out): dq, dk, dv, dbias (B, H, N, M), dslopes.

    magnitude=True evaluates the same formulas on absolute values, with (dP - D) -> |dP| + |D|:
    the size of the terms each gradient sums, which bounds its rounding error (the yardstick when
    the exact gradient cancels to ~0, e.g. dq under 'sum' with d = 1).
    """
    out, stats, P, allow, _ = dense_forward(q, k, v, scale, causal, mask, bias, slopes, window,
                                            norm)
    f = np.abs if magnitude else (lambda z: z)
    q, k, v, dout, out, P, scale = f(q), f(k), f(v), f(dout), f(out), f(P), abs(scale)
    dP = dout @ np.swapaxes(v, -1, -2)
    D = (dout * out).sum(-1, keepdims=True)
    diff = dP + D if magnitude else dP - D
    if norm == "softmax":
        dX = P * diff
    elif norm == "sum":
        Z = f(stats[..., None])
        dX = np.where(allow & (Z != 0), diff / np.where(Z != 0, Z, 1), 0)
    else:
        dX = np.where(allow, dP, 0)
    dist = np.abs(np.arange(q.shape[2])[:, None] - np.arange(k.shape[2])[None, :])
    dslopes = (dX * dist).sum((0, 2, 3))
    return (scale * dX @ k, scale * np.swapaxes(dX, -1, -2) @ q, np.swapaxes(P, -1, -2) @ dout,
            dX, dslopes if magnitude else -dslopes)


def rel(got, ref, mag=None):
    """max|got - ref| / max(|ref|, |mag|): relative error against the terms' magnitude."""
    ref = np.asarray(ref, np.float64)
    if not ref.size:
        return 0.0
    scale = max(np.max(np.abs(ref)), 0.0 if mag is None else np.max(np.abs(mag)), 1e-300)
    return np.max(np.abs(got - ref)) / scale


# ------------------------------------------------------------------------ case builder
def make_case(seed, B, H, N, M, d, dv, norm, dtype, mask_kind=None, bias_kind=None, alibi=False):
    rng = np.random.default_rng(seed)
    if norm == "sum":    # keep Z_i = sum_j x_ij away from 0, else 'sum' is ill-conditioned
        q, k = rng.uniform(0.5, 1.5, (B, H, N, d)), rng.uniform(0.5, 1.5, (B, H, M, d))
        bias_lo, slope_hi = 0.0, 0.002
    else:
        q, k = rng.standard_normal((B, H, N, d)), rng.standard_normal((B, H, M, d))
        bias_lo, slope_hi = -1.0, 0.3
    v = rng.standard_normal((B, H, M, dv))
    masks = {None: None, "nm": (N, M), "bhnm": (B, H, N, M), "key": (B, 1, 1, M), "h11": (H, 1, 1)}
    mask = None if masks[mask_kind] is None else rng.random(masks[mask_kind]) > 0.3
    biases = {None: None, "hnm": (H, N, M), "bhnm": (B, H, N, M), "key": (B, 1, 1, M)}
    bias = None if biases[bias_kind] is None else rng.uniform(bias_lo, 1.0, biases[bias_kind])
    slopes = rng.uniform(0, slope_hi, H) if alibi else None
    dout = rng.standard_normal((B, H, N, dv))
    cast = (lambda z: None if z is None else z.astype(dtype))
    return {"q": cast(q), "k": cast(k), "v": cast(v), "dout": cast(dout), "mask": mask,
            "bias": cast(bias), "slopes": cast(slopes), "scale": 1.0 / np.sqrt(d)}


def check_parity(c, causal, window, norm, dtype):
    f64 = {n: (None if c[n] is None else c[n].astype(np.float64))
           for n in ("q", "k", "v", "dout", "bias", "slopes")}
    opts = {"causal": causal, "mask": c["mask"], "bias": c["bias"], "alibi_slopes": c["slopes"],
            "window": window, "normalization": norm}
    before = {n: None if c[n] is None else c[n].copy() for n in ("q", "k", "v", "bias")}
    out, stats = attention_forward(c["q"], c["k"], c["v"], c["scale"], **opts)
    ref_out, ref_stats, P, allow, x = dense_forward(f64["q"], f64["k"], f64["v"], c["scale"],
                                                    causal, c["mask"], f64["bias"], f64["slopes"],
                                                    window, norm)
    tol = TOL[dtype]
    assert out.dtype == dtype and stats.dtype == dtype
    assert rel(out, ref_out, np.abs(P) @ np.abs(f64["v"])) <= tol
    fin = np.isfinite(ref_stats)
    assert np.array_equal(np.isfinite(stats), fin)
    assert rel(stats[fin], ref_stats[fin], np.where(allow, np.abs(x), 0)) <= tol
    grads = attention_backward(c["q"], c["k"], c["v"], out, stats, c["dout"], c["scale"], **opts)
    args = (f64["q"], f64["k"], f64["v"], f64["dout"], c["scale"], causal, c["mask"], f64["bias"],
            f64["slopes"], window, norm)
    refs, mags = dense_backward(*args), dense_backward(*args, magnitude=True)
    names = ("dq", "dk", "dv", "dbias", "dslopes")
    for name, g, r, mag, x in zip(names, grads, refs, mags,
                                  (c["q"], c["k"], c["v"], c["bias"], c["slopes"])):
        if x is None:
            assert g is None, name
            continue
        if name == "dbias":          # the dense gradient summed to the bias's broadcast shape
            axes = tuple(range(4 - x.ndim)) + tuple(4 - x.ndim + i for i, n in enumerate(x.shape) if n == 1)
            r = r.sum(axes, keepdims=True).reshape(x.shape)
            mag = mag.sum(axes, keepdims=True).reshape(x.shape)
        assert g.shape == x.shape and g.dtype == dtype, name
        assert np.all(np.isfinite(g)), name
        assert rel(g, r, mag) <= tol, (name, rel(g, r, mag))
    for n, x in before.items():
        if x is not None:
            np.testing.assert_array_equal(x, c[n])


# ------------------------------------------------------------------------ tests
def _loss_along(t, u, name, base, c, opts):
    """sum(dout * out) at base[name] + t u (the dense reference)."""
    z = {**base, name: base[name] + t * u}
    out = dense_forward(z["q"], z["k"], z["v"], c["scale"], bias=z["bias"], slopes=z["slopes"],
                        **opts)[0]
    return np.sum(out * c["dout"])


def test_dense_reference_gradients():
    """The analytic dense gradient agrees with central differences (directional, float64)."""
    rng = np.random.default_rng(1)
    h = 1e-6
    for norm in NORMS:
        c = make_case(2, 2, 2, 7, 9, 3, 2, norm, np.float64, "bhnm", "bhnm", True)
        opts = {"causal": True, "mask": c["mask"], "window": 5, "norm": norm}
        grads = dense_backward(c["q"], c["k"], c["v"], c["dout"], c["scale"], bias=c["bias"],
                               slopes=c["slopes"], **opts)
        base = {n: c[n] for n in ("q", "k", "v", "bias", "slopes")}
        for name, g in zip(("q", "k", "v", "bias", "slopes"), grads):
            u = rng.standard_normal(base[name].shape)
            numeric = (_loss_along(h, u, name, base, c, opts)
                       - _loss_along(-h, u, name, base, c, opts)) / (2 * h)
            assert abs(numeric - np.sum(g * u)) <= 1e-6 * max(1.0, abs(numeric)), (norm, name)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("causal,window,mask_kind,bias_kind,alibi", [
    (False, None, None, None, False),
    (True, None, "nm", "hnm", False),
    (False, 9, "key", "bhnm", True),
    (False, None, "h11", "key", False),
    (True, 70, "bhnm", None, True),
])
def test_parity_multi_tile(dtype, norm, causal, window, mask_kind, bias_kind, alibi):
    """N, M straddle the 64-row tiles (not multiples), with every support option."""
    c = make_case(3, 2, 2, BQ + 5, 2 * BK + 3, 5, 3, norm, dtype, mask_kind, bias_kind, alibi)
    check_parity(c, causal, window, norm, dtype)


@st.composite
def cases(draw):
    dims = [draw(st.integers(lo, hi)) for lo, hi in ((1, 2), (1, 3), (1, 70), (1, 70), (1, 4),
                                                     (1, 3))]
    norm = draw(st.sampled_from(NORMS))
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    opts = {"mask_kind": draw(st.sampled_from([None, "nm", "bhnm", "key", "h11"])),
            "bias_kind": draw(st.sampled_from([None, "hnm", "bhnm", "key"])),
            "alibi": draw(st.booleans())}
    c = make_case(draw(st.integers(0, 2**31)), *dims, norm, dtype, **opts)
    return c, draw(st.booleans()), draw(st.one_of(st.none(), st.integers(0, 75))), norm, dtype


@given(cases())
def test_parity_hypothesis(case):
    check_parity(*case)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_huge_logits_stay_finite_and_exact(dtype):
    """Logits of +-1e4 (exact integers in both dtypes): the online softmax never overflows."""
    rng = np.random.default_rng(4)
    B, H, N, M = 1, 2, 70, 67
    q = np.zeros((B, H, N, 2))
    q[..., 0] = rng.integers(-100, 101, (B, H, N))
    k = rng.integers(-100, 101, (B, H, M, 2)).astype(np.float64)
    v, dout = rng.standard_normal((B, H, M, 3)), rng.standard_normal((B, H, N, 3))
    assert np.abs(logits(q, k, 1.0, None, None)).max() >= 9000
    out, stats = attention_forward(q.astype(dtype), k.astype(dtype), v.astype(dtype), 1.0,
                                   causal=True)
    ref, ref_stats, P, _, x = dense_forward(q, k, v, 1.0, causal=True)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(stats))
    assert rel(out, ref, P @ np.abs(v)) <= TOL[dtype]
    assert rel(stats, ref_stats, x) <= TOL[dtype]
    grads = attention_backward(q.astype(dtype), k.astype(dtype), v.astype(dtype), out, stats,
                               dout.astype(dtype), 1.0, causal=True)
    refs = dense_backward(q, k, v, dout, 1.0, causal=True)
    # The softmax is nearly one-hot, so dS = P (dP - D) cancels and the exact dq, dk are tiny:
    # measure against the size of the terms, as everywhere.
    mags = dense_backward(q, k, v, dout, 1.0, causal=True, magnitude=True)
    for g, r, mag in zip(grads[:3], refs[:3], mags[:3]):
        assert np.all(np.isfinite(g)) and rel(g, r, mag) <= TOL[dtype]


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fully_masked_rows_give_zeros(norm, dtype):
    c = make_case(5, 1, 2, 70, 66, 3, 2, norm, dtype, "bhnm", "hnm", True)
    c["mask"][:, :, ::7] = False                 # some rows attend to nothing
    check_parity(c, False, None, norm, dtype)
    out, stats = attention_forward(c["q"], c["k"], c["v"], 0.5, mask=c["mask"], bias=c["bias"],
                                   normalization=norm)
    assert np.all(out[:, :, ::7] == 0)
    assert np.all(stats[:, :, ::7] == (-np.inf if norm == "softmax" else 0))
    dq = attention_backward(c["q"], c["k"], c["v"], out, stats, c["dout"], 0.5, mask=c["mask"],
                            bias=c["bias"], normalization=norm)[0]
    assert np.all(dq[:, :, ::7] == 0)
    nothing = np.zeros(c["mask"].shape, bool)    # and with nothing attended at all
    out, stats = attention_forward(c["q"], c["k"], c["v"], 0.5, mask=nothing, normalization=norm)
    assert np.all(out == 0) and not np.any(np.isnan(stats))
    grads = attention_backward(c["q"], c["k"], c["v"], out, stats, c["dout"], 0.5, mask=nothing,
                               bias=c["bias"], alibi_slopes=c["slopes"], normalization=norm)
    assert all(np.all(g == 0) for g in grads)
    # causal with N > M: rows are never empty (j = 0 is always allowed); a window past M empties them
    c = make_case(6, 1, 1, 70, 5, 2, 2, norm, dtype)
    out, _ = attention_forward(c["q"], c["k"], c["v"], 0.5, causal=True, window=3,
                               normalization=norm)
    assert np.all(out[:, :, 8:] == 0)
    check_parity(c, True, 3, norm, dtype)


def test_matches_torch_sdpa():
    torch = pytest.importorskip("torch")
    c = make_case(7, 2, 3, 67, 70, 8, 4, "softmax", np.float64, "bhnm")
    c["mask"][..., 0] = True                      # torch gives NaN on empty rows
    out, _ = attention_forward(c["q"], c["k"], c["v"], c["scale"], causal=False, mask=c["mask"])
    t = torch.nn.functional.scaled_dot_product_attention(
        *(torch.from_numpy(c[n]) for n in ("q", "k", "v")), attn_mask=torch.from_numpy(c["mask"]))
    assert rel(out, t.numpy()) <= 1e-12
    out, _ = attention_forward(c["q"], c["k"], c["v"], c["scale"], causal=True)
    t = torch.nn.functional.scaled_dot_product_attention(
        *(torch.from_numpy(c[n]) for n in ("q", "k", "v")), is_causal=True)
    assert rel(out, t.numpy()) <= 1e-12


def test_thread_count_does_not_change_results():
    """One thread vs all: with B*H < threads, dk/dv go through per-chunk copies summed at the end."""
    c = make_case(9, 1, 1, 2 * BQ + 1, BK + 3, 4, 3, "softmax", np.float64, "nm", "hnm", True)
    opts = {"causal": True, "mask": c["mask"], "bias": c["bias"], "alibi_slopes": c["slopes"]}

    def run():
        out, stats = attention_forward(c["q"], c["k"], c["v"], c["scale"], **opts)
        return (out, *attention_backward(c["q"], c["k"], c["v"], out, stats, c["dout"], c["scale"],
                                         **opts))
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = run()
    finally:
        numba.set_num_threads(threads)
    for a, b in zip(run(), single):
        assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(b))


@pytest.mark.parametrize("N,M", [(0, 5), (4, 0)])
def test_empty_sides(N, M):
    q, k, v = np.ones((1, 2, N, 3)), np.ones((1, 2, M, 3)), np.ones((1, 2, M, 2))
    out, stats = attention_forward(q, k, v, 1.0)
    assert out.shape == (1, 2, N, 2) and np.all(out == 0) and np.all(stats == -np.inf)
    grads = attention_backward(q, k, v, out, stats, np.ones_like(out), 1.0)
    assert [g.shape for g in grads[:3]] == [q.shape, k.shape, v.shape]
    assert all(np.all(g == 0) for g in grads[:3])


def test_bad_arguments_raise():
    q, k, v = np.zeros((1, 2, 4, 3)), np.zeros((1, 2, 5, 3)), np.zeros((1, 2, 5, 2))
    with pytest.raises(DTypeError, match="k is shape"):
        attention_forward(q, k.astype(np.float32), v, 1.0)
    with pytest.raises(DTypeError, match="float32 or float64"):
        attention_forward(q.astype(np.float16), k, v, 1.0)
    with pytest.raises(DTypeError, match="numpy array"):
        attention_forward(q.tolist(), k, v, 1.0)
    with pytest.raises(ShapeError, match="4 dims"):
        attention_forward(q[0], k, v, 1.0)
    with pytest.raises(ShapeError, match="k must have shape"):
        attention_forward(q, k[..., :2], v, 1.0)
    with pytest.raises(ShapeError, match="v must have shape"):
        attention_forward(q, k, v[:, :, :4], 1.0)
    with pytest.raises(DTypeError, match="bool"):
        attention_forward(q, k, v, 1.0, mask=np.ones((4, 5)))
    with pytest.raises(ShapeError, match="mask must broadcast"):
        attention_forward(q, k, v, 1.0, mask=np.ones((5, 4), bool))
    with pytest.raises(ShapeError, match="bias must broadcast"):
        attention_forward(q, k, v, 1.0, bias=np.ones((3, 4, 5)))
    with pytest.raises(ShapeError, match="alibi_slopes"):
        attention_forward(q, k, v, 1.0, alibi_slopes=np.ones(3))
    with pytest.raises(ConfigError, match="normalization"):
        attention_forward(q, k, v, 1.0, normalization="mean")
    with pytest.raises(ConfigError, match="window"):
        attention_forward(q, k, v, 1.0, window=-1)
    with pytest.raises(ConfigError, match="scale"):
        attention_forward(q, k, v, np.nan)
    out, stats = attention_forward(q, k, v, 1.0)
    with pytest.raises(ShapeError, match="dout must have shape"):
        attention_backward(q, k, v, out, stats, out[:, :1], 1.0)


def test_float32_forward_runs_in_float32():
    """No float -> double conversion anywhere in the float32 forward kernel (a Python float literal
    or an int in a select promoted the logits, max and exp loops to float64), and it vectorises."""
    from _ir_helpers import float32_ir_counts
    call = ("q = np.ones((1, 2, 70, 8), np.float32); b = np.zeros((2, 70, 70), np.float32); "
            "mod.attention_forward(q, q, q, 0.3, causal=True, bias=b, alibi_slopes=np.ones(2, np.float32))")
    fpext, vec = float32_ir_counts("itnet_np.transform.fused.attention_numba", "_forward", call)
    assert fpext == 0
    assert vec > 0
