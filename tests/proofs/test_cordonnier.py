"""Cordonnier et al.'s convolution as attention (itnet_np.proofs.cordonnier), float64, against the
independent conv2d_ref: error <= 2 N_h M (theta_3(e^-a)^2 - 1) at every alpha, log-error slope -1 within
the band derived from the same expansion, exactness (and gradients) at large alpha, the padding zeros
must be keys, the reverse map (conv weights) and the error messages.
"""
import math

import numpy as np
import pytest
from _proof_helpers import arr, close, grad_check, seeds
from hypothesis import given
from hypothesis import strategies as st
from itnet_np.proofs import cordonnier as A
from itnet_np.proofs import reference as R

from itnet_np import transform as T
from itnet_np.autograd.tensor import Tensor
from itnet_np.errors import ConfigError, ShapeError


# ----- Cordonnier: convolution as attention ------------------------------------------------------
def test_theta3_against_the_jacobi_product_and_two_squares():
    for alpha in (0.05, 0.5, 1.0, 3.0, 10.0):
        qq = math.exp(-alpha)
        m = np.arange(1, 4000)
        product = np.prod((1 - qq ** (2 * m)) * (1 + qq ** (2 * m - 1)) ** 2)       # Jacobi triple product
        np.testing.assert_allclose(1 + A.theta3_minus_one(alpha), product, rtol=1e-13)
    alpha, n = 2.0, np.arange(-30, 31)                                              # r_2(N) counts a^2 + b^2 = N
    r2 = np.bincount((n[:, None] ** 2 + n[None] ** 2).ravel())[1:200]
    want = np.sum(r2 * np.exp(-alpha * np.arange(1, 200)))
    np.testing.assert_allclose(A.cordonnier_bound(alpha, 1, 0.5), want, rtol=1e-13)
    with pytest.raises(ConfigError, match="alpha"):
        A.theta3_minus_one(0.0)


