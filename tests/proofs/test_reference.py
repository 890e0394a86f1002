"""Cross-checks of itnet_np.proofs.reference (float64).

Torch-free checks always run: SciPy correlation, structural conv identities, hand-computed gates and
buckets, and the equality of two independent forms of each sequence model (scan vs closed kernel form,
quadratic vs recurrent, recurrence vs FFT convolution, Van Loan's matrix exponential for ZOH).
Checks against PyTorch skip when torch is not installed.
"""
import math

import numpy as np
import pytest
import scipy.linalg
import scipy.signal
from hypothesis import assume, given
from hypothesis import strategies as st
from itnet_np.proofs import reference as R

TOL = {"rtol": 1e-12, "atol": 1e-12}


def close(a, b, **kw):
    np.testing.assert_allclose(a, b, **{**TOL, **kw})


@pytest.fixture
def torch():
    torch = pytest.importorskip("torch")
    return torch


def T(torch, a):
    return torch.as_tensor(np.asarray(a))


# ----------------------------------------------------------------------------------------- convolution

@st.composite
def conv_case(draw, ndim):
    groups = draw(st.integers(1, 3))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    k = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    d = tuple(draw(st.integers(1, 2)) for _ in range(ndim))
    sizes = tuple(draw(st.integers(1, 9 if ndim == 1 else 6)) for _ in range(ndim))
    kind = draw(st.sampled_from(["int", "same", "valid"]))
    s = (1,) * ndim if kind == "same" else tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    pad = {"same": "same", "valid": "valid", "int": draw(st.integers(0, 2))}[kind]
    p = 0 if isinstance(pad, str) else pad
    for n, kk, dd, ss in zip(sizes, k, d, s):
        assume(kind == "same" or (n + 2 * p - dd * (kk - 1) - 1) // ss + 1 >= 1)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((2, c_in) + sizes)
    w = rng.standard_normal((c_out, c_in // groups) + k)
    b = rng.standard_normal(c_out) if draw(st.booleans()) else None
    return x, w, b, s, pad, d, groups


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@given(conv_case(1))
def test_conv1d_matches_torch(case):
    torch = pytest.importorskip("torch")
    x, w, b, s, pad, d, g = case
    want = torch.nn.functional.conv1d(T(torch, x), T(torch, w), None if b is None else T(torch, b),
                                      stride=s[0], padding=pad, dilation=d[0], groups=g).numpy()
    close(R.conv1d_ref(x, w, b, stride=s[0], padding=pad, dilation=d[0], groups=g), want)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@given(conv_case(2))
def test_conv2d_matches_torch(case):
    torch = pytest.importorskip("torch")
    x, w, b, s, pad, d, g = case
    want = torch.nn.functional.conv2d(T(torch, x), T(torch, w), None if b is None else T(torch, b),
                                      stride=s, padding=pad, dilation=d, groups=g).numpy()
    close(R.conv2d_ref(x, w, b, stride=s, padding=pad, dilation=d, groups=g), want)


@given(L=st.integers(1, 10), k=st.integers(1, 4), p=st.integers(0, 3), seed=st.integers(0, 99))
def test_conv1d_matches_scipy_correlate(L, k, p, seed):
    assume(L + 2 * p >= k)
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal((2, 3, L)), rng.standard_normal((4, 3, k)), rng.standard_normal(4)
    xp = np.pad(x, ((0, 0), (0, 0), (p, p)))
    want = np.array([[b[o] + sum(scipy.signal.correlate(xp[n, c], w[o, c], mode="valid") for c in range(3))
                      for o in range(4)] for n in range(2)])
    close(R.conv1d_ref(x, w, b, padding=p), want)


def test_conv2d_matches_scipy_correlate2d():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 3, 5, 6)), rng.standard_normal((2, 3, 3, 2))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (2, 2)))
    want = np.array([[sum(scipy.signal.correlate2d(xp[n, c], w[o, c], mode="valid") for c in range(3))
                      for o in range(2)] for n in range(2)])
    close(R.conv2d_ref(x, w, padding=(1, 2)), want)


