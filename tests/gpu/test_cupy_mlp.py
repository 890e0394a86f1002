"""The tensor-core MLP kernel (gpu/mlp_mma.cu) and its wrapper (gpu/mlp_cupy.py).

Three layers, each able to fail on its own:
- CPU, always: the argument checks (each error names the argument, what it got and what it expects),
  padding, tile choice, shared-memory sizes, the bfloat16 conversions and the supported-subset
  refusals; the float64 reference's gradients against central differences of its forward.
- CPU with g++: mlp_mma.cu compiled as C++ with the warp emulated (ITNET_HOST_EMULATION, see its
  docstring), driven with the wrapper's own operands (prepare_* / finish_*): forward and every
  gradient against the reference, at several sizes, ragged N and M, causal / window, each
  normalisation, both data types; outputs start as NaN so unwritten elements show.
- GPU (``gpu`` marker): the fragment-layout probe, then the same comparisons through CuPy with
  poisoned outputs, and cupy_mlp through the engine.

The reference (model_forward / model_backward) is the formula in float64 with one deliberate rounding,
the kernel's: the products x_ir W_kr are rounded to the data type before the bilinear sum (mlp_mma.cu
rounds them once, by a packed multiply, in the forward and in the backward; NumPy reproduces that bit
for bit, since the float32 product of two 16-bit floats is exact). Its gradients are checked against
central differences of its forward.

Tolerances: a first-order bound E on |kernel - reference| for every entry, propagated through the
formula from the kernel's remaining roundings (forward_bounds, backward_bounds), with u the data type's
unit roundoff (2^-11 float16, 2^-8 bfloat16) and 2^-24 float32's:
  - scores: float32 sums of K + 1 terms and a fast-math activation (relative 2^-20):
        E_s = ((K + 8) 2^-24 + 2^-20) (|b2| + sum_k |W2_hk| |act(pre_k)|);
  - P rounded to the data type before P V (u |P|), e = exp(s - stats) with relative error
    2 E_s + 2^-20 (2 + 1.2 |s - stats|) (__expf's ulp bound); every output rounded once (u |G|);
  - D = dout . out from the rounded out (u sum_c |dout_c| |out_c|), dP exact products in float32;
  - dpre = act' sum_h W2_hk g^h rounded to the data type before the tensor-core products (u |dpre|),
    plus the error of g carried through |act'| sum_h |W2_hk|;
  - each gradient's bound sums the bounds of its terms (|factor| times the error of the other).
The check is |kernel - reference| <= 2 E + 8 sqrt(n) 2^-24 A: the factor 2 covers the second-order
terms, and the slack covers float32 accumulation over n terms with partial sums at most A (the sum of
the magnitudes of the terms, model_backward(..., absolute=True)): n independent roundings of at most
2^-24 A each, 8 standard deviations of their sum.
"""
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from itnet_np.errors import ConfigError, DTypeError, ShapeError
from itnet_np.gpu import mlp_cupy as mc

