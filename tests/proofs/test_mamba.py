"""Mamba's selective scan (S6) and Mamba-2's SSD as ITNet integral transforms (itnet_np.proofs.mamba).

Every forward is compared with the independent references in itnet_np.proofs.reference (recurrences
and closed forms written from the papers), every gradient with central differences of the reference.
"""
import numpy as np
import pytest
from _proof_helpers import assert_gradients_match
from hypothesis import given, settings
from hypothesis import strategies as st
from itnet_np.proofs import mamba
from itnet_np.proofs import reference as R

from itnet_np import Tensor
from itnet_np.errors import ConfigError, ShapeError
from itnet_np.transform import DecayKernel, IntegralTransform, SelectiveKernel
from itnet_np.verify import directional_gradient_error

TOL = dict(rtol=1e-10, atol=1e-10)


def close(a, b, **tol):
    np.testing.assert_allclose(np.asarray(getattr(a, "data", a)), b, **(tol or TOL))


# ----- selective scan (Mamba S6) -----------------------------------------------------------------
def _bc(draw, rng, n_batch, dim, N, L):
    kind = draw(st.sampled_from(["shared", "grouped", "constant"]))
    if kind == "shared":
        return rng.standard_normal((n_batch, N, L))
    if kind == "constant":
        return rng.standard_normal((dim, N))
    groups = draw(st.sampled_from([g for g in range(1, dim + 1) if dim % g == 0]))
    return rng.standard_normal((n_batch, groups, N, L))


@st.composite
def scan_configs(draw, max_len=24):
    """kwargs of selective_scan_ref: shapes, layouts of B/C, softplus, bias, z and D given or not."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_batch, dim, N, L = (draw(st.integers(1, m)) for m in (2, 4, 4, max_len))
    softplus = draw(st.booleans())
    seq = (n_batch, dim, L)
    cfg = dict(u=rng.standard_normal(seq), A=-rng.uniform(0.05, 3.0, (dim, N)),
               delta=rng.uniform(-3, 1.5, seq) if softplus else rng.uniform(0.01, 1.5, seq),
               B=_bc(draw, rng, n_batch, dim, N, L), C=_bc(draw, rng, n_batch, dim, N, L),
               delta_softplus=softplus)
    for name, shape in (("D", (dim,)), ("z", seq), ("delta_bias", (dim,))):
        if draw(st.booleans()):
            cfg[name] = 0.5 * rng.standard_normal(shape)
    return cfg


@given(scan_configs())
def test_selective_scan_equals_mamba_reference(cfg):
    out = mamba.selective_scan_as_itnet(**cfg)
    close(out, R.selective_scan_ref(**cfg))
    close(out, R.selective_scan_kernel_ref(**cfg))


@settings(max_examples=10)
@given(scan_configs(max_len=12))
def test_selective_scan_gradients_match_reference(cfg):
    names = [k for k, v in cfg.items() if isinstance(v, np.ndarray)]
    flag = cfg["delta_softplus"]
    itnet = lambda *xs: mamba.selective_scan_as_itnet(**dict(zip(names, xs)), delta_softplus=flag)
    reference = lambda *xs: R.selective_scan_ref(**dict(zip(names, xs)), delta_softplus=flag)
    inputs = [cfg[n] for n in names]
    assert_gradients_match(itnet, reference, inputs)


def test_selective_scan_gradients_match_torch_autograd():
    """Full gradients (every input) against torch autograd through the recurrence x_t = e^{dA} x + d B u."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    cfg = {"u": rng.standard_normal((2, 3, 9)), "delta": rng.uniform(-2, 1, (2, 3, 9)),
           "A": -rng.uniform(0.1, 2, (3, 4)), "B": rng.standard_normal((2, 4, 9)),
           "C": rng.standard_normal((2, 3, 4, 9)), "D": rng.standard_normal(3),
           "z": rng.standard_normal((2, 3, 9)), "delta_bias": rng.standard_normal(3)}
    cot = rng.standard_normal((2, 3, 9))
    ours = {k: Tensor(v, requires_grad=True) for k, v in cfg.items()}
    (mamba.selective_scan_as_itnet(**ours, delta_softplus=True) * cot).sum().backward()
    t = {k: torch.tensor(v, requires_grad=True) for k, v in cfg.items()}
    delta = torch.nn.functional.softplus(t["delta"] + t["delta_bias"][:, None])
    x, ys = torch.zeros(2, 3, 4, dtype=torch.float64), []
    for i in range(9):
        d = delta[:, :, i, None]
        x = torch.exp(d * t["A"]) * x + d * t["B"][:, None, :, i] * t["u"][:, :, i, None]
        ys.append((x * t["C"][..., i]).sum(-1))
    out = (torch.stack(ys, -1) + t["u"] * t["D"][:, None]) * torch.nn.functional.silu(t["z"])
    (out * torch.tensor(cot)).sum().backward()
    for k in cfg:
        np.testing.assert_allclose(ours[k].grad.data, t[k].grad.numpy(), rtol=1e-10, atol=1e-12)