def test_conv_same_puts_extra_zero_on_the_right():
    # K = 2, d = 1: total padding 1, all on the right: out[i] = w0 x[i] + w1 x[i+1], x[L] = 0.
    x, w = np.array([[[1.0, 2.0, 3.0]]]), np.array([[[10.0, 1.0]]])
    close(R.conv1d_ref(x, w, padding="same"), [[[12.0, 23.0, 30.0]]])
    # K = 4, d = 1: total 3 -> left 1, right 2: out[i] = sum_a w[a] x[i - 1 + a].
    w4 = np.array([[[1.0, 10.0, 100.0, 1000.0]]])
    close(R.conv1d_ref(x, w4, padding="same"), [[[3210.0, 321.0, 32.0]]])
    with pytest.raises(ValueError, match="strided"):
        R.conv1d_ref(x, w, stride=2, padding="same")


def test_conv_structure_stride_dilation_groups():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 4, 11)), rng.standard_normal((6, 2, 3))
    full = R.conv1d_ref(x, w, padding=2, groups=2)
    close(R.conv1d_ref(x, w, padding=2, stride=3, groups=2), full[..., ::3])      # stride = decimation
    w_dil = np.zeros((6, 2, 5))
    w_dil[..., ::2] = w                                                             # dilation = zero taps
    close(R.conv1d_ref(x, w, dilation=2, groups=2), R.conv1d_ref(x, w_dil, groups=2))
    w_block = np.zeros((6, 4, 3))                                                   # groups = block diag
    w_block[:3, :2], w_block[3:, 2:] = w[:3], w[3:]
    close(full, R.conv1d_ref(x, w_block, padding=2))


# ------------------------------------------------------------------------------------------- attention

def test_sdpa_hand_loop_and_mask_conventions():
    rng = np.random.default_rng(3)
    q, k, v = rng.standard_normal((3, 2)), rng.standard_normal((4, 2)), rng.standard_normal((4, 5))
    out = R.sdpa_ref(q, k, v)
    for i in range(3):
        e = [math.exp(q[i] @ k[j] / math.sqrt(2)) for j in range(4)]
        close(out[i], sum(e[j] * v[j] for j in range(4)) / sum(e))
    mask = rng.random((3, 4)) > 0.4
    mask[1] = False
    got = R.sdpa_ref(q, k, v, attn_mask=mask)
    close(got, R.sdpa_ref(q, k, v, attn_mask=np.where(mask, 0.0, -np.inf)))
    close(got[1], 0.0)                                       # fully masked row -> zeros
    close(R.sdpa_ref(q, k, v, is_causal=True), R.sdpa_ref(q, k, v, attn_mask=np.tril(np.ones((3, 4), bool))))
    with pytest.raises(ValueError, match="not both"):
        R.sdpa_ref(q, k, v, attn_mask=mask, is_causal=True)


@pytest.mark.parametrize("mode", ["none", "bool", "float", "causal", "empty_row"])
def test_sdpa_matches_torch(torch, mode):
    rng = np.random.default_rng(4)
    q, k, v = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((2, 3, 6, 4)), rng.standard_normal((2, 3, 6, 3))
    mask, causal = None, "causal" in mode
    if "bool" in mode or mode == "empty_row":
        mask = rng.random((2, 1, 5, 6)) > 0.3
        if mode == "empty_row":
            mask[0, 0, 2] = False
    elif mode == "float":
        mask = rng.standard_normal((5, 6))
    want = torch.nn.functional.scaled_dot_product_attention(
        T(torch, q), T(torch, k), T(torch, v), attn_mask=None if mask is None else T(torch, mask),
        is_causal=causal).numpy()
    close(R.sdpa_ref(q, k, v, attn_mask=mask, is_causal=causal), want)
    close(R.sdpa_ref(q, k, v, scale=0.3), torch.nn.functional.scaled_dot_product_attention(
        T(torch, q), T(torch, k), T(torch, v), scale=0.3).numpy())