SOURCE = Path(mc.__file__).with_name("mlp_mma.cu")
NAMES = ("a", "b", "x", "y", "W", "W2", "b2", "v", "w")
U = {"float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}
LIMIT = 48 * 1024                     # the shared memory every device grants without opt-in


# ---- data and the float64 reference ---------------------------------------------------------------------

def encode(values, precision):
    """(kernel array, float64 values): float16 arrays, or uint16 bfloat16 bit patterns."""
    f32 = np.asarray(values, np.float32)
    if precision == "float16":
        arr = f32.astype(np.float16)
        return arr, arr.astype(np.float64)
    bits = mc.f32_to_bf16(np, f32)
    return bits, mc.bf16_to_f32(np, bits).astype(np.float64)


def rounder(precision):
    """The data type's rounding of float64 values that are exact float32 products."""
    def rnd(z):
        return encode(z, precision)[1]
    return rnd


def make_inputs(rng, precision, B, N, M, R, K, H, dv, per_head_w, normalization):
    """Random inputs in the data type: (kernel arrays, float64 values), each a dict over NAMES."""
    shift = 3.0 if normalization == "sum" else 0.0        # keeps Z = sum_j w_j s_ij away from 0
    draws = {"a": ((B, N, K), 1.0), "b": ((B, M, K), 1.0), "x": ((B, N, R), 1.0), "y": ((B, M, R), 1.0),
             "W": ((K, R), 1.0 / np.sqrt(max(R, 1))), "W2": ((H, K), 1.0 / np.sqrt(K)),
             "v": ((B, H, M, dv), 1.0)}
    arrays, values = {}, {}
    for name, (shape, scale) in draws.items():
        arrays[name], values[name] = encode(rng.standard_normal(shape) * scale, precision)
    arrays["b2"], values["b2"] = encode(shift + 0.1 * rng.standard_normal(H), precision)
    w = rng.uniform(0.25, 1.5, (B, H, M) if per_head_w else (B, M))
    w[..., ::7] = 0.0                                     # sources with weight 0
    arrays["w"], values["w"] = encode(w, precision)
    return arrays, values


def activation(name, z):
    """act(z), act'(z) from the published formulas (relu'(0) = 0)."""
    if name == "relu":
        return np.maximum(z, 0.0), (z > 0).astype(z.dtype)
    if name == "gelu_tanh":
        c, k = np.sqrt(2.0 / np.pi), 0.044715
        t = np.tanh(c * (z + k * z ** 3))
        return 0.5 * z * (1 + t), 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * c * (1 + 3 * k * z * z)
    if name == "silu":
        s = 1.0 / (1.0 + np.exp(-z))
        return z * s, s * (1 + z * (1 - s))
    t = np.tanh(z)
    return t, 1 - t * t


def support(N, M, causal, window):
    i, j = np.arange(N)[:, None], np.arange(M)[None, :]
    keep = np.ones((N, M), bool)
    if causal:
        keep &= j <= i
    if window is not None:
        keep &= np.abs(i - j) <= window
    return keep


def model_forward(val, act, normalization, causal, window, rnd):
    """Forward of the formula (module docstring): out, stats and the intermediates the backward needs."""
    a, b, x, y, W, W2, b2, v, w = (val[n] for n in NAMES)
    N, M, H = a.shape[1], b.shape[1], W2.shape[0]
    xw = rnd(x[:, :, None, :] * W[None, None])                                   # (B, N, K, R)
    pre = a[:, :, None, :] + b[:, None, :, :] + np.einsum("bnkr,bmr->bnmk", xw, y)
    f, df = activation(act, pre)
    s = np.einsum("bnmk,hk->bhnm", f, W2) + b2[None, :, None, None]
    keep = support(N, M, causal, window)
    wb = np.broadcast_to(w[:, :, None, :] if w.ndim == 3 else w[:, None, None, :], s.shape)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if normalization == "softmax":
            z = np.where(keep, s, -np.inf)
            m = z.max(-1, keepdims=True)
            m = np.where(np.isfinite(m), m, 0.0)
            e = np.where(keep, np.exp(z - m), 0.0)
            l = (wb * e).sum(-1)
            good = l != 0
            en = np.where(good[..., None], e / np.where(good, l, 1.0)[..., None], 0.0)    # e^{s - stats}
            P = wb * en
            stats = np.where(good, m[..., 0] + np.log(np.where(good, l, 1.0)), -np.inf)
        else:
            q = np.where(keep, wb * s, 0.0)
            Z = q.sum(-1)
            good = Z != 0
            en = None
            P = q
            if normalization == "sum":
                P = np.where(good[..., None], q / np.where(good, Z, 1.0)[..., None], 0.0)
            stats = Z
    out = np.einsum("bhnm,bhmc->bhnc", P, v)
    return dict(out=out, stats=stats, P=P, en=en, s=s, f=f, df=df, keep=keep, wb=wb, good=good,
                normalization=normalization)


def pair_grads(val, fw, dout, absolute=False):
    """g = dL/ds and gw (the per-pair terms of dL/dw) of the formula; ``absolute``: every factor by its
    absolute value and every difference p - q by |p| + |q|."""
    A = np.abs if absolute else (lambda z: z)
    normalization, s, keep, good, wb = (fw[n] for n in ("normalization", "s", "keep", "good", "wb"))
    dP = np.einsum("bhnc,bhmc->bhnm", A(dout), A(val["v"]))
    zero = np.zeros_like(s)
    if normalization == "none":
        return np.where(keep, A(wb) * dP, zero), np.where(keep, A(s) * dP, zero)
    D = np.einsum("bhnc,bhnc->bhn", A(dout), A(fw["out"]))[..., None]
    diff = np.abs(dP) + np.abs(D) if absolute else dP - D
    if normalization == "softmax":          # en = e^{s - stats}: 0 off the support and on empty rows
        return A(wb) * fw["en"] * diff, fw["en"] * diff
    ok = keep & good[..., None]
    base = diff / A(np.where(good, fw["stats"], 1.0))[..., None]
    return np.where(ok, A(wb) * base, zero), np.where(ok, A(s) * base, zero)


def model_backward(val, fw, dout, absolute=False):
    """The gradients of the formula (mlp_mma.cu's docstring), each of its input's shape; ``absolute``:
    the sums of the magnitudes of their terms (as pair_grads)."""
    A = np.abs if absolute else (lambda z: z)
    x, y, W, W2, w = (A(val[n]) for n in ("x", "y", "W", "W2", "w"))
    g, gw = pair_grads(val, fw, dout, absolute)
    dw = gw.sum(2)
    if w.ndim == 2:
        dw = dw.sum(1)
    dpre = A(fw["df"]) * np.einsum("bhnm,hk->bnmk", g, W2)
    return {"a": dpre.sum(2), "b": dpre.sum(1), "x": np.einsum("bnmk,kr,bmr->bnr", dpre, W, y),
            "y": np.einsum("bnmk,kr,bnr->bmr", dpre, W, x), "W": np.einsum("bnmk,bnr,bmr->kr", dpre, x, y),
            "W2": np.einsum("bhnm,bnmk->hk", g, A(fw["f"])), "b2": g.sum((0, 2, 3)),
            "v": np.einsum("bhnm,bhnc->bhmc", A(fw["P"]), A(dout)), "w": dw}


EPS = 2.0 ** -24      # float32's unit roundoff
FAST = 2.0 ** -20     # relative error of the fast exp / divide (CUDA: __expf 2 + 1.2|x| ulp, __fdividef 2)


def slack(n, magnitude):
    """float32 accumulation of n terms whose partial sums are at most ``magnitude``: n roundings of at most
    EPS magnitude each, independent and centred, so 8 standard deviations of their sum."""
    return 8.0 * np.sqrt(n) * EPS * magnitude


def score_error(val, fw):
    """E_s: the kernel's error in s^h_ij (float32 sum of K + 1 terms, fast-math activation)."""
    K = val["W2"].shape[1]
    mag = np.einsum("bnmk,hk->bhnm", np.abs(fw["f"]), np.abs(val["W2"]))
    mag += np.abs(val["b2"])[None, :, None, None]
    return ((K + 8) * EPS + FAST) * mag


def forward_bounds(val, fw, precision):
    """First-order bounds on |kernel - model| for out and stats (module docstring), times 2."""
    u, M = U[precision], fw["s"].shape[-1]
    s, P, out, keep, good, wb = (fw[n] for n in ("s", "P", "out", "keep", "good", "wb"))
    E_s = np.where(keep, score_error(val, fw), 0.0)
    absv, absP = np.abs(val["v"]), np.abs(P)
    Pv = np.einsum("bhnm,bhmc->bhnc", absP, absv)
    rounding = u * (Pv + np.abs(out))                                  # P and out rounded to the data type
    with np.errstate(invalid="ignore", divide="ignore"):
        if fw["en"] is not None:
            lse = np.where(good, fw["stats"], 0.0)[..., None]
            r = np.where(keep, 2 * E_s + FAST * (2 + 1.2 * np.abs(s - lse)), 0.0)   # relative error of P
            E_out = np.einsum("bhnm,bhmc->bhnc", absP * r, absv) + (absP * r).sum(-1)[..., None] * np.abs(out)
            E_stats = (np.where(keep, E_s, 0.0).max(-1) + slack(M, 1.0)
                       + FAST * (1 + np.abs(np.where(good, fw["stats"], 0))))
        else:
            E_stats = (np.abs(wb) * E_s).sum(-1) + slack(M, (np.abs(wb * s) * keep).sum(-1))
            Z = np.where(good, np.abs(fw["stats"]), 1.0)[..., None]
            if fw["normalization"] == "sum":
                term = np.abs(wb) * (E_s + np.abs(s) * E_stats[..., None] / Z) / Z
            else:
                term = np.abs(wb) * E_s
            E_out = np.einsum("bhnm,bhmc->bhnc", np.where(keep, term, 0.0), absv)
    return 2 * (E_out + rounding) + slack(M, Pv), 2 * E_stats, E_s, E_stats


def backward_bounds(val, fw, dout, precision, E_s, E_stats):
    """First-order bounds on |kernel - model| for each gradient (module docstring), times 2, plus the
    float32 accumulation slack on the gradient's magnitude model_backward(..., absolute=True)."""
    u, normalization = U[precision], fw["normalization"]
    s, P, keep, good, wb, df, f = (fw[n] for n in ("s", "P", "keep", "good", "wb", "df", "f"))
    B, H, N, M = s.shape
    K, DV = val["W2"].shape[1], dout.shape[-1]
    x, y, W, W2 = (np.abs(val[n]) for n in ("x", "y", "W", "W2"))
    ad, aw = np.abs(dout), np.abs(wb)
    dP = np.einsum("bhnc,bhmc->bhnm", dout, val["v"])
    E_dP = slack(DV, np.einsum("bhnc,bhmc->bhnm", ad, np.abs(val["v"])))
    ok = keep & good[..., None] if normalization != "none" else keep
    with np.errstate(invalid="ignore", divide="ignore"):
        if normalization == "none":
            E_g, E_gw, E_P = aw * E_dP, E_s * np.abs(dP) + np.abs(s) * E_dP, aw * E_s
        else:
            D_abs = np.einsum("bhnc,bhnc->bhn", ad, np.abs(fw["out"]))[..., None]
            diff = dP - np.einsum("bhnc,bhnc->bhn", dout, fw["out"])[..., None]
            E_diff = E_dP + u * D_abs + slack(DV, D_abs)              # D from the rounded out
            if normalization == "softmax":
                lse = np.where(good, fw["stats"], 0.0)[..., None]
                en = fw["en"]
                E_e = en * (E_s + E_stats[..., None] + FAST * (2 + 1.2 * np.abs(s - lse)))
                E_gw = E_e * np.abs(diff) + en * E_diff
                E_g, E_P = aw * E_gw, aw * E_e
            else:
                Z = np.where(good, np.abs(fw["stats"]), 1.0)[..., None]
                rz = E_stats[..., None] / Z
                base = diff / Z
                E_base = E_diff / Z + np.abs(base) * rz
                E_g, E_gw = aw * E_base, E_s * np.abs(base) + np.abs(s) * E_base
                E_P = aw * (E_s + np.abs(s) * rz) / Z
    E_g, E_gw, E_P = (np.where(ok, z, 0.0) for z in (E_g, E_gw, E_P))
    grads = model_backward(val, fw, dout)
    size = model_backward(val, fw, dout, absolute=True)
    g = pair_grads(val, fw, dout)[0]
    dpre = df * np.einsum("bhnm,hk->bnmk", g, val["W2"])
    E_dpre = np.abs(df) * np.einsum("bhnm,hk->bnmk", E_g, W2) + (FAST + u) * np.abs(dpre)
    E_dw = E_gw.sum(2)
    if val["w"].ndim == 2:
        E_dw = E_dw.sum(1)
    E = {"a": E_dpre.sum(2), "b": E_dpre.sum(1), "x": np.einsum("bnmk,kr,bmr->bnr", E_dpre, W, y),
         "y": np.einsum("bnmk,kr,bnr->bmr", E_dpre, W, x), "W": np.einsum("bnmk,bnr,bmr->kr", E_dpre, x, y),
         "W2": np.einsum("bhnm,bnmk->hk", E_g + FAST * np.abs(g), np.abs(f)),
         "b2": E_g.sum((0, 2, 3)), "v": np.einsum("bhnm,bhnc->bhmc", E_P + u * np.abs(P), ad), "w": E_dw}
    terms = {"a": M, "b": N, "x": M * K, "y": N * K, "W": B * N * M, "W2": B * N * M, "b2": B * N * M, "v": N,
             "w": N * H}
    return grads, {n: 2 * (E[n] + u * np.abs(grads[n])) + slack(terms[n], size[n]) for n in NAMES}


def decode(arr, precision):
    if precision == "bfloat16" and arr.dtype == np.uint16:
        return mc.bf16_to_f32(np, arr).astype(np.float64)
    return np.asarray(arr, np.float64)


def assert_within(name, got, want, bound):
    got = np.asarray(got, np.float64)
    assert got.shape == want.shape, f"{name}: shape {got.shape}, expected {want.shape}"
    bad = np.count_nonzero(~np.isfinite(got))
    assert bad == 0, f"{name}: {bad} non-finite entries (unwritten?)"
    err = np.abs(got - want)
    if err.size == 0:
        return
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert (err <= bound).all(), (f"{name}: |error| {err[worst]:.3e} > bound {bound[worst]:.3e} at {worst} "
                                  f"(kernel {got[worst]:.6g}, reference {want[worst]:.6g})")


def check_forward(out, stats, val, fw, precision):
    """Returns (E_s, E_stats) for check_backward."""
    out_bound, stats_bound, E_s, E_stats = forward_bounds(val, fw, precision)
    assert_within("out", decode(out, precision), fw["out"], out_bound)
    stats = np.asarray(stats, np.float64)
    want = fw["stats"]
    assert np.array_equal(np.isneginf(stats), np.isneginf(want)), "stats: -inf (empty rows) differ"
    fin = np.isfinite(want)
    assert_within("stats", stats[fin], want[fin], stats_bound[fin])
    return E_s, E_stats


def check_backward(grads, val, fw, dout, precision, errors):
    want, bound = backward_bounds(val, fw, dout, precision, *errors)
    for name in NAMES:
        assert grads[name].dtype == (np.float16 if precision == "float16" else np.uint16), name
        assert_within(f"d{name}", decode(grads[name], precision), want[name], bound[name])


# ---- CPU: the reference itself ----------------------------------------------------------------------

@pytest.mark.parametrize("normalization", ["softmax", "sum", "none"])
@pytest.mark.parametrize("act", ["gelu_tanh", "silu", "tanh"])
def test_reference_gradients_match_central_differences(normalization, act):
    """model_backward against central differences of model_forward (float64, no rounding) along a
    random direction per input: <dL/dz, d> = (L(z + h d) - L(z - h d)) / 2h + O(h^2)."""
    rng = np.random.default_rng(7)
    _, val = make_inputs(rng, "float16", 1, 5, 6, 3, 4, 2, 3, True, normalization)
    dout = rng.standard_normal((1, 2, 5, 3))
    ident = (lambda z: z)

    def loss(vals):
        return float((model_forward(vals, act, normalization, True, 2, ident)["out"] * dout).sum())

    grads = model_backward(val, model_forward(val, act, normalization, True, 2, ident), dout)
    h = 1e-5
    for name in NAMES:
        d = rng.standard_normal(val[name].shape)
        plus, minus = dict(val), dict(val)
        plus[name], minus[name] = val[name] + h * d, val[name] - h * d
        fd = (loss(plus) - loss(minus)) / (2 * h)
        an = float((grads[name] * d).sum())
        assert abs(fd - an) <= 1e-6 * (1 + abs(an)), (name, fd, an)


# ---- CPU: checks, sizes, tiles ---------------------------------------------------------------------

def small_arrays(precision="float16", B=2, N=5, M=7, R=3, K=6, H=2, dv=4, per_head_w=False):
    return make_inputs(np.random.default_rng(0), precision, B, N, M, R, K, H, dv, per_head_w, "softmax")[0]


def call_check(arrays, **opts):
    opts.setdefault("act", "gelu_tanh")
    opts.setdefault("normalization", "softmax")
    return mc.check_arguments("op", *(arrays[n] for n in NAMES), **opts)


def test_check_accepts_float16_and_reports_the_sizes():
    info = call_check(small_arrays(per_head_w=True), causal=True, window=3)
    assert info == dict(precision="float16", B=2, N=5, M=7, R=3, K=6, H=2, dv=4, hw=2, act=1, mode=0,
                        causal=True, window=3)
    assert call_check(small_arrays())["hw"] == 1


def test_uint16_is_bfloat16_only_when_asked():
    arrays = small_arrays("bfloat16")
    assert call_check(arrays, precision="bfloat16")["precision"] == "bfloat16"
    with pytest.raises(DTypeError, match=r"a is shape \(2, 5, 6\) uint16.*only with precision='bfloat16'"):
        call_check(arrays)
    with pytest.raises(DTypeError, match=r"'bfloat16' needs uint16.*a is shape \(2, 5, 6\) float16"):
        call_check(small_arrays(), precision="bfloat16")
    with pytest.raises(ConfigError, match=r"precision must be None, 'float16' or 'bfloat16', got 'fp8'"):
        call_check(small_arrays(), precision="fp8")


def test_other_dtypes_and_mixtures_name_the_argument():
    arrays = {n: z.astype(np.float32) for n, z in small_arrays().items()}
    with pytest.raises(DTypeError, match=r"a must be one of: float16 arrays, or uint16 .*"
                                         r"got shape \(2, 5, 6\) float32"):
        call_check(arrays)
    mixed = small_arrays()
    mixed["v"] = mixed["v"].astype(np.float32)
    with pytest.raises(DTypeError, match=r"v is shape \(2, 2, 7, 4\) float32 but a is float16"):
        call_check(mixed)


@pytest.mark.parametrize("name,shape,expected", [
    ("b", (2, 7, 5), r"b must have shape \(2, 7, 6\)"),
    ("x", (2, 4, 3), r"x must have shape \(2, 5, 3\)"),
    ("W", (6, 2), r"W must have shape \(6, 3\)"),
    ("b2", (3,), r"b2 must have shape \(2,\)"),
    ("v", (2, 2, 6, 4), r"v must have shape \(2, 2, 7, dv\)"),
    ("w", (2, 6), r"w must have shape \(2, 7\) or \(2, 2, 7\)"),
])
def test_shapes_name_the_argument_and_the_expected_shape(name, shape, expected):
    arrays = small_arrays()
    arrays[name] = np.zeros(shape, np.float16)
    with pytest.raises(ShapeError, match=expected + r".*got.*" + r"\(" + ", ".join(map(str, shape))):
        call_check(arrays)


def test_batch_beyond_the_grid_is_refused():
    arrays = small_arrays(B=1)
    big = {n: (np.broadcast_to(z, (65536,) + z.shape[1:]) if n in ("a", "b", "x", "y", "v", "w") else z)
           for n, z in arrays.items()}
    with pytest.raises(ConfigError, match=r"batch size B = 65536 must be at most 65535"):
        call_check(big)


def test_ndim_errors_name_the_argument():
    arrays = small_arrays()
    arrays["y"] = np.zeros((7, 3), np.float16)
    with pytest.raises(ShapeError, match=r"y must have 3 dims, got shape \(7, 3\) float16"):
        call_check(arrays)


def test_options_outside_the_supported_subset_are_refused():
    arrays = small_arrays()
    with pytest.raises(ConfigError, match=r"mask is not supported.*got shape \(5, 7\) bool.*expected None"):
        call_check(arrays, mask=np.ones((5, 7), bool))
    with pytest.raises(ConfigError, match=r"per-row ranges are not supported.*expected None"):
        call_check(arrays, ranges=(np.zeros(5, int), np.full(5, 7)))
    with pytest.raises(ConfigError, match=r"act must be one of \['gelu_tanh', 'relu', 'silu', 'tanh'\], "
                                          r"got 'elu'"):
        call_check(arrays, act="elu")
    with pytest.raises(ConfigError, match=r"normalization must be one of \['none', 'softmax', 'sum'\], "
                                          r"got 'max'"):
        call_check(arrays, normalization="max")
    for bad in (-1, 2.0, True):
        with pytest.raises(ConfigError, match=r"window must be None or an int >= 0, got " + repr(bad)):
            call_check(arrays, window=bad)


@pytest.mark.parametrize("sizes,expected", [
    ((0, 1, 1, 1), (16, 16, 1, 64)), ((1, 16, 1, 64), (16, 16, 1, 64)), ((17, 17, 2, 1), (32, 32, 2, 32)),
    ((33, 100, 3, 16), (64, 112, 4, 16)), ((64, 128, 4, 16), (64, 128, 4, 16)),
])
def test_padding_to_the_compiled_shapes(sizes, expected):
    assert mc.padded_sizes(*sizes) == expected


@pytest.mark.parametrize("sizes,match", [
    ((65, 16, 1, 8), r"R \(the rank of x and y\) must be an int in \[0, 64\], got 65"),
    ((16, 0, 1, 8), r"K \(the hidden units\) must be an int in \[1, 128\], got 0"),
    ((16, 129, 1, 8), r"K \(the hidden units\) must be an int in \[1, 128\], got 129"),
    ((16, 16, 5, 8), r"heads must be an int in \[1, 4\], got 5"),
    ((16, 16, 3, 17), r"dv must be an int in \[1, 16\] for 3 head\(s\) \(padded to 4.*got 17"),
    ((16, 16, 1, 65), r"dv must be an int in \[1, 64\] for 1 head\(s\).*got 65"),
])
def test_sizes_outside_the_subset_name_the_size(sizes, match):
    with pytest.raises(ConfigError, match=match):
        mc.padded_sizes(*sizes)


def test_shared_memory_sizes_count_each_region():
    """The forward of R=16, K=32, H=2, DV=32 with 4 warps and 64 columns, region by region (bytes)."""
    regions = [32 * 24 * 2, 2 * 32 * 4, 16, 64 * 40 * 2, 64 * 24 * 2, 64 * 40 * 2, 2 * 64 * 40 * 2,
               2 * 64 * 4]
    assert mc.forward_shared_bytes(16, 32, 2, 32, 4, 64) == sum(regions) == 25872
    # one head: b2 takes 4 bytes, aligned up to 16
    one_head = [16 * 24 * 2, 64, 16, 16 * 24 * 2, 16 * 24 * 2, 16 * 24 * 2, 16 * 72 * 2, 64]
    assert mc.forward_shared_bytes(16, 16, 1, 64, 1, 16) == sum(one_head)


def test_tiles_take_the_largest_that_fits_and_refuse_when_none_does():
    t = mc.mlp_tiles(16, 32, 2, 32, "float16", 48 * 1024)
    assert (t.R, t.K, t.H, t.DV) == (16, 32, 2, 32)
    assert (t.forward_warps, t.forward_cols, t.backward_warps, t.backward_rows) == (4, 64, 4, 32)
    assert t.forward_bytes == mc.forward_shared_bytes(16, 32, 2, 32, 4, 64) <= 48 * 1024
    assert t.backward_bytes <= 48 * 1024 < mc.backward_shared_bytes(16, 32, 2, 32, 4, 64)
    small = mc.mlp_tiles(64, 64, 4, 16, "bfloat16", 48 * 1024)     # 4 warps x 64 rows would need 98336 bytes
    assert (small.backward_warps, small.backward_rows) == (1, 16)
    assert (small.forward_warps, small.forward_cols) == (4, 32)
    assert small.backward_bytes == mc.backward_shared_bytes(64, 64, 4, 16, 1, 16) <= 48 * 1024
    with pytest.raises(ConfigError, match=r"backward kernel needs 83488 bytes.*R=64, K=128, H=4, DV=16.*"
                                          r"smallest tile \(1, 16\), more than shared_limit=49152"):
        mc.mlp_tiles(64, 128, 4, 16, "float16", 48 * 1024)
    with pytest.raises(ConfigError, match=r"precision must be one of \('float16', 'bfloat16'\), "
                                          r"got 'float32'"):
        mc.mlp_tiles(16, 16, 1, 16, "float32", 48 * 1024)
    with pytest.raises(ConfigError, match=r"shared_limit must be a positive int \(bytes\), got 0"):
        mc.mlp_tiles(16, 16, 1, 16, "float16", 0)


def test_problem_says_why_in_words_and_nothing_when_supported():
    assert mc.problem(16, 32, 2, 32, dtype=np.float16) == ""
    assert mc.problem(16, 32, 2, 32, dtype=np.uint16, precision="bfloat16") == ""
    assert "mask" in mc.problem(16, 32, 2, 32, dtype=np.float16, mask=np.ones((2, 2), bool))
    assert "ranges" in mc.problem(16, 32, 2, 32, dtype=np.float16, ranges=(0, 1))
    assert "float32 data" in mc.problem(16, 32, 2, 32, dtype=np.float32)
    assert "uint16 data" in mc.problem(16, 32, 2, 32, dtype=np.uint16)
    assert "activation 'elu'" in mc.problem(16, 32, 2, 32, dtype=np.float16, act="elu")
    assert "heads must be an int in [1, 4], got 8" in mc.problem(16, 32, 8, 8, dtype=np.float16)


def test_bfloat16_conversions_round_to_nearest_even():
    one = 0x3F800000
    cases = {one: 0x3F80, one + 0x7FFF: 0x3F80, one + 0x8000: 0x3F80,        # tie: stays even
             one + 0x18000: 0x3F82, one + 0x8001: 0x3F81,                     # tie up to even; above a tie
             0x7F7FFFFF: 0x7F80, 0xFF800000: 0xFF80, 0x00000001: 0x0000}       # overflow to inf; -inf; tiny
    bits = np.array(list(cases), np.uint32)
    got = mc.f32_to_bf16(np, bits.view(np.float32))
    np.testing.assert_array_equal(got, np.array(list(cases.values()), np.uint16))
    nan = mc.f32_to_bf16(np, np.array([np.nan, -np.nan], np.float32))
    assert np.isnan(mc.bf16_to_f32(np, nan)).all()
    values = np.array([1.0, -2.5, 3.140625, 0.0], np.float32)                 # exact in bfloat16
    np.testing.assert_array_equal(mc.bf16_to_f32(np, mc.f32_to_bf16(np, values)), values)


def test_cupy_mlp_refuses_mask_and_ranges_before_anything_runs():
    arrays = small_arrays()
    with pytest.raises(ConfigError, match="cupy_mlp: mask is not supported"):
        mc.cupy_mlp(*(arrays[n] for n in NAMES), act="silu", mask=np.ones((5, 7), bool))
    with pytest.raises(ConfigError, match="cupy_mlp: ranges is not supported"):
        mc.cupy_mlp(*(arrays[n] for n in NAMES), act="silu", ranges=(np.zeros(5, int), np.full(5, 7)))


def test_launch_wrappers_need_cupy_arrays():
    arrays = small_arrays()
    with pytest.raises((ConfigError, DTypeError), match=r"cupy"):
        mc.mlp_forward_tc(*(arrays[n] for n in NAMES))


# ---- CPU with g++: the host emulation of the kernels -----------------------------------------------

@pytest.fixture(scope="session")
def emulator(tmp_path_factory):
    """emulator(precision, R, H, DV) -> path of mlp_mma.cu built as a host program for that shape."""
    cxx = shutil.which("g++")
    if cxx is None:
        pytest.skip("g++ not found: the host emulation of mlp_mma.cu needs a C++17 compiler")
    root = tmp_path_factory.mktemp("mlp_mma_emulation")
    built = {}

    def build(precision, R, H, DV):
        key = (precision, R, H, DV)
        if key not in built:
            exe = root / f"mlp_{precision}_{R}_{H}_{DV}"
            cmd = [cxx, "-std=c++17", "-O1", "-x", "c++", "-DITNET_HOST_EMULATION", "-DITNET_EMULATION_MAIN",
                   f"-DEMU_T={mc.TYPE_NAMES[precision]}", f"-DEMU_R={R}", f"-DEMU_H={H}", f"-DEMU_DV={DV}",
                   str(SOURCE), "-o", str(exe)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            assert proc.returncode == 0, proc.stderr[-4000:]
            built[key] = exe
        return built[key]
    return build


def _run(emulator, launch, command, workdir, operands, names):
    t, info = launch.tiles, launch.info
    workdir.mkdir(exist_ok=True)
    for name, z in zip(names, operands):
        np.ascontiguousarray(z).tofile(workdir / f"{name}.bin")
    N, M, K, hw, act, mode, causal, window, tile = (int(s) for s in launch.scalars)
    numbers = (info["B"], N, M, K, hw, act, mode, causal, window, launch.block[0] // 32, tile)
    exe = emulator(info["precision"], t.R, t.H, t.DV)
    args = [str(exe), command, str(workdir)] + [str(z) for z in numbers]
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]


def emulate(emulator, workdir, arrays, dout=None, shared_limit=LIMIT, **opts):
    """The wrapper's forward (and, given dout, backward) with the kernels run by the host emulation."""
    args = [arrays[n] for n in NAMES]
    data = np.uint16 if opts.get("precision") == "bfloat16" else np.float16
    fwd = mc.prepare_forward(np, *args, shared_limit=shared_limit, **opts)
    _run(emulator, fwd, "forward", workdir, fwd.operands, NAMES)
    t, info = fwd.tiles, fwd.info
    B, N, M = info["B"], info["N"], info["M"]
    out = np.fromfile(workdir / "out.bin", data).reshape(B, t.H, N, t.DV)
    stats = np.fromfile(workdir / "lse.bin", np.float32).reshape(B, t.H, N)
    out, stats = mc.finish_forward(np, fwd, out, stats)
    if dout is None:
        return out, stats, None
    bwd = mc.prepare_backward(np, *args, out, stats, dout, shared_limit=shared_limit, **opts)
    _run(emulator, bwd, "backward", workdir, bwd.operands, NAMES + ("dout", "stats", "dd"))
    shapes = [z.shape for z in mc.backward_buffers(np, bwd, data)]
    dtypes = (np.float32, np.float32, data, data, data, np.float32, np.float32)
    files = ("da", "dx", "db", "dy", "dv", "dw", "wpart")
    buffers = [np.fromfile(workdir / f"{f}.bin", dt).reshape(sh) for f, dt, sh in zip(files, dtypes, shapes)]
    return out, stats, mc.finish_backward(np, bwd, arrays["w"].shape, *buffers)


# (precision, B, N, M, R, K, heads, dv, per-head w, act, normalization, causal, window)
EMULATED = [
    ("float16", 2, 37, 45, 16, 32, 2, 32, False, "gelu_tanh", "softmax", False, None),
    ("float16", 1, 70, 33, 10, 20, 2, 20, True, "silu", "softmax", True, None),
    ("float16", 2, 29, 29, 0, 16, 1, 48, False, "relu", "softmax", True, 4),
    ("float16", 1, 40, 52, 16, 48, 3, 16, True, "tanh", "sum", False, 17),
    ("float16", 1, 33, 21, 16, 16, 2, 32, False, "silu", "none", True, None),
    ("bfloat16", 2, 24, 37, 32, 24, 4, 16, True, "gelu_tanh", "softmax", False, None),
    ("bfloat16", 1, 35, 30, 16, 16, 1, 64, False, "tanh", "none", False, 1),
    ("float16", 1, 20, 20, 64, 64, 1, 16, False, "gelu_tanh", "softmax", True, 0),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", EMULATED, ids=lambda c: "-".join(str(z) for z in c))
def test_emulated_kernels_match_the_reference(case, emulator, tmp_path):
    precision, B, N, M, R, K, H, dv, per_head, act, normalization, causal, window = case
    rng = np.random.default_rng(EMULATED.index(case))
    arrays, val = make_inputs(rng, precision, B, N, M, R, K, H, dv, per_head, normalization)
    dout_arr, dout = encode(rng.standard_normal((B, H, N, dv)), precision)
    opts = dict(act=act, normalization=normalization, causal=causal, window=window, precision=precision)
    out, stats, grads = emulate(emulator, tmp_path, arrays, dout_arr, **opts)
    fw = model_forward(val, act, normalization, causal, window, rounder(precision))
    errors = check_forward(out, stats, val, fw, precision)
    check_backward(grads, val, fw, dout, precision, errors)


def test_emulated_smallest_tiles_and_rows_with_no_source(emulator, tmp_path):
    """The smallest tiles (a shared-memory limit that admits no larger backward tile: 16-column forward
    tiles, one-warp backward CTAs with 16-row tiles), and a causal window that leaves the query rows
    i >= M + 5 with no source: out 0, stats -inf."""
    rng = np.random.default_rng(3)
    R, K, H, dv, N, M = 16, 16, 1, 16, 30, 12
    limit = max(mc.forward_shared_bytes(R, K, H, 64, 1, 16), mc.backward_shared_bytes(R, K, H, 64, 1, 16))
    t = mc.mlp_tiles(R, K, H, dv, "float16", limit)
    assert (t.forward_warps, t.forward_cols, t.backward_warps, t.backward_rows) == (4, 16, 1, 16)
    arrays, val = make_inputs(rng, "float16", 2, N, M, R, K, H, dv, False, "softmax")
    dout_arr, dout = encode(rng.standard_normal((2, H, N, dv)), "float16")
    out, stats, grads = emulate(emulator, tmp_path, arrays, dout_arr, shared_limit=limit, act="silu",
                                normalization="softmax", causal=True, window=5)
    fw = model_forward(val, "silu", "softmax", True, 5, rounder("float16"))
    assert np.isneginf(stats[:, :, M + 5:]).all() and (out[:, :, M + 5:] == 0).all()
    errors = check_forward(out, stats, val, fw, "float16")
    check_backward(grads, val, fw, dout, "float16", errors)


def test_emulated_shared_sizes_match_the_wrapper(emulator):
    exe = emulator("float16", 16, 2, 32)
    for K, warps, cols, rows in ((16, 4, 64, 64), (48, 2, 32, 16), (128, 1, 16, 16)):
        command = [str(exe), "sizes", str(K), str(warps), str(cols), str(rows)]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
        assert [int(z) for z in out] == [mc.forward_shared_bytes(16, K, 2, 32, warps, cols),
                                         mc.backward_shared_bytes(16, K, 2, 32, warps, rows)]


def test_emulated_probe_follows_the_documented_layouts(emulator, tmp_path):
    """The probe under the emulation: checks the probe's own index arithmetic (the GPU test reruns it on
    the hardware, where it checks the layouts themselves)."""
    A, B_, D, At = run_probe_host(emulator, tmp_path)
    np.testing.assert_allclose(D, A @ B_, rtol=0, atol=1e-12 * (np.abs(A) @ np.abs(B_)).max())
    np.testing.assert_array_equal(At, A.T)


def probe_inputs():
    rng = np.random.default_rng(11)
    A = rng.integers(-8, 9, (16, 16)) / 8.0                    # exact in float16, exact products and sums
    B_ = rng.integers(-8, 9, (16, 8)) / 8.0
    return A, B_


def run_probe_host(emulator, tmp_path):
    A, B_ = probe_inputs()
    A.astype(np.float16).tofile(tmp_path / "A.bin")
    B_.astype(np.float16).tofile(tmp_path / "B.bin")
    subprocess.run([str(emulator("float16", 16, 2, 32)), "probe", str(tmp_path)], check=True)
    D = np.fromfile(tmp_path / "D.bin", np.float32).reshape(16, 8).astype(np.float64)
    At = np.fromfile(tmp_path / "At.bin", np.float16).reshape(16, 16).astype(np.float64)
    return A, B_, D, At


# ---- GPU ------------------------------------------------------------------------------------------

def gpu_launch(cp, launch, extra):
    mc._launch(launch, launch.operands + extra)
    cp.cuda.runtime.deviceSynchronize()


def gpu_run(cp, arrays, dout, **opts):
    """The wrapper's forward and backward through CuPy with every output poisoned (NaN) first."""
    limit = int(cp.cuda.Device().attributes.get("MaxSharedMemoryPerBlockOptin", LIMIT))
    dev = {n: cp.asarray(z) for n, z in arrays.items()}
    args = [dev[n] for n in NAMES]
    data = dev["a"].dtype
    poison = 0xFFFF if data == cp.uint16 else np.nan
    fwd = mc.prepare_forward(cp, *args, shared_limit=limit, **opts)
    t, info = fwd.tiles, fwd.info
    out = cp.full((info["B"], t.H, info["N"], t.DV), poison, data)
    stats = cp.full((info["B"], t.H, info["N"]), np.nan, cp.float32)
    gpu_launch(cp, fwd, (out, stats))
    out, stats = mc.finish_forward(cp, fwd, out, stats)
    bwd = mc.prepare_backward(cp, *args, out, stats, cp.asarray(dout), shared_limit=limit, **opts)
    buffers = list(mc.backward_buffers(cp, bwd, data))
    for k in range(2, 7):                        # db, dy, dv, dw, wpart: written, not accumulated
        buffers[k].fill(poison if buffers[k].dtype == data else np.nan)
    gpu_launch(cp, bwd, tuple(buffers))
    grads = mc.finish_backward(cp, bwd, dev["w"].shape, *buffers)
    return cp.asnumpy(out), cp.asnumpy(stats), {n: cp.asnumpy(g) for n, g in grads.items()}


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_gpu_probe_checks_the_fragment_layouts(precision):
    """mma.sync m16n8k16, the accumulator -> A-operand conversion and movmatrix, on the hardware."""
    from itnet_np.gpu._rawmodule import cupy, raw_kernel
    cp = cupy()
    A, B_ = probe_inputs()
    enc = [cp.asarray(encode(z, precision)[0]) for z in (A, B_)]
    D = cp.full((16, 8), np.nan, cp.float32)
    At = cp.full((16, 16), 0xFFFF, enc[0].dtype)
    raw_kernel(mc.SOURCE, f"mlp_mma_probe<{mc.TYPE_NAMES[precision]}>")((1,), (32,), (enc[0], enc[1], D, At))
    np.testing.assert_array_equal(cp.asnumpy(D).astype(np.float64), A @ B_)      # exact: eighths, short sums
    np.testing.assert_array_equal(decode(cp.asnumpy(At), precision), A.T)


@pytest.mark.gpu
@pytest.mark.parametrize("case", EMULATED, ids=lambda c: "-".join(str(z) for z in c))
def test_gpu_kernels_match_the_reference(case):
    from itnet_np.gpu._rawmodule import cupy
    cp = cupy()
    precision, B, N, M, R, K, H, dv, per_head, act, normalization, causal, window = case
    for seed in (0, 1):                                    # fresh inputs, and a larger batch the second time
        rng = np.random.default_rng(seed)
        B2 = B + 2 * seed
        arrays, val = make_inputs(rng, precision, B2, N, M, R, K, H, dv, per_head, normalization)
        dout_arr, dout = encode(rng.standard_normal((B2, H, N, dv)), precision)
        opts = dict(act=act, normalization=normalization, causal=causal, window=window, precision=precision)
        out, stats, grads = gpu_run(cp, arrays, dout_arr, **opts)
        fw = model_forward(val, act, normalization, causal, window, rounder(precision))
        errors = check_forward(out, stats, val, fw, precision)
        check_backward(grads, val, fw, dout, precision, errors)


@pytest.mark.gpu
@pytest.mark.parametrize("N,M", [(256, 256), (300, 190)])
def test_gpu_kernels_at_larger_sizes(N, M):
    from itnet_np.gpu._rawmodule import cupy
    cp = cupy()
    rng = np.random.default_rng(5)
    arrays, val = make_inputs(rng, "float16", 1, N, M, 16, 32, 2, 32, False, "softmax")
    dout_arr, dout = encode(rng.standard_normal((1, 2, N, 32)), "float16")
    opts = dict(act="gelu_tanh", normalization="softmax", causal=True, window=None, precision="float16")
    out, stats, grads = gpu_run(cp, arrays, dout_arr, **opts)
    fw = model_forward(val, "gelu_tanh", "softmax", True, None, rounder("float16"))
    errors = check_forward(out, stats, val, fw, "float16")
    check_backward(grads, val, fw, dout, "float16", errors)


@pytest.mark.gpu
def test_gpu_cupy_mlp_is_one_engine_node_with_the_kernel_gradients():
    import itnet_np as itn
    from itnet_np.gpu._rawmodule import cupy
    cp = cupy()
    rng = np.random.default_rng(9)
    arrays, val = make_inputs(rng, "float16", 2, 33, 40, 16, 32, 2, 16, True, "softmax")
    dout_arr, dout = encode(rng.standard_normal((2, 2, 33, 16)), "float16")
    tensors = {n: itn.tensor(cp.asarray(z), requires_grad=True) for n, z in arrays.items()}
    out = mc.cupy_mlp(*(tensors[n] for n in NAMES), act="silu", causal=True, window=6)
    (out * itn.tensor(cp.asarray(dout_arr))).sum().backward()
    fw = model_forward(val, "silu", "softmax", True, 6, rounder("float16"))
    errors = check_forward(cp.asnumpy(out.data), fw["stats"].astype(np.float32), val, fw, "float16")
    check_backward({n: cp.asnumpy(tensors[n].grad.data) for n in NAMES}, val, fw, dout, "float16", errors)
