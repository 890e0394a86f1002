"""Kernel families: the MLP factorisation against a per-pair MLP, tiles against the dense matrix,
T5/ALiBi against hand values, and each family against the recurrence or layer it stands for."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import itnet_np as itn
from itnet_np import transform as T

F64 = np.float64


def arr(a):
    return a.data if isinstance(a, itn.Tensor) else np.asarray(a)


# ----- MLPKernel: factorised first layer == the MLP on the explicit pair-feature vector ------------
@given(seed=st.integers(0, 2 ** 16), D=st.integers(1, 3), N=st.integers(1, 4), M=st.integers(1, 4),
       Cq=st.integers(1, 3), Cs=st.integers(1, 3), H=st.integers(1, 3),
       inputs=st.lists(st.sampled_from(["dp", "dist2", "fourier", "prod", "fi", "fj"]), min_size=1, unique=True))
def test_mlp_factorisation_equals_per_pair_mlp(seed, D, N, M, Cq, Cs, H, inputs):
    rng = np.random.default_rng(seed)
    k = T.MLPKernel(Cs, H, hidden=5, inputs=inputs, position_dim=D, query_features=Cq, fourier=3,
                    product_rank=2, activation="tanh", rng=rng, dtype=F64)
    B = 2
    fq, fs = rng.standard_normal((B, N, Cq)), rng.standard_normal((B, M, Cs))
    pq, ps = rng.uniform(-2, 2, (B, N, D)), rng.uniform(-2, 2, (B, M, D))
    proj = k.project(T.Points(fq, pq), T.Points(fs, ps))
    a, b, x, y, W, W2, b2, act = k.factors(proj)
    R = W.shape[1]
    assert (a.shape, b.shape, x.shape, y.shape, W2.shape, b2.shape, act) == (
        (B, N, 5), (B, M, 5), (B, N, R), (B, M, R), (H, 5), (H,), "tanh")
    a, b, x, y, W = (arr(t) for t in (a, b, x, y, W))
    pre, s = k.preactivation(proj).data, k.scores(proj).data
    W1, b1 = k.W1.data, k.b1.data
    om = np.asarray(k.frequencies) if "fourier" in inputs else None
    for bb in range(B):
        for i in range(N):
            for j in range(M):
                dp = pq[bb, i] - ps[bb, j]
                parts = {"dp": dp, "dist2": [dp @ dp], "fi": fq[bb, i], "fj": fs[bb, j]}
                if om is not None:
                    parts["fourier"] = np.concatenate([np.sin(om @ dp), np.cos(om @ dp)])
                if "prod" in inputs:
                    parts["prod"] = (k.P.data @ fq[bb, i]) * (k.Q.data @ fs[bb, j])
                z = np.concatenate([parts[n] for n in ("dp", "dist2", "fourier", "prod", "fi", "fj")
                                    if n in inputs])
                want_pre = W1 @ z + b1
                factored = a[bb, i] + b[bb, j] + W @ (x[bb, i] * y[bb, j])
                np.testing.assert_allclose(pre[bb, i, j], want_pre, rtol=1e-12, atol=1e-12)
                np.testing.assert_allclose(factored, want_pre, rtol=1e-12, atol=1e-12)
                np.testing.assert_allclose(s[bb, :, i, j], k.W2.data @ np.tanh(want_pre) + k.b2.data,
                                           rtol=1e-12, atol=1e-12)


def test_mlp_factor_ranks_follow_the_contract():
    k = T.MLPKernel(3, 2, hidden=4, inputs=("dist2", "fourier", "prod"), position_dim=2, fourier=5,
                    product_rank=3, dtype=F64, rng=0)
    proj = k.project(T.Points(np.ones((1, 2, 3)), np.ones((1, 2, 2))), T.Points(np.ones((1, 3, 3)), np.ones((1, 3, 2))))
    assert k.factors(proj)[4].shape == (4, 2 + 4 * 5 + 3)      # rank D + 4F + R


# ----- tiles: scores(proj.tile(i, j)) is the (i, j) block of the dense scores --------------------------
@pytest.mark.parametrize("kernel", [
    lambda: T.MLPKernel(3, 2, hidden=3, inputs=("dp", "dist2", "fourier", "prod", "fi", "fj"), fourier=2,
                        rng=0, dtype=F64),
    lambda: T.DotProductKernel(3, 2, head_dim=2, position_bias="t5", rng=0, dtype=F64),
    lambda: T.StencilKernel([-1, 0, 2], rng=0, dtype=F64),
    lambda: T.DecayKernel(2, 1, 1, rng=0, dtype=F64),
    lambda: T.SelectiveKernel(3, 2, state_dim=2, rng=0, dtype=F64),
    lambda: T.LowRankKernel(3, 2, rng=0, dtype=F64),
    lambda: T.SumKernel(T.DecayKernel(2, 1, 0, rng=0, dtype=F64), T.SelectiveKernel(3, 2, 2, rng=1, dtype=F64)),
])
def test_tiles_are_blocks_of_the_dense_scores(kernel):
    k = kernel()
    pts = T.Points(np.random.default_rng(0).standard_normal((2, 7, 3)), np.arange(7.0).reshape(1, 7, 1))
    proj = k.project(pts, pts)
    dense = np.broadcast_to(k.scores(proj).data, (2, 2 if not isinstance(k, T.StencilKernel) else 3, 7, 7))
    for i in (slice(0, 3), slice(3, 7)):
        for j in (slice(0, 4), slice(4, 7)):
            tile = np.broadcast_to(k.scores(proj.tile(i, j)).data, dense[..., i, j].shape)
            np.testing.assert_allclose(tile, dense[..., i, j], rtol=1e-13, atol=1e-15)


# ----- relative position biases -------------------------------------------------------------------
def test_alibi_slopes_hand_values():
    np.testing.assert_allclose(T.alibi_slopes(8), [2.0 ** -k for k in range(1, 9)], rtol=1e-15)
    np.testing.assert_allclose(T.alibi_slopes(4), [2.0 ** -k for k in (2, 4, 6, 8)], rtol=1e-15)
    np.testing.assert_allclose(T.alibi_slopes(3), [2.0 ** -4, 2.0 ** -8, 2.0 ** -2], rtol=1e-15)
    np.testing.assert_allclose(T.alibi_slopes(6), [2.0 ** -k for k in (2, 4, 6, 8, 1, 3)], rtol=1e-15)


def test_t5_buckets_hand_values():
    rel = np.array([0, 1, -1, 7, -7, -8, -11, -12, -127, -128, -500, 500])
    # bidirectional, 32 buckets, max_distance 128: 16 per side, exact below 8, log-spaced 8..15.
    # e.g. -12 -> 8 + int(log(12/8)/log(16) * 8) = 8 + int(1.169) = 9; 500 -> 16 + 15.
    np.testing.assert_array_equal(T.t5_bucket(rel), [0, 17, 1, 23, 7, 8, 8, 9, 15, 15, 15, 31])
    # unidirectional (decoder): rel > 0 (future) all fall in bucket 0; -16 -> 16 + int(log 1 ...) = 16.
    np.testing.assert_array_equal(T.t5_bucket(np.array([3, 0, -5, -16, -40]), bidirectional=False),
                                  [0, 0, 5, 16, 16 + int(math.log(40 / 16) / math.log(8) * 16)])


# ----- StencilKernel is convolution (torch's cross-correlation, stride, dilation, padding) -------------
def conv_ref(x, w, b, stride, dilation, padding):
    """out[n, o, i] = b[o] + sum_{c, a} w[o, c, a] x[n, c, s i + d a - P] (zero outside), 1-D."""
    N, _, L = x.shape
    O, _, K = w.shape
    L_out = (L + 2 * padding - dilation * (K - 1) - 1) // stride + 1
    out = np.zeros((N, O, L_out)) + b[None, :, None]
    for i in range(L_out):
        for a in range(K):
            t = stride * i + dilation * a - padding
            if 0 <= t < L:
                out[:, :, i] += x[:, :, t] @ w[:, :, a].T
    return out


@pytest.mark.parametrize("stride,dilation,padding", [(1, 1, 0), (1, 2, 2), (2, 1, 1), (3, 2, 3)])
def test_stencil_kernel_is_conv1d(stride, dilation, padding):
    rng = np.random.default_rng(stride + dilation + padding)
    C, O, K, L = 2, 3, 3, 9
    x, w, b = rng.standard_normal((2, C, L)), rng.standard_normal((O, C, K)), rng.standard_normal(O)
    want = conv_ref(x, w, b, stride, dilation, padding)
    op = T.IntegralTransform(C, O, T.StencilKernel(T.conv_offsets(K, dilation), dtype=F64), embed_dim=K * C,
                             dtype=F64)
    op.W_V.data[...] = np.tile(np.eye(C), (K, 1))                     # head a sees x itself
    op.W_O.data[...] = np.concatenate([w[:, :, a] for a in range(K)], axis=1)
    op.b.data[...] = b
    L_out = want.shape[-1]
    queries = (stride * np.arange(L_out) - padding)[:, None]
    y = op(np.zeros((2, L_out, C)), positions=queries, source=x.transpose(0, 2, 1))
    np.testing.assert_allclose(y.data.transpose(0, 2, 1), want, rtol=1e-12, atol=1e-12)


def test_stencil_kernel_is_conv2d_with_grid_positions():
    rng = np.random.default_rng(0)
    Hh, Ww, C, O = 4, 5, 2, 3
    x, w = rng.standard_normal((1, Hh, Ww, C)), rng.standard_normal((O, C, 3, 3))
    want = np.zeros((1, Hh, Ww, O))                                    # 'same' padding 1
    for r in range(Hh):
        for c in range(Ww):
            for a1 in range(3):
                for a2 in range(3):
                    rr, cc = r + a1 - 1, c + a2 - 1
                    if 0 <= rr < Hh and 0 <= cc < Ww:
                        want[0, r, c] += w[:, :, a1, a2] @ x[0, rr, cc]
    op = T.IntegralTransform(C, O, T.StencilKernel(T.conv_offsets((3, 3)) - 1, dtype=F64), embed_dim=9 * C,
                             bias=False, dtype=F64)
    op.W_V.data[...] = np.tile(np.eye(C), (9, 1))
    op.W_O.data[...] = np.concatenate([w[:, :, a1, a2] for a1 in range(3) for a2 in range(3)], axis=1)
    y = op(x.reshape(1, -1, C), positions=T.grid_positions((Hh, Ww), dtype=F64))
    np.testing.assert_allclose(y.data.reshape(1, Hh, Ww, O), want, rtol=1e-12, atol=1e-12)


def test_grid_positions_row_major():
    np.testing.assert_array_equal(T.grid_positions((2, 3), spacing=(1, 10), dtype=F64),
                                  [[0, 0], [0, 10], [0, 20], [1, 0], [1, 10], [1, 20]])


# ----- DecayKernel is a diagonal linear SSM -------------------------------------------------------
def test_decay_kernel_equals_diagonal_ssm_recurrence():
    rng = np.random.default_rng(1)
    lam_r, c_r = np.array([[0.9, 0.5]]), np.array([[1.0, -0.7]])
    mu, g = np.array([[0.8 * np.exp(0.6j)]]), np.array([[0.3 - 0.4j]])
    k = T.DecayKernel.from_modes(real=(lam_r, c_r), complex=(mu, g), dtype=F64)
    op = T.IntegralTransform(1, 1, k, bias=False, dtype=F64)
    op.W_V.data[...] = 1.0
    op.W_O.data[...] = 1.0
    u = rng.standard_normal((2, 12, 1))
    # states x_t = A x_{t-1} + u_t over the modes (A = diag(lam, mu, conj mu)), y_t = c . x_t
    A = np.array([0.9, 0.5, mu[0, 0], np.conj(mu[0, 0])])
    c = np.array([1.0, -0.7, g[0, 0], np.conj(g[0, 0])])
    state, want = np.zeros((2, 4), complex), np.zeros((2, 12))
    for t in range(12):
        state = A * state + u[:, t]
        want[:, t] = (state @ c).real
    np.testing.assert_allclose(op(u).data[..., 0], want, rtol=1e-12, atol=1e-12)
    k.strict = True                                     # lag 0 dropped: minus K(0) u_t = (sum c) u_t
    np.testing.assert_allclose(op(u).data[..., 0], want - (c.sum().real) * u[..., 0], rtol=1e-12, atol=1e-12)


# ----- SelectiveKernel is Mamba's selective scan ----------------------------------------------------
def selective_scan_ref(u, delta, A, Bm, Cm):
    """x_t = exp(delta_t A) x_{t-1} + delta_t B_t u_t (per channel d), y_t = C_t . x_t."""
    Bsz, L, Dch = u.shape
    x = np.zeros((Bsz, Dch, A.shape[1]))
    y = np.zeros((Bsz, L, Dch))
    for t in range(L):
        x = np.exp(delta[:, t, :, None] * A) * x + (delta[:, t] * u[:, t])[:, :, None] * Bm[:, t, None, :]
        y[:, t] = np.einsum("bdn,bn->bd", x, Cm[:, t])
    return y


@pytest.mark.parametrize("L,scale", [(9, 1.0), (300, 60.0)])
def test_selective_kernel_equals_selective_scan_and_stays_finite(L, scale):
    rng = np.random.default_rng(L)
    Dch, S, extra = 3, 4, 2
    # f = [u | z]: u feeds the values (identity value map) and B, C, Delta are projections of f.
    C_in = Dch + extra
    A = -scale * rng.uniform(0.5, 1.5, (Dch, S))
    k = T.SelectiveKernel(C_in, Dch, state_dim=S, A=A, rng=0, dtype=F64)
    op = T.IntegralTransform(C_in, Dch, k, embed_dim=Dch, bias=False, dtype=F64)
    op.W_V.data[...] = np.eye(Dch, C_in)
    op.W_O.data[...] = np.eye(Dch)
    f = rng.standard_normal((2, L, C_in))
    delta = np.logaddexp(0, f @ k.W_dt.data.T + k.b_dt.data)
    tau = np.cumsum(delta, axis=1)
    with np.errstate(over="ignore"):
        naive_overflows = not np.isfinite(np.exp(-A[None, None, :, 0] * tau)).all()
    assert naive_overflows == (scale > 1)                # the long case really would overflow naively
    with np.errstate(over="raise", invalid="raise"):
        y = op(f).data
    want = selective_scan_ref(f[..., :Dch], delta, A, f @ k.W_B.data.T, f @ k.W_C.data.T)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, want, rtol=1e-9, atol=1e-11)


# ----- LowRankKernel is (causal) linear attention --------------------------------------------------
def test_lowrank_kernel_equals_recurrent_linear_attention():
    rng = np.random.default_rng(2)
    k = T.LowRankKernel(4, heads=1, feature_dim=3, rng=0, dtype=F64)
    op = T.IntegralTransform(4, 4, k, normalization="sum", support="causal", bias=False, dtype=F64)
    op.W_O.data[...] = np.eye(4)
    x = rng.standard_normal((2, 6, 4))

    def phi(z):
        return np.where(z > 0, z + 1, np.exp(z))
    q, kk, v = phi(x @ k.W_q.data.T), phi(x @ k.W_k.data.T), x @ op.W_V.data.T
    S, Z, want = np.zeros((2, 3, 4)), np.zeros((2, 3)), np.zeros((2, 6, 4))
    for t in range(6):                                   # Katharopoulos et al. 2020, eq. (18-20)
        S += kk[:, t, :, None] * v[:, t, None, :]
        Z += kk[:, t]
        want[:, t] = np.einsum("br,brd->bd", q[:, t], S) / np.einsum("br,br->b", q[:, t], Z)[:, None]
    np.testing.assert_allclose(op(x).data, want, rtol=1e-12, atol=1e-12)


def test_sum_kernel_adds_scores_and_folds_weights():
    a, b = T.DecayKernel(2, 1, 1, rng=0, dtype=F64), T.SelectiveKernel(3, 2, state_dim=2, rng=1, dtype=F64)
    pts = T.Points(np.random.default_rng(0).standard_normal((2, 5, 3)), np.arange(5.0).reshape(1, 5, 1))
    s = T.SumKernel(a, b)
    pb = b.project(pts, pts)
    want = a(pts).data + b.scores(pb).data * b.source_weights(pb).data[:, :, None, :]
    np.testing.assert_allclose(s(pts).data, want, rtol=1e-14)
    assert [n for n, _ in s.named_parameters()][:2] == ["k0.coef", "k0.log_rate"]


def selective_op(k, C_in, Dch):
    op = T.IntegralTransform(C_in, Dch, k, embed_dim=Dch, bias=False, dtype=F64)
    op.W_V.data[...] = np.eye(Dch, C_in)
    op.W_O.data[...] = np.eye(Dch)
    return op


def test_selective_kernel_with_direct_A_of_any_sign():
    rng = np.random.default_rng(11)
    Dch, S, C_in, L = 2, 3, 4, 8
    A = rng.uniform(-1.0, 0.5, (Dch, S))
    A[0, 0] = 0.0
    k = T.SelectiveKernel(C_in, Dch, state_dim=S, A=A, direct_A=True, rng=0, dtype=F64)
    assert [n for n, _ in k.named_parameters()] == ["W_dt", "b_dt", "W_B", "W_C", "A"]
    np.testing.assert_array_equal(k.A.data, A)
    f = rng.standard_normal((2, L, C_in))
    delta = np.logaddexp(0, f @ k.W_dt.data.T + k.b_dt.data)
    want = selective_scan_ref(f[..., :Dch], delta, A, f @ k.W_B.data.T, f @ k.W_C.data.T)
    np.testing.assert_allclose(selective_op(k, C_in, Dch)(f).data, want, rtol=1e-11, atol=1e-12)
    with pytest.raises(Exception, match="every entry < 0"):
        T.SelectiveKernel(C_in, Dch, state_dim=S, A=A)


def test_selective_kernel_with_unit_weights_is_ssd():
    """delta_as_weight=False: h_t = exp(Delta_t A) h_{t-1} + B_t x_t, y_t = C_t . h_t (no Delta on B)."""
    rng = np.random.default_rng(12)
    Dch, S, C_in, L = 2, 2, 3, 7
    k = T.SelectiveKernel(C_in, Dch, state_dim=S, delta_as_weight=False, rng=0, dtype=F64)
    assert not k.has_source_weights
    assert T.SumKernel(k, T.DecayKernel(Dch, dtype=F64)).has_source_weights is False
    f = rng.standard_normal((2, L, C_in))
    delta = np.logaddexp(0, f @ k.W_dt.data.T + k.b_dt.data)
    A, Bm, Cm, x = -np.exp(k.A_log.data), f @ k.W_B.data.T, f @ k.W_C.data.T, f[..., :Dch]
    h, want = np.zeros((2, Dch, S)), np.zeros((2, L, Dch))
    for t in range(L):
        h = np.exp(delta[:, t, :, None] * A) * h + x[:, t, :, None] * Bm[:, t, None, :]
        want[:, t] = np.einsum("bdn,bn->bd", h, Cm[:, t])
    np.testing.assert_allclose(selective_op(k, C_in, Dch)(f).data, want, rtol=1e-12, atol=1e-12)


def test_selective_clock_gaps_are_segment_sums():
    """float32, tau up to ~3000: the dense gap sum_{s<r<=t} Delta_r keeps its relative accuracy; the
    difference of the two prefix sums (the tile path) loses ~eps * tau_t."""
    rng = np.random.default_rng(13)
    L = 1500
    k = T.SelectiveKernel(1, 1, state_dim=1, dt_softplus=False, rng=0, dtype=np.float32)
    k.W_dt.data[...] = 1.0
    k.b_dt.data[...] = 0.0
    f = rng.uniform(1.5, 2.5, (1, L, 1)).astype(np.float32)      # Delta_t = f_t
    pts = T.Points(f, np.arange(L, dtype=np.float32).reshape(1, L, 1))
    proj = k.project(pts, pts)
    exact = np.cumsum(f[0, :, 0].astype(F64))
    exact = exact[:, None] - exact[None, :]
    lower = np.tril(np.ones((L, L), bool))
    dense = k.clock_gaps(proj).data[0, :, :, 0]
    tile = k.clock_gaps(proj.tile(slice(0, L), slice(0, L))).data[0, :, :, 0]
    rel = lambda g: np.max(np.abs(g - exact)[lower] / np.maximum(exact[lower], 1.0))
    assert rel(dense) < 5e-6 and rel(tile) > 2e-5
    assert not dense[~lower].any()


def test_lowrank_kernel_biases_and_exp_activation_by_name():
    rng = np.random.default_rng(14)
    k = T.LowRankKernel(3, heads=2, feature_dim=2, bias=True, rng=0, dtype=F64)
    k.b_q.data[...], k.b_k.data[...] = rng.standard_normal(4), rng.standard_normal(4)
    x = rng.standard_normal((1, 5, 3))
    phi = lambda z: np.where(z > 0, z + 1, np.exp(np.minimum(z, 0)))
    q = phi(x @ k.W_q.data.T + k.b_q.data).reshape(1, 5, 2, 2)
    kk = phi(x @ k.W_k.data.T + k.b_k.data).reshape(1, 5, 2, 2)
    np.testing.assert_allclose(k(T.Points(x, np.arange(5.0).reshape(1, 5, 1))).data,
                               np.einsum("bnhr,bmhr->bhnm", q, kk), rtol=1e-13)
    m = T.MLPKernel(2, 1, hidden=1, inputs=("dist2",), activation="exp", rng=0, dtype=F64)
    p = rng.standard_normal((1, 4, 1))
    proj = m.project(T.Points(np.zeros((1, 4, 2)), p), T.Points(np.zeros((1, 4, 2)), p))
    assert m.factors(proj)[-1] == "exp"
    pre = m.W1.data[0, 0] * (p[0, :, None, 0] - p[0, None, :, 0]) ** 2 + m.b1.data[0]
    want = m.W2.data[0, 0] * np.exp(pre) + m.b2.data[0]
    np.testing.assert_allclose(m.scores(proj).data[0, 0], want, rtol=1e-13)


# ----- activations: one registry (nn.functional), used by kernels, the dense path and fused kernels --

def test_activation_registry_is_the_one_home():
    """Kernels resolve names in nn.functional's registry; every fused activation is one of its names;
    every entry is a module-level function (pickles by reference: no lambdas)."""
    import pickle

    from itnet_np.nn.functional import activations as A
    from itnet_np.transform.fused._tiles import ACTIVATIONS as FUSED
    assert set(FUSED) <= set(A.ACTIVATIONS)
    for name, fn in A.ACTIVATIONS.items():
        assert pickle.loads(pickle.dumps(fn)) is fn, name
        k = T.MLPKernel(2, activation=name, rng=0, dtype=F64)
        assert k.activation is fn and k.activation_name == name
    own = lambda z: z * 2
    assert T.MLPKernel(2, activation=own, rng=0, dtype=F64).activation is own
    assert T.LowRankKernel(2, feature_map="elu+1", rng=0, dtype=F64).phi is A.ACTIVATIONS["elu+1"]


@pytest.mark.parametrize("name,at_zero", [("relu", 0.0), ("elu+1", 1.0), ("identity", 1.0), ("gelu_tanh", 0.5),
                                          ("silu", 0.5), ("tanh", 1.0), ("sigmoid", 0.25), ("softplus", 0.5)])
def test_activation_derivatives_at_zero(name, at_zero):
    """The kink convention of nn.functional (relu'(0) = 0, as torch and the fused kernel): the old
    kernels' relu (ops.maximum) and elu+1 (ops.minimum) split the tie and gave 1/2 there. Values
    away from 0 against the formulas, derivatives against central differences."""
    from itnet_np.nn.functional.activations import ACTIVATIONS
    fn = ACTIVATIONS[name]
    x = itn.tensor(np.array([0.0, -1.3, 0.7, 2.0]), requires_grad=True)
    fn(x).sum().backward()
    assert x.grad.data[0] == at_zero
    h, z = 1e-6, x.data[1:]
    numeric = (fn(z + h) - fn(z - h)) / (2 * h)
    np.testing.assert_allclose(x.grad.data[1:], numeric, rtol=1e-7, atol=1e-9)
    formulas = {"relu": np.maximum(z, 0), "elu+1": np.where(z > 0, z + 1, np.exp(z)), "identity": z,
                "tanh": np.tanh(z), "sigmoid": 1 / (1 + np.exp(-z)), "silu": z / (1 + np.exp(-z)),
                "softplus": np.log1p(np.exp(z)),
                "gelu_tanh": 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))}
    np.testing.assert_allclose(fn(z), formulas[name], rtol=1e-13)