@pytest.mark.parametrize("mode", ["none", "bool", "float", "bool3d", "padding", "causal", "nobias"])
def test_mha_matches_torch(torch, mode):
    rng = np.random.default_rng(5)
    B, L, S, E, H = 2, 4, 5, 6, 3
    S = L if mode == "causal" else S
    mha = torch.nn.MultiheadAttention(E, H, batch_first=True, bias=mode != "nobias").double().eval()
    with torch.no_grad():
        for p in mha.parameters():
            p.copy_(T(torch, rng.standard_normal(tuple(p.shape))))
    query, key, value = rng.standard_normal((B, L, E)), rng.standard_normal((B, S, E)), rng.standard_normal((B, S, E))
    kw = {}
    if mode == "bool":
        kw["attn_mask"] = rng.random((L, S)) > 0.7                # True = NOT allowed
        kw["attn_mask"][:, 0] = False
    elif mode == "float":
        kw["attn_mask"] = rng.standard_normal((L, S))
    elif mode == "bool3d":
        kw["attn_mask"] = rng.random((B * H, L, S)) > 0.7
        kw["attn_mask"][..., 1] = False
    elif mode == "padding":
        kw["key_padding_mask"] = np.array([[False] * S, [False] * 3 + [True] * (S - 3)])
    elif mode == "causal":
        kw["attn_mask"], kw["is_causal"] = np.triu(np.ones((L, S), bool), 1), True
    want = mha(T(torch, query), T(torch, key), T(torch, value), need_weights=False,
               **{n: T(torch, a) if isinstance(a, np.ndarray) else a for n, a in kw.items()})[0].detach().numpy()
    bias = lambda p: None if p is None else p.detach().numpy()
    got = R.mha_ref(query, key, value, mha.in_proj_weight.detach().numpy(), bias(mha.in_proj_bias),
                    mha.out_proj.weight.detach().numpy(), bias(mha.out_proj.bias), H, **kw)
    close(got, want)


def test_mha_single_head_identity_projection_is_sdpa():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 5, 4))
    eye = np.eye(4)
    got = R.mha_ref(x, y, y, np.vstack([eye, eye, eye]), None, eye, None, 1,
                    key_padding_mask=np.array([[False] * 4 + [True]] * 2))
    close(got, R.sdpa_ref(x, y[:, :4], y[:, :4]))


def test_alibi_slopes_and_bias():
    close(R.alibi_slopes(8), [2.0 ** -h for h in range(1, 9)])
    close(R.alibi_slopes(4), [2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8])
    close(R.alibi_slopes(6), [2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8, 2.0 ** -1, 2.0 ** -3])
    close(R.alibi_slopes(1), [2.0 ** -8])
    bias = R.alibi_bias(2, 3, 3, causal=True)          # slopes 1/16, 1/256
    close(bias[0], [[0, -np.inf, -np.inf], [-1 / 16, 0, -np.inf], [-2 / 16, -1 / 16, 0]])
    close(R.alibi_bias(2, 3, 4, causal=False)[1, 0], [0, -1 / 256, -2 / 256, -3 / 256])


def test_t5_relative_bucket_hand_values():
    # bidirectional, 32 buckets, max_distance 128: 16 per direction, max_exact 8,
    # large bucket = 8 + trunc(8 * log(r/8) / log(16)) = 8 + trunc(2 log2(r/8)), capped at 15.
    rp = np.array([0, -1, -7, -8, -11, -12, -16, -22, -23, -127, -128, -1000, 1, 7, 16, 1000])
    want = [0, 1, 7, 8, 8, 9, 10, 10, 11, 15, 15, 15, 17, 23, 26, 31]
    np.testing.assert_array_equal(R.t5_relative_bucket(rp), want)
    # unidirectional: future -> 0, max_exact 16, bucket = 16 + trunc(16 log(r/16)/log(8)), capped at 31.
    rp = np.array([5, 0, -1, -15, -16, -32, -64, -127, -500])
    np.testing.assert_array_equal(R.t5_relative_bucket(rp, bidirectional=False), [0, 0, 1, 15, 16, 21, 26, 31, 31])


# ------------------------------------------------------------------------------------------- recurrent

def _rnn_weights(rng, gates, n_in, n_h):
    return (rng.standard_normal((gates * n_h, n_in)), rng.standard_normal((gates * n_h, n_h)),
            rng.standard_normal(gates * n_h), rng.standard_normal(gates * n_h))


def _sig(a):
    return 1.0 / (1.0 + math.exp(-a))