def test_selective_scan_softplus_threshold_is_torchs():
    rng = np.random.default_rng(5)
    u, B, C = rng.standard_normal((1, 2, 8)), rng.standard_normal((1, 3, 8)), rng.standard_normal((1, 3, 8))
    delta = rng.uniform(19.0, 21.0, (1, 2, 8))       # log1p(e^x) - x ~ 2e-9 near 20: the threshold shows
    A = -rng.uniform(0.001, 0.01, (2, 3))
    close(mamba.selective_scan_as_itnet(u, delta, A, B, C, delta_softplus=True),
          R.selective_scan_ref(u, delta, A, B, C, delta_softplus=True), rtol=1e-12, atol=1e-12)


def test_selective_scan_with_non_negative_A():
    """A >= 0 (which the SelectiveKernel's A = -exp(A_log) cannot hold) goes through the signed subclass."""
    rng = np.random.default_rng(6)
    A = np.array([[0.0, 0.3], [-1.0, 0.0]])
    u, delta, B, C = (rng.standard_normal((2, 2, 7)), rng.uniform(0.05, 0.5, (2, 2, 7)),
                      rng.standard_normal((2, 2, 7)), rng.standard_normal((2, 2, 7)))
    close(mamba.selective_scan_as_itnet(u, delta, A, B, C, D=np.ones(2)),
          R.selective_scan_ref(u, delta, A, B, C, D=np.ones(2)))
    itnet = lambda *xs: mamba.selective_scan_as_itnet(*xs)
    assert directional_gradient_error(itnet, R.selective_scan_ref, [u, delta, A, B, C], rng) < 1e-6


@given(scan_configs(), st.integers(0, 23))
def test_selective_scan_is_causal(cfg, t0):
    t0 = t0 % cfg["u"].shape[2]
    out = mamba.selective_scan_as_itnet(**cfg).data
    rng = np.random.default_rng(t0)
    for name in ("u", "delta", "z", "B", "C"):
        v = cfg.get(name)
        if v is None or v.ndim == 2:                          # a constant (D, N) B/C has no time axis
            continue
        w = v.copy()
        w[..., t0:] += rng.uniform(0.1, 1.0, w[..., t0:].shape)
        np.testing.assert_array_equal(mamba.selective_scan_as_itnet(**dict(cfg, **{name: w})).data[..., :t0],
                                      out[..., :t0])


def test_selective_scan_long_sequence_strongly_negative_A():
    rng = np.random.default_rng(7)
    L = 2000
    cfg = dict(u=rng.standard_normal((1, 2, L)), delta=rng.uniform(-1, 2, (1, 2, L)),
               A=-rng.uniform(20, 60, (2, 4)), B=rng.standard_normal((1, 4, L)),
               C=rng.standard_normal((1, 4, L)), D=np.ones(2), delta_softplus=True)
    out = mamba.selective_scan_as_itnet(**cfg).data       # tau reaches ~2500; exp(-A tau) would overflow
    assert np.all(np.isfinite(out))
    close(out, R.selective_scan_ref(**cfg))


@settings(max_examples=8)
@given(st.integers(0, 2**32 - 1), st.integers(1, 3), st.integers(1, 2), st.booleans(), st.booleans(),
       st.booleans())
def test_native_selective_kernel_is_mamba_on_its_projections(seed, H, d, softplus, skip, direct):
    """Reverse map: any SelectiveKernel transform = out_proj(selective_scan_ref(its projections)) + skip."""
    rng = np.random.default_rng(seed)
    A = rng.uniform(-1.0, 0.2, (H, 3)) if direct else None
    kernel = SelectiveKernel(5, H, state_dim=3, dt_softplus=softplus, A=A, direct_A=direct, rng=rng,
                             dtype=np.float64)
    op = IntegralTransform(5, 4, kernel, embed_dim=H * d, skip=skip, value_bias=True, rng=rng,
                           dtype=np.float64)
    if not softplus:
        kernel.b_dt.data += 0.5                        # keep the raw step sizes mostly positive
    x = rng.standard_normal((2, 11, 5))
    kwargs, W_O, W_skip, b = mamba.selective_scan_from_itnet(op, x)
    expected = np.moveaxis(R.selective_scan_ref(**kwargs), 1, 2) @ W_O.T + b
    close(op(x), expected + (0.0 if W_skip is None else x @ W_skip.T))
    with pytest.raises(ConfigError, match="SelectiveKernel"):
        mamba.selective_scan_from_itnet(IntegralTransform(5, 4, DecayKernel(2), embed_dim=2), x)
    ssd_like = SelectiveKernel(5, 2, state_dim=3, delta_as_weight=False, dtype=np.float64)
    with pytest.raises(ConfigError, match="delta_as_weight"):
        mamba.selective_scan_from_itnet(IntegralTransform(5, 4, ssd_like, embed_dim=2), x)


