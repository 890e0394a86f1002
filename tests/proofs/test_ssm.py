"""S4D as an ITNet integral transform (itnet_np.proofs.ssm), and the semiseparable structure of SSMs.

Every forward is compared with the independent references in itnet_np.proofs.reference (recurrences
and closed forms written from the papers), every gradient with central differences of the reference.
"""
import numpy as np
import pytest
from _proof_helpers import assert_gradients_match
from hypothesis import given, settings
from hypothesis import strategies as st
from itnet_np.proofs import mamba, ssm
from itnet_np.proofs import reference as R

from itnet_np import Tensor
from itnet_np.errors import ConfigError, ShapeError
from itnet_np.transform import DecayKernel, IntegralTransform
from itnet_np.verify import directional_gradient_error

TOL = dict(rtol=1e-10, atol=1e-10)


def close(a, b, **tol):
    np.testing.assert_allclose(np.asarray(getattr(a, "data", a)), b, **(tol or TOL))


# ----- S4D --------------------------------------------------------------------------------------
@st.composite
def s4d_configs(draw):
    """(u, A, B, C, D, dt, discretization, conj_pairs) with A, B, C complex or real."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_batch, H, N, L = (draw(st.integers(1, m)) for m in (2, 3, 4, 24))
    cplx = draw(st.booleans())

    def mat(real=None):
        re = rng.standard_normal((H, N)) if real is None else real
        return re + 1j * rng.uniform(-3, 3, (H, N)) if cplx else re
    A = mat(-rng.uniform(0.05, 4.0, (H, N)))            # dt A < -2: negative bilinear Abar
    dt = rng.uniform(0.01, 1.0, H) if draw(st.booleans()) else float(rng.uniform(0.01, 1.0))
    D = rng.standard_normal(H) if draw(st.booleans()) else None
    return (rng.standard_normal((n_batch, H, L)), A, mat(), mat(), D, dt,
            draw(st.sampled_from(["zoh", "bilinear"])), draw(st.booleans()))


@given(s4d_configs())
def test_s4d_equals_recurrence_and_fft_convolution(cfg):
    u, A, B, C, D, dt, disc, conj = cfg
    layer = ssm.s4d_as_itnet(A, B, C, D, dt, disc, conj)
    ref = R.s4d_recurrent_ref(u, A, B, C, D, dt, disc, conj)
    close(layer(u), ref)
    K = R.s4d_kernel_ref(A, B, C, dt, u.shape[2], disc, conj)
    close(layer(u), R.fft_causal_conv_ref(u, K, D))
    close(layer.kernel_matrix(u.shape[2]).data[:, :, 0], K)      # first column = K_0 .. K_{L-1}


def _s4d_fns(cplx, D_given, disc, conj):
    """(itnet, reference) on flat weight lists [u, A.., B.., C.., (D), dt] (complex as re, im pairs)."""
    def split(ws, pair):
        k = 6 if cplx else 3
        if cplx:
            abc = [(ws[i], ws[i + 1]) if pair else ws[i] + 1j * ws[i + 1] for i in (0, 2, 4)]
        else:
            abc = list(ws[:3])
        return abc + [ws[k] if D_given else None, ws[-1]]
    return (lambda u, *ws: ssm.s4d_as_itnet(*split(ws, True), disc, conj)(u),
            lambda u, *ws: R.s4d_recurrent_ref(u, *split(ws, False), disc, conj))


@settings(max_examples=10)
@given(s4d_configs())
def test_s4d_gradients_match_reference(cfg):
    u, A, B, C, D, dt, disc, conj = cfg
    cplx = np.iscomplexobj(A)
    ws = [p for M in (A, B, C) for p in ((M.real, M.imag) if cplx else (M,))]
    inputs = [u] + ws + ([D] if D is not None else []) + [np.asarray(dt, dtype=float)]
    itnet, reference = _s4d_fns(cplx, D is not None, disc, conj)
    assert_gradients_match(itnet, reference, inputs)


def test_s4d_arrays_become_trainable_parameters():
    rng = np.random.default_rng(0)
    A, B, C = -rng.uniform(0.1, 1, (2, 3)) + 1j * rng.standard_normal((2, 3)), rng.standard_normal((2, 3)), \
        rng.standard_normal((2, 3)) + 0j
    layer = ssm.s4d_as_itnet(A, B, C, np.ones(2), 0.1)
    assert [n for n, _ in layer.named_parameters()] == ["A_re", "A_im", "B_re", "C_re", "C_im", "D", "dt"]
    u = rng.standard_normal((1, 2, 6))
    layer(u).sum().backward()
    assert all(p.grad is not None for p in layer.parameters())
    before = layer(u).data
    layer.C_re.data += 0.5                                  # a change of a conventional weight is seen
    assert not np.allclose(layer(u).data, before)
    close(layer(u), R.s4d_recurrent_ref(u, A, B, layer.C_re.data + 1j * layer.C_im.data, np.ones(2), 0.1))


@given(s4d_configs(), st.integers(0, 23))
def test_s4d_is_causal(cfg, t0):
    u, A, B, C, D, dt, disc, conj = cfg
    t0 = t0 % u.shape[2]
    layer = ssm.s4d_as_itnet(A, B, C, D, dt, disc, conj)
    v = u.copy()
    v[..., t0:] += np.random.default_rng(t0).standard_normal(v[..., t0:].shape)
    np.testing.assert_array_equal(layer(u).data[..., :t0], layer(v).data[..., :t0])


def test_s4d_long_sequence_strongly_negative_A_stays_finite():
    rng = np.random.default_rng(1)
    A = -rng.uniform(20, 80, (2, 3)) + 1j * rng.uniform(-5, 5, (2, 3))
    B, C, u = rng.standard_normal((2, 3)), rng.standard_normal((2, 3)), rng.standard_normal((1, 2, 1500))
    for disc in ("zoh", "bilinear"):
        y = ssm.s4d_as_itnet(A, B, C, None, 1.0, disc, True)(u).data
        assert np.all(np.isfinite(y))
        close(y, R.s4d_recurrent_ref(u, A, B, C, None, 1.0, disc, True))


def test_s4d_bilinear_negative_real_eigenvalue():
    """dt A < -2 makes the bilinear Abar negative: a complex mode with angle pi (a real mode cannot)."""
    rng = np.random.default_rng(10)
    A = np.array([[-3.0, -0.5, -7.0]])
    B, C, u = rng.standard_normal((1, 3)), rng.standard_normal((1, 3)), rng.standard_normal((2, 1, 9))
    a_bar, _ = R.s4d_discretize(A, B, 1.0, "bilinear")
    assert np.sum(a_bar < 0) == 2
    close(ssm.s4d_as_itnet(A, B, C, None, 1.0, "bilinear")(u),
          R.s4d_recurrent_ref(u, A, B, C, None, 1.0, "bilinear"))
    itnet, reference = _s4d_fns(False, False, "bilinear", False)
    assert directional_gradient_error(itnet, reference, [u, A, B, C, np.ones(1)], rng) < 1e-6


def test_s4d_zero_eigenvalue_uses_the_limit():
    A = np.array([[0.0, -1.0]])
    for a in (A, A + 0j):
        u = np.random.default_rng(2).standard_normal((1, 1, 8))
        close(ssm.s4d_as_itnet(a, np.ones((1, 2)), np.ones((1, 2)), None, 0.3)(u),
              R.s4d_recurrent_ref(u, a, np.ones((1, 2)), np.ones((1, 2)), None, 0.3))


@given(s4d_configs(), st.floats(0.05, 2.0))
def test_s4d_reverse_map_round_trips(cfg, dt2):
    u, A, B, C, D, dt, disc, conj = cfg
    layer = ssm.s4d_as_itnet(A, B, C, D, dt, disc, conj)
    A2, B2, C2 = ssm.s4d_from_decay_kernel(layer.decay_kernel(), dt2)
    close(R.s4d_recurrent_ref(u, A2, B2, C2, D, dt2, "zoh", conj_pairs=True), layer(u).data)


def test_decay_kernel_to_s4d_from_a_trained_itnet_kernel():
    rng = np.random.default_rng(3)
    kernel = DecayKernel(3, real_modes=2, complex_modes=2, rng=4, dtype=np.float64)
    op = IntegralTransform(3, 3, kernel, embed_dim=3, support="causal", bias=False, dtype=np.float64)
    op.W_V.data[...], op.W_O.data[...] = np.eye(3), np.eye(3)
    x = rng.standard_normal((2, 9, 3))
    A, B, C = ssm.s4d_from_decay_kernel(kernel, 0.5)
    close(R.s4d_recurrent_ref(np.moveaxis(x, 1, 2), A, B, C, None, 0.5, "zoh", True),
          np.moveaxis(op(x).data, 1, 2))


def test_s4d_errors_name_the_argument():
    A, B = -np.ones((2, 3)), np.ones((2, 3))
    with pytest.raises(ShapeError, match=r"A must be \(H, N\)"):
        ssm.s4d_as_itnet(-np.ones(3), B, B)
    with pytest.raises(ShapeError, match=r"C must be \(H, N\) = \(2, 3\) like A, got \(3, 2\)"):
        ssm.s4d_as_itnet(A, B, np.ones((3, 2)))
    with pytest.raises(ShapeError, match="imaginary part"):
        ssm.s4d_as_itnet((Tensor(A), Tensor(np.ones((2, 2)))), B, B)
    with pytest.raises(ShapeError, match=r"D must be \(H,\)"):
        ssm.s4d_as_itnet(A, B, B, np.ones(3))
    with pytest.raises(ShapeError, match="dt must be"):
        ssm.s4d_as_itnet(A, B, B, None, np.ones(3))
    with pytest.raises(ConfigError, match="discretization"):
        ssm.s4d_as_itnet(A, B, B, discretization="euler")
    with pytest.raises(ConfigError, match="tuple"):
        ssm.s4d_as_itnet((A, A, A), B, B)
    with pytest.raises(ShapeError, match=r"u must be \(B, H, L\) with H = 2"):
        ssm.s4d_as_itnet(A, B, B)(np.ones((1, 3, 4)))


# ----- semiseparable rank -----------------------------------------------------------------------
@settings(max_examples=8)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4))
def test_ssm_matrices_are_N_semiseparable(seed, N):
    """Every block M[k:, :k+1] of an SSM matrix has rank <= state size, and the bound is attained."""
    rng = np.random.default_rng(seed)
    L = 2 * N + 4
    delta, A = rng.uniform(0.1, 0.5, (1, 2, L)), -rng.uniform(0.1, 1.0, (2, N))
    B, C = rng.standard_normal((1, N, L)), rng.standard_normal((1, N, L))
    M = mamba.selective_scan_matrix(delta, A, B, C)
    u = rng.standard_normal((1, 2, L))
    close(np.einsum("bdts,bds->bdt", M.data, u), R.selective_scan_ref(u, delta, A, B, C))
    assert ssm.semiseparable_ranks(M).max() == N
    Ad = -rng.uniform(0.0, 0.5, (1, L, 2))
    Bd, Cd = rng.standard_normal((1, L, 2, N)), rng.standard_normal((1, L, 2, N))
    assert ssm.semiseparable_ranks(mamba.ssd_matrix(Ad, Bd, Cd)).max() == N
    cplx = -rng.uniform(0.1, 0.5, (2, N)) + 1j * rng.uniform(0.5, 2, (2, N))   # 2N real states
    S = ssm.s4d_as_itnet(cplx, rng.standard_normal((2, N)) + 0j, rng.standard_normal((2, N)), dt=0.5)
    assert ssm.semiseparable_ranks(S.kernel_matrix(4 * N + 4)).max() == 2 * N
    generic = np.tril(rng.standard_normal((L, L)))          # a generic causal matrix is not: rank grows
    assert ssm.semiseparable_ranks(generic).max() > N