def test_gru_lstm_rnn_one_step_by_hand():
    rng = np.random.default_rng(7)
    n_in, n_h = 3, 2
    x, h0, c0 = rng.standard_normal((1, 1, n_in)), rng.standard_normal((1, 1, n_h)), rng.standard_normal((1, 1, n_h))
    xs, hs, cs = x[0, 0], h0[0, 0], c0[0, 0]

    def pre(W_i, W_h, b_i, b_h, row):              # W_i[row] . x + b_i[row] + W_h[row] . h + b_h[row]
        return sum(W_i[row, c] * xs[c] for c in range(n_in)) + b_i[row] + \
            sum(W_h[row, c] * hs[c] for c in range(n_h)) + b_h[row]

    W_i, W_h, b_i, b_h = _rnn_weights(rng, 3, n_in, n_h)
    out, h_n = R.gru_ref(x, h0, W_i, W_h, b_i, b_h)
    for u in range(n_h):
        r = _sig(pre(W_i, W_h, b_i, b_h, u))
        z = _sig(pre(W_i, W_h, b_i, b_h, n_h + u))
        gi = sum(W_i[2 * n_h + u, c] * xs[c] for c in range(n_in)) + b_i[2 * n_h + u]
        gh = sum(W_h[2 * n_h + u, c] * hs[c] for c in range(n_h)) + b_h[2 * n_h + u]
        n = math.tanh(gi + r * gh)
        close(out[0, 0, u], (1 - z) * n + z * hs[u])
    close(h_n[0], out[:, -1])

    W_i, W_h, b_i, b_h = _rnn_weights(rng, 4, n_in, n_h)
    out, (h_n, c_n) = R.lstm_ref(x, (h0, c0), W_i, W_h, b_i, b_h)
    for u in range(n_h):
        i, f, g, o = (_sig(pre(W_i, W_h, b_i, b_h, u)), _sig(pre(W_i, W_h, b_i, b_h, n_h + u)),
                      math.tanh(pre(W_i, W_h, b_i, b_h, 2 * n_h + u)), _sig(pre(W_i, W_h, b_i, b_h, 3 * n_h + u)))
        c = f * cs[u] + i * g
        close([c_n[0, 0, u], h_n[0, 0, u], out[0, 0, u]], [c, o * math.tanh(c), o * math.tanh(c)])

    W_i, W_h, b_i, b_h = _rnn_weights(rng, 1, n_in, n_h)
    out, _ = R.rnn_ref(x, h0, W_i, W_h, b_i, b_h, nonlinearity="relu")
    close(out[0, 0], [max(pre(W_i, W_h, b_i, b_h, u), 0.0) for u in range(n_h)])