@st.composite
def conv_cases(draw):
    kh, kw, groups = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    stride, dilation = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    padding = draw(st.sampled_from(["same", 0, 1, 2])) if stride == 1 else draw(st.integers(0, 2))
    H, W = draw(st.integers(2, 5)) + dilation * (kh - 1), draw(st.integers(2, 5)) + dilation * (kw - 1)
    rng = np.random.default_rng(draw(seeds))
    x, w = rng.standard_normal((2, c_in, H, W)), rng.standard_normal((c_out, c_in // groups, kh, kw))
    b = rng.standard_normal(c_out) if draw(st.booleans()) else None
    return x, w, b, {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}


ALPHAS = np.arange(2.0, 31.0, 2.0)


@given(conv_cases())
def test_cordonnier_error_is_under_the_bound_at_every_alpha(case):
    x, w, b, opts = case
    conv = R.conv2d_ref(x, w, b, **opts)
    layer, M = A.conv_as_attention(w, b, **opts), A.cordonnier_value_bound(x, w, opts["groups"])
    heads = w.shape[2] * w.shape[3]
    for alpha in ALPHAS:
        err = np.abs(arr(layer(x, alpha=alpha)) - conv).max()
        assert err <= A.cordonnier_bound(alpha, heads, M), (alpha, err)


def _first_order(x, w, pads):
    """||c||_inf, c = sum_h sum_{|n|=1, key} (u_{k*+n} - u_{k*}) per output (stride/dilation 1, groups 1)."""
    xp = np.pad(x, ((0, 0), (0, 0), pads[0], pads[1]))
    Hp, Wp = xp.shape[2:]
    kh, kw = w.shape[2:]
    Ho, Wo = Hp - kh + 1, Wp - kw + 1
    c = np.zeros((x.shape[0], w.shape[0], Ho, Wo))
    for a1 in range(kh):
        for a2 in range(kw):
            u = np.einsum("oc,ncij->noij", w[:, :, a1, a2], xp)                   # u at every padded key
            for i in range(Ho):
                for j in range(Wo):
                    r, s = i + a1, j + a2                                         # k* in padded indices
                    for dr, ds in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                        if 0 <= r + dr < Hp and 0 <= s + ds < Wp:
                            c[:, :, i, j] += u[:, :, r + dr, s + ds] - u[:, :, r, s]
    return np.abs(c).max()


@pytest.mark.parametrize("seed", range(4))
def test_cordonnier_error_decays_like_exp_minus_alpha(seed):
    """log err = -alpha + log||c|| + zeta(alpha), |zeta| <= -log(1 - eps(alpha)) with
    eps = (2 N_h M (theta_3^2 - 1 - 4e^-a + (theta_3^2 - 1)^2) + 64 eps_mach N_h M) e^a / ||c||_inf
    (module docstring); a least-squares slope over alphas a_k then lies within
    sum_k |a_k - abar| z_k / sum_k (a_k - abar)^2 of -1."""
    rng = np.random.default_rng(seed)
    x, w = rng.standard_normal((1, 2, 6, 7)), rng.standard_normal((3, 2, 3, 3))
    layer = A.conv_as_attention(w, None)
    conv = R.conv2d_ref(x, w, padding=1)
    alphas = np.arange(10.0, 25.0)
    errs = np.array([np.abs(arr(layer(x, alpha=a)) - conv).max() for a in alphas])
    heads, M, c = 9, A.cordonnier_value_bound(x, w), _first_order(x, w, ((1, 1), (1, 1)))
    t = A.theta3_minus_one(alphas)
    s = np.expm1(2 * np.log1p(t))
    eps = (2 * heads * M * (s - 4 * np.exp(-alphas) + s * s) + 64 * np.finfo(float).eps * heads * M) \
        * np.exp(alphas) / c
    assert eps.max() < 0.5
    z = -np.log1p(-eps)
    np.testing.assert_array_less(np.abs(np.log(errs) + alphas - np.log(c)), z)   # pointwise, same expansion
    dev = alphas - alphas.mean()
    slope = np.polyfit(alphas, np.log(errs), 1)[0]
    band = np.sum(np.abs(dev) * z) / np.sum(dev * dev)
    assert abs(slope + 1) <= band, (slope, band)
    assert band < 0.05


@given(conv_cases(), seeds)
def test_cordonnier_is_exact_at_large_alpha_with_gradients(case, seed):
    x, w, b, opts = case
    b = np.zeros(w.shape[0]) if b is None else b
    M = A.cordonnier_value_bound(x, w, opts["groups"])
    alpha = next(a for a in range(1, 800) if A.cordonnier_bound(a, w.shape[2] * w.shape[3], M) <= 1e-13)
    fn = lambda x, w, b: A.conv_as_attention(w, b, alpha=alpha, **opts)(x)
    ref = lambda x, w, b: R.conv2d_ref(x, w, b, **opts)
    close(fn(x, w, b), ref(x, w, b))
    grad_check(fn, ref, [x, w, b], seed)


def test_cordonnier_matches_torch_conv2d_gradients():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((2, 2, 5, 6)), rng.standard_normal((4, 1, 3, 2)), rng.standard_normal(4)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    out = torch.nn.functional.conv2d(tx, tw, tb, stride=1, padding="same", dilation=2, groups=2)
    u = rng.standard_normal(out.shape)
    (out * torch.from_numpy(u)).sum().backward()
    xs = [Tensor(a, requires_grad=True) for a in (x, w, b)]
    y = A.conv_as_attention(xs[1], xs[2], alpha=40.0, padding="same", dilation=2, groups=2)(xs[0])
    close(y, out.detach().numpy())
    (y * u).sum().backward()
    for a, t in zip(xs, (tx, tw, tb)):
        close(a.grad.data, t.grad.numpy())


def test_cordonnier_padding_zeros_must_be_keys():
    """Keys = only the original pixels: the border softmax renormalises and the error does not vanish."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3))
    layer, conv = A.conv_as_attention(w, None, alpha=40.0), R.conv2d_ref(x, w, padding=1)
    keys = x.transpose(0, 2, 3, 1).reshape(1, 25, 2)
    pos = T.grid_positions((5, 5), dtype=np.float64)
    y = layer.itnet(40.0)(np.zeros((1, 25, 1)), positions=pos, source=keys, source_positions=pos)
    wrong = arr(y).reshape(1, 5, 5, 3).transpose(0, 3, 1, 2)
    close(wrong[:, :, 1:-1, 1:-1], conv[:, :, 1:-1, 1:-1])                    # the interior is fine
    assert np.abs(wrong - conv).max() > 0.1                                   # the border is not
    close(layer(x), conv)


@given(conv_cases())
def test_conv_weights_round_trip_through_the_attention_layer(case):
    _, w, b, opts = case
    layer = A.conv_as_attention(w, b, alpha=7.0, **opts)
    got_w, got_b = A.conv_from_itnet(layer)
    np.testing.assert_array_equal(got_w, w)
    assert (got_b is None) == (b is None) and (b is None or np.array_equal(got_b, b))


def test_conv_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ShapeError, match=r"weight.*\(C_out, C_in/groups, kh, kw\).*\(3, 2, 3\)"):
        A.conv_as_attention(rng.standard_normal((3, 2, 3)))
    with pytest.raises(ConfigError, match=r"C_out=3 .*groups=2"):
        A.conv_as_attention(rng.standard_normal((3, 1, 3, 3)), groups=2)
    with pytest.raises(ConfigError, match="'same'"):
        A.conv_as_attention(rng.standard_normal((3, 1, 3, 3)), stride=2)
    with pytest.raises(ShapeError, match=r"x.*\(B, 1, H, W\).*\(1, 2, 5, 5\)"):
        A.conv_as_attention(rng.standard_normal((3, 1, 3, 3)))(rng.standard_normal((1, 2, 5, 5)))
    with pytest.raises(ShapeError, match=r"bias.*\(3,\)"):
        A.conv_as_attention(rng.standard_normal((3, 1, 3, 3)), rng.standard_normal(2))


def test_verify_suite_registers_and_passes_the_cordonnier_reduction():
    from itnet_np.verify import run_suite
    results = run_suite(trials=3, only="Cordonnier conv-as-attention (α bound)", progress=False)
    assert [r["reduction"] for r in results] == ["Cordonnier conv-as-attention (α bound)"]
    assert all(r["passed"] for r in results), results