def test_selective_scan_errors():
    rng = np.random.default_rng(8)
    u, B = rng.standard_normal((2, 4, 5)), rng.standard_normal((2, 3, 5))
    A = -np.ones((4, 3))
    with pytest.raises(ShapeError, match=r"A must be a real \(D, N\)"):
        mamba.selective_scan_as_itnet(u, u, -np.ones(4), B, B)
    with pytest.raises(ConfigError, match="A must be real"):
        mamba.selective_scan_as_itnet(u, u, A + 1j, B, B)
    with pytest.raises(ShapeError, match=r"D = 3 \(rows of A\)"):
        mamba.selective_scan_as_itnet(u, u, -np.ones((3, 3)), B, B)
    with pytest.raises(ShapeError, match="delta"):
        mamba.selective_scan_as_itnet(u, u[..., :4], A, B, B)
    with pytest.raises(ShapeError, match=r"B must be \(D, N\) = \(4, 3\), \(B, N, L\) = \(2, 3, 5\)"):
        mamba.selective_scan_as_itnet(u, u, A, B[..., :4], B)
    with pytest.raises(ShapeError, match="C must be .* with G dividing D = 4; got \\(2, 3, 3, 5\\)"):
        mamba.selective_scan_as_itnet(u, u, A, B, rng.standard_normal((2, 3, 3, 5)))
    with pytest.raises(ShapeError, match=r"D must be \(D,\) = \(4,\)"):
        mamba.selective_scan_as_itnet(u, u, A, B, B, D=np.ones(3))
    with pytest.raises(ShapeError, match="delta_bias"):
        mamba.selective_scan_as_itnet(u, u, A, B, B, delta_bias=np.ones((4, 1)))


# ----- SSD (Mamba-2) -----------------------------------------------------------------------------
@st.composite
def ssd_configs(draw, max_len=24):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_batch, L, H, P, N = (draw(st.integers(1, m)) for m in (2, max_len, 3, 3, 4))
    return (rng.standard_normal((n_batch, L, H, P)), -rng.uniform(0.0, 2.0, (n_batch, L, H)),
            rng.standard_normal((n_batch, L, H, N)), rng.standard_normal((n_batch, L, H, N)))


@given(ssd_configs())
def test_ssd_equals_quadratic_and_recurrent_forms(cfg):
    Y = mamba.ssd_as_itnet(*cfg)
    close(Y, R.ssd_ref(*cfg))
    close(Y, R.ssd_recurrent_ref(*cfg))


@settings(max_examples=10)
@given(ssd_configs(max_len=12))
def test_ssd_gradients_match_reference(cfg):
    assert directional_gradient_error(mamba.ssd_as_itnet, R.ssd_ref, list(cfg), np.random.default_rng(0)) < 1e-6


@given(ssd_configs(), st.integers(0, 23))
def test_ssd_is_causal(cfg, t0):
    t0 = t0 % cfg[0].shape[1]
    Y = mamba.ssd_as_itnet(*cfg).data
    for k in range(4):
        moved = [c.copy() for c in cfg]
        moved[k][:, t0:] += 0.5
        np.testing.assert_array_equal(mamba.ssd_as_itnet(*moved).data[:, :t0], Y[:, :t0])


def test_ssd_long_sequence_strongly_negative_A():
    rng = np.random.default_rng(9)
    L = 1500
    cfg = (rng.standard_normal((1, L, 2, 2)), -rng.uniform(5, 20, (1, L, 2)),
           rng.standard_normal((1, L, 2, 3)), rng.standard_normal((1, L, 2, 3)))
    Y = mamba.ssd_as_itnet(*cfg).data
    assert np.all(np.isfinite(Y))
    close(Y, R.ssd_recurrent_ref(*cfg))


def test_ssd_errors():
    X, A, B = np.ones((1, 4, 2, 3)), np.ones((1, 4, 2)), np.ones((1, 4, 2, 5))
    with pytest.raises(ShapeError, match=r"A \(B, L, H\).*got X \(1, 4, 2, 3\), A \(1, 4, 3\)"):
        mamba.ssd_as_itnet(X, np.ones((1, 4, 3)), B, B)
    with pytest.raises(ShapeError, match="C \\(1, 4, 2, 4\\)"):
        mamba.ssd_as_itnet(X, A, B, np.ones((1, 4, 2, 4)))