@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "gru", "lstm"])
@pytest.mark.parametrize("with_state", [False, True])
def test_recurrent_matches_torch(torch, cell, with_state):
    rng = np.random.default_rng(8)
    B, L, n_in, n_h = 2, 5, 3, 4
    if cell.startswith("rnn"):
        mod = torch.nn.RNN(n_in, n_h, batch_first=True, nonlinearity=cell[4:])
    else:
        mod = getattr(torch.nn, cell.upper())(n_in, n_h, batch_first=True)
    mod = mod.double()
    x, h0, c0 = rng.standard_normal((B, L, n_in)), rng.standard_normal((1, B, n_h)), rng.standard_normal((1, B, n_h))
    weights = [getattr(mod, n).detach().numpy() for n in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")]
    if cell == "lstm":
        state = (T(torch, h0), T(torch, c0)) if with_state else None
        want, (wh, wc) = mod(T(torch, x), state)
        got, (gh, gc) = R.lstm_ref(x, (h0, c0) if with_state else None, *weights)
        close(gc, wc.detach().numpy())
    else:
        want, wh = mod(T(torch, x), T(torch, h0) if with_state else None)
        ref = R.gru_ref if cell == "gru" else R.rnn_ref
        extra = {} if cell == "gru" else {"nonlinearity": cell[4:]}
        got, gh = ref(x, h0 if with_state else None, *weights, **extra)
    close(got, want.detach().numpy())
    close(gh, wh.detach().numpy())


# ------------------------------------------------------------------------------------------ mamba / SSD

@pytest.mark.parametrize("bc", ["variable", "constant", "grouped"])
def test_selective_scan_equals_kernel_form(bc):
    rng = np.random.default_rng(9)
    Bt, D, N, L = 2, 4, 3, 7
    u, z = rng.standard_normal((Bt, D, L)), rng.standard_normal((Bt, D, L))
    delta, A = rng.standard_normal((Bt, D, L)), -0.5 - rng.random((D, N))
    shape = {"variable": (Bt, N, L), "constant": (D, N), "grouped": (Bt, 2, N, L)}[bc]
    Bm, Cm = rng.standard_normal(shape), rng.standard_normal(shape)
    kw = {"D": rng.standard_normal(D), "z": z, "delta_bias": rng.standard_normal(D), "delta_softplus": True}
    out, last = R.selective_scan_ref(u, delta, A, Bm, Cm, return_last_state=True, **kw)
    close(out, R.selective_scan_kernel_ref(u, delta, A, Bm, Cm, **kw))
    assert last.shape == (Bt, D, N)
    # without z/D/softplus, the output is exactly y = C . x and the last state feeds it
    plain = R.selective_scan_ref(u, np.abs(delta), A, Bm, Cm)
    close(plain, R.selective_scan_kernel_ref(u, np.abs(delta), A, Bm, Cm))


def test_selective_scan_last_state_and_grouping():
    rng = np.random.default_rng(10)
    u, delta, A = rng.standard_normal((1, 4, 5)), rng.random((1, 4, 5)), -rng.random((4, 2))
    Bg, Cg = rng.standard_normal((1, 2, 2, 5)), rng.standard_normal((1, 2, 2, 5))
    out = R.selective_scan_ref(u, delta, A, Bg, Cg)
    # channels 0,1 use group 0; channels 2,3 use group 1
    close(out[:, :2], R.selective_scan_ref(u[:, :2], delta[:, :2], A[:2], Bg[:, 0], Cg[:, 0]))
    close(out[:, 2:], R.selective_scan_ref(u[:, 2:], delta[:, 2:], A[2:], Bg[:, 1], Cg[:, 1]))
    _, last = R.selective_scan_ref(u, delta, A, Bg[:, 0], Cg[:, 0], return_last_state=True)
    x = np.zeros((4, 2))
    for t in range(5):
        x = np.exp(delta[0, :, t, None] * A) * x + delta[0, :, t, None] * Bg[0, 0, :, t] * u[0, :, t, None]
    close(last[0], x)


def test_softplus_torch_threshold(torch):
    x = np.array([-30.0, -1.0, 0.0, 3.0, 19.9, 20.0, 20.0001, 40.0])
    close(R.softplus_torch(x), torch.nn.functional.softplus(T(torch, x)).numpy())


def test_segsum_is_stable_and_matches_definition():
    A = np.array([[1e3, -2.0, 0.5, -1e-3]])
    s = R.segsum_ref(A)
    close(s[0], [[0, -np.inf, -np.inf, -np.inf], [-2.0, 0, -np.inf, -np.inf],
                 [-1.5, 0.5, 0, -np.inf], [-1.501, 0.499, -1e-3, 0]], rtol=0, atol=0)   # exact: no cancellation


@pytest.mark.parametrize("with_state", [False, True])
def test_ssd_quadratic_equals_recurrent(with_state):
    rng = np.random.default_rng(11)
    Bt, L, H, P, N = 2, 9, 3, 2, 4
    X, A = rng.standard_normal((Bt, L, H, P)), -rng.random((Bt, L, H))
    Bm, Cm = rng.standard_normal((Bt, L, H, N)), rng.standard_normal((Bt, L, H, N))
    h0 = rng.standard_normal((Bt, H, P, N)) if with_state else None
    Y, h_last = R.ssd_recurrent_ref(X, A, Bm, Cm, initial_state=h0, return_final_state=True)
    close(R.ssd_ref(X, A, Bm, Cm, initial_state=h0), Y)
    assert h_last.shape == (Bt, H, P, N)


def test_ssd_is_selective_scan_with_scalar_decay():
    # SSD head h with a_t = exp(dt_t a_h) and inputs dt_t x_t is S6 with A[d, n] = a_h for all n.
    rng = np.random.default_rng(12)
    Bt, L, H, P, N = 1, 6, 2, 2, 3
    x, dt, a = rng.standard_normal((Bt, L, H, P)), rng.random((Bt, L, H)) + 0.1, -rng.random(H)
    Bm, Cm = rng.standard_normal((Bt, L, H, N)), rng.standard_normal((Bt, L, H, N))
    Y = R.ssd_ref(x * dt[..., None], dt * a, Bm, Cm)
    for h in range(H):
        u = x[:, :, h].transpose(0, 2, 1)                                 # (B, P, L)
        delta = np.repeat(dt[:, None, :, h], P, axis=1)
        out = R.selective_scan_ref(u, delta, np.full((P, N), a[h]), Bm[:, :, h].transpose(0, 2, 1),
                                   Cm[:, :, h].transpose(0, 2, 1))
        close(out.transpose(0, 2, 1), Y[:, :, h])


# ---------------------------------------------------------------------------------------------- S4D

def _s4d_params(rng, H, N, complex_):
    A = -0.5 - rng.random((H, N)) + (1j * rng.standard_normal((H, N)) if complex_ else 0)
    B = rng.standard_normal((H, N)) + (1j * rng.standard_normal((H, N)) if complex_ else 0)
    C = rng.standard_normal((H, N)) + (1j * rng.standard_normal((H, N)) if complex_ else 0)
    return A, B, C


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
@pytest.mark.parametrize("complex_,conj", [(False, False), (True, False), (True, True)])
def test_s4d_recurrence_equals_fft_convolution(disc, complex_, conj):
    rng = np.random.default_rng(13)
    H, N, L = 3, 4, 16
    A, B, C = _s4d_params(rng, H, N, complex_)
    u, D, dt = rng.standard_normal((2, H, L)), rng.standard_normal(H), rng.random(H) * 0.5 + 0.05
    y = R.s4d_recurrent_ref(u, A, B, C, D, dt, disc, conj_pairs=conj)
    K = R.s4d_kernel_ref(A, B, C, dt, L, disc, conj_pairs=conj)
    close(R.fft_causal_conv_ref(u, K, D), y, atol=1e-11)
    direct = np.array([[[sum(K[h, k - j] * u[b, h, j] for j in range(k + 1)) for k in range(L)]
                        for h in range(H)] for b in range(2)])
    close(direct + D[:, None] * u, y)


@pytest.mark.parametrize("disc", ["zoh", "bilinear"])
def test_s4d_conj_pairs_equals_full_conjugate_system(disc):
    # Keeping one mode of each conjugate pair and doubling the real part == the 2N-mode system itself.
    rng = np.random.default_rng(16)
    A, B, C = _s4d_params(rng, 2, 3, True)
    u, dt = rng.standard_normal((1, 2, 10)), 0.2
    full = [np.concatenate([m, m.conj()], axis=1) for m in (A, B, C)]
    want = R.s4d_recurrent_ref(u, *full, None, dt, disc)
    close(R.s4d_recurrent_ref(u, A, B, C, None, dt, disc, conj_pairs=True), want)
    close(R.s4d_kernel_ref(A, B, C, dt, 10, disc, conj_pairs=True), R.s4d_kernel_ref(*full, dt, 10, disc))


@pytest.mark.parametrize("complex_", [False, True])
def test_s4d_zoh_matches_van_loan_expm(complex_):
    # ZOH: [[A, B], [0, 0]] dt exponentiates to [[Abar, Bbar], [0, 1]] (Van Loan), per scalar mode.
    rng = np.random.default_rng(14)
    A, B, _ = _s4d_params(rng, 2, 3, complex_)
    A[0, 0] = 0.0                                                     # the A -> 0 limit: Bbar = dt B
    a_bar, b_bar = R.s4d_discretize(A, B, 0.3, "zoh")
    for h in range(2):
        for n in range(3):
            E = scipy.linalg.expm(0.3 * np.array([[A[h, n], B[h, n]], [0, 0]]))
            close([a_bar[h, n], b_bar[h, n]], [E[0, 0], E[0, 1]])
    a_bar, b_bar = R.s4d_discretize(A, B, 0.3, "bilinear")
    close(a_bar * (1 - 0.15 * A), 1 + 0.15 * A)
    close(b_bar * (1 - 0.15 * A), 0.3 * B)


# --------------------------------------------------------------------------------- linear attention

@pytest.mark.parametrize("eps", [0.0, 1e-3])
@pytest.mark.parametrize("feature", ["elu", "square"])
def test_linear_attention_parallel_equals_recurrent(eps, feature):
    rng = np.random.default_rng(15)
    q, k, v = rng.standard_normal((2, 3, 8, 4)), rng.standard_normal((2, 3, 8, 4)), rng.standard_normal((2, 3, 8, 5))
    fmap = None if feature == "elu" else (lambda t: t * t + 0.1)
    par = R.causal_linear_attention_ref(q, k, v, fmap, eps)
    close(par, R.causal_linear_attention_recurrent_ref(q, k, v, fmap, eps))
    phi = R.elu_plus_one if fmap is None else fmap
    i = 5                                                               # one row by hand
    w = [float(phi(q[1, 2, i]) @ phi(k[1, 2, j])) for j in range(i + 1)]
    close(par[1, 2, i], sum(w[j] * v[1, 2, j] for j in range(i + 1)) / (sum(w) + eps))


def test_elu_plus_one():
    x = np.array([-50.0, -1.0, 0.0, 2.0])
    close(R.elu_plus_one(x), [math.exp(-50), math.exp(-1), 1.0, 3.0])
