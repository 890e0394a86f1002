"""IntegralTransform against an explicit loop over (b, i, h, j) written from the formula

    y_i = sum_h W_O^h sum_{j in S(i)} n_h(w_j, K^h_ij) (W_V^h f_j + b_V^h) + W_skip f_i + b,

for every kernel family, normalisation, support, quadrature, given weights, self and cross mode.
The per-pair kernels below are written from each family's published formula with scalar math,
independently of the vectorised (factorised, einsum) code under test.
"""
import cmath
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import erf

import itnet_np as itn
from itnet_np import transform as T

F64 = np.float64
ACT = {"silu": lambda z: z / (1 + np.exp(-z)), "tanh": np.tanh, "sin": np.sin, "relu": lambda z: np.maximum(z, 0),
       "exp": np.exp,
       "gelu": lambda z: 0.5 * z * (1 + erf(z / math.sqrt(2))),
       "gelu_tanh": lambda z: 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))}
FAMILIES = ("mlp", "dot", "stencil", "decay", "selective", "lowrank", "sum")


def softplus(z):
    return np.logaddexp(0.0, z)


def elu1(z):
    return np.where(z > 0, z + 1, np.exp(np.minimum(z, 0)))


# ----- per-pair kernels, scalar formulas ---------------------------------------------------------
def t5_bucket_ref(rel, bidirectional, num_buckets, max_distance):
    ret, n = 0, num_buckets
    if bidirectional:
        n //= 2
        ret += n if rel > 0 else 0
        dist = abs(rel)
    else:
        dist = max(-rel, 0)
    exact = n // 2
    if dist < exact:
        return ret + dist
    return ret + min(exact + int(math.log(dist / exact) / math.log(max_distance / exact) * (n - exact)), n - 1)


def pair_scores(k, fq, pq, fs, ps, b, i, j):
    """s^h_ij for all h, and the kernel's own weight of source j (1 unless selective)."""
    P = lambda t: t.data
    fi, fj, pi, pj = fq[b, i], fs[b, j], pq[b, i], ps[b, j]
    H = k.heads
    if isinstance(k, T.SumKernel):
        parts = [pair_scores(c, fq, pq, fs, ps, b, i, j) for c in k.kernels]
        return sum(s * w for s, w in parts), np.ones(H)
    if isinstance(k, T.MLPKernel):
        dp = pi - pj
        feats = {"dp": dp, "dist2": np.array([dp @ dp])}
        if "fourier" in k.inputs:
            om = np.asarray(k.frequencies)
            feats["fourier"] = np.concatenate([np.sin(om @ dp), np.cos(om @ dp)])
        if "prod" in k.inputs:
            feats["prod"] = (P(k.P) @ fi) * (P(k.Q) @ fj)
        feats["fi"], feats["fj"] = fi, fj
        z = np.concatenate([feats[n] for n in ("dp", "dist2", "fourier", "prod", "fi", "fj") if n in k.inputs])
        return P(k.W2) @ ACT[k.activation_name](P(k.W1) @ z + P(k.b1)) + P(k.b2), np.ones(H)
    if isinstance(k, T.DotProductKernel):
        d = k.head_dim
        q = P(k.W_q) @ fi + (0 if k.b_q is None else P(k.b_q))
        kk = P(k.W_k) @ fj + (0 if k.b_k is None else P(k.b_k))
        s = np.array([k.scale * q[h * d:(h + 1) * d] @ kk[h * d:(h + 1) * d] for h in range(H)])
        rb = k.position_bias
        if rb is not None:
            rel = round(pj[0] - pi[0])
            for h in range(H):
                if rb.kind == "alibi":
                    s[h] -= 2.0 ** (-8.0 * (h + 1) / H) * abs(rel)
                elif rb.kind == "t5":
                    s[h] += P(rb.table)[h, t5_bucket_ref(rel, rb.bidirectional, rb.num_buckets, rb.max_distance)]
                else:
                    s[h] += P(rb.table)[h, min(max(rel, -rb.max_distance), rb.max_distance) + rb.max_distance]
        return s, np.ones(H)
    if isinstance(k, T.StencilKernel):
        hits = np.array([np.array_equal(pj - pi, o) for o in np.asarray(k.offsets)], dtype=float)
        return P(k.table) @ hits, np.ones(H)
    if isinstance(k, T.DecayKernel):
        lag = pi[0] - pj[0]
        s = np.zeros(H)
        if lag > 0 or (lag == 0 and not k.strict):
            for h in range(H):
                for n in range(k.real_modes):
                    s[h] += P(k.coef)[h, n] * math.exp(P(k.log_rate)[h, n]) ** lag
                for n in range(k.complex_modes):
                    mu = cmath.exp(complex(P(k.log_modulus)[h, n], P(k.angle)[h, n]))
                    g = complex(P(k.coef_re)[h, n], P(k.coef_im)[h, n])
                    s[h] += 2 * (g * mu ** lag).real
        return s, np.ones(H)
    if isinstance(k, T.SelectiveKernel):
        delta = softplus(fs[b] @ P(k.W_dt).T + P(k.b_dt))                  # (M, H), per point
        A = P(k.A) if k.direct_A else -np.exp(P(k.A_log))
        Ct, Bs = P(k.W_C) @ fi, P(k.W_B) @ fj
        s = np.zeros(H)
        if i >= j:
            for h in range(H):
                gap = sum(delta[r, h] for r in range(j + 1, i + 1))
                s[h] = sum(Ct[n] * Bs[n] * math.exp(A[h, n] * gap) for n in range(k.state_dim))
        return s, delta[j] if k.delta_as_weight else np.ones(H)
    if isinstance(k, T.LowRankKernel):
        r = k.feature_dim
        a = elu1(P(k.W_q) @ fi + (0 if k.b_q is None else P(k.b_q)))
        c = elu1(P(k.W_k) @ fj + (0 if k.b_k is None else P(k.b_k)))
        return np.array([a[h * r:(h + 1) * r] @ c[h * r:(h + 1) * r] for h in range(H)]), np.ones(H)
    raise AssertionError(type(k))


def loop_transform(op, fq, pq, fs, ps, support, window, radius, mask, given_w, bias):
    """y (B, N, Cout) by explicit loops; positions (B, N, D) float arrays; given_w (B, H, M), mask
    (B, H, N, M) bool and bias (B, H, N, M) float, each or None."""
    P = lambda t: t.data
    B, N, M, H, d = fq.shape[0], fq.shape[1], fs.shape[1], op.heads, op.head_dim
    y = np.zeros((B, N, op.out_features))
    for b in range(B):
        for i in range(N):
            for h in range(H):
                terms = []                                   # (weight, score, value) of kept j
                for j in range(M):
                    dp = ps[b, j] - pq[b, i]
                    keep = {"full": True, "causal": dp[0] <= 0, "strict_causal": dp[0] < 0}[support]
                    keep &= window is None or np.max(np.abs(dp)) <= window
                    keep &= radius is None or math.sqrt(dp @ dp) <= radius
                    keep &= mask is None or bool(mask[b, h, i, j])
                    if not keep:
                        continue
                    s, kw = pair_scores(op.kernel, fq, pq, fs, ps, b, i, j)
                    w = kw[h] * (1.0 if given_w is None else given_w[b, h, j])
                    if op.quadrature == "mean":
                        w /= M
                    elif op.quadrature == "learned":
                        net = op.quadrature_net
                        hh = h if net.heads > 1 else 0
                        w *= softplus(P(net.weight)[hh] @ fs[b, j] + P(net.bias)[hh])
                    v = P(op.W_V)[h * d:(h + 1) * d] @ fs[b, j]
                    if op.b_V is not None:
                        v = v + P(op.b_V)[h * d:(h + 1) * d]
                    terms.append((w, s[h] + (0.0 if bias is None else bias[b, h, i, j]), v))
                out = np.zeros(d)
                if op.normalization == "none":
                    out = sum((w * s * v for w, s, v in terms), out)
                elif op.normalization == "sum":
                    den = sum(w * s for w, s, _ in terms)
                    if terms and den != 0:
                        out = sum(w * s * v for w, s, v in terms) / den
                else:
                    live = [(w, s, v) for w, s, v in terms if w > 0]
                    if live:
                        top = max(s for _, s, _ in live)
                        den = sum(w * math.exp(s - top) for w, s, _ in live)
                        out = sum(w * math.exp(s - top) * v for w, s, v in live) / den
                y[b, i] += P(op.W_O)[:, h * d:(h + 1) * d] @ out
            if op.W_skip is not None:
                y[b, i] += P(op.W_skip) @ fq[b, i]
            if op.b is not None:
                y[b, i] += P(op.b)
    return y


# ----- building random cases ----------------------------------------------------------------------
def make_kernel(family, C, Cq, H, D, rng, draw):
    if family == "mlp":
        inputs = draw(st.lists(st.sampled_from(["dp", "dist2", "fourier", "prod", "fi", "fj"]),
                               min_size=1, unique=True))
        return T.MLPKernel(C, H, hidden=draw(st.integers(1, 4)), inputs=inputs, position_dim=D,
                           query_features=Cq, fourier=2, product_rank=2,
                           activation=draw(st.sampled_from(sorted(ACT))), rng=rng, dtype=F64)
    if family == "dot":
        return T.DotProductKernel(C, H, head_dim=2, query_features=Cq, bias=draw(st.booleans()),
                                  position_bias=draw(st.sampled_from([None, "alibi", "t5", "learned"])),
                                  num_buckets=8, max_distance=6, bidirectional=draw(st.booleans()),
                                  rng=rng, dtype=F64)
    if family == "stencil":
        offsets = draw(st.lists(st.integers(-2, 2), min_size=1, max_size=3, unique=True))
        return T.StencilKernel(offsets, heads=H, rng=rng, dtype=F64)
    if family == "decay":
        return T.DecayKernel(H, real_modes=draw(st.integers(0, 2)), complex_modes=1,
                             strict=draw(st.booleans()), rng=rng, dtype=F64)
    if family == "selective":
        return T.SelectiveKernel(C, H, state_dim=2, direct_A=draw(st.booleans()),
                                 delta_as_weight=draw(st.booleans()), rng=rng, dtype=F64)
    if family == "lowrank":
        return T.LowRankKernel(C, H, feature_dim=2, query_features=Cq, bias=draw(st.booleans()), rng=rng,
                               dtype=F64)
    return T.SumKernel(T.DecayKernel(H, 1, 1, rng=rng, dtype=F64), T.StencilKernel([-1, 0], heads=H, rng=rng,
                                                                                   dtype=F64))


@st.composite
def cases(draw, family):
    seed = draw(st.integers(0, 2 ** 16))
    rng = np.random.default_rng(seed)
    B, N, H = draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 2))
    C = draw(st.integers(1, 3))
    self_only = family == "selective"
    cross = not self_only and draw(st.booleans())
    M = draw(st.integers(0 if cross else 1, 4)) if cross else N
    Cq = draw(st.integers(1, 3)) if cross and family in ("mlp", "dot", "lowrank") else C
    D = draw(st.integers(1, 2)) if family == "mlp" else 1
    kernel = make_kernel(family, C, Cq, H, D, rng, draw)
    normalization = draw(st.sampled_from(["none", "sum", "softmax"]))
    if family == "sum" and normalization == "softmax":
        normalization = "sum"
    support = draw(st.sampled_from(["full", "causal", "strict_causal"])) if D == 1 else "full"
    window = draw(st.sampled_from([None, 1]))
    radius = draw(st.sampled_from([None, 1.5]))
    quadrature = draw(st.sampled_from(["uniform", "mean", "learned"]))
    op = T.IntegralTransform(C, draw(st.integers(1, 3)), kernel, query_features=Cq, embed_dim=H * 2,
                             normalization=normalization, quadrature=quadrature,
                             learned_weights_per_head=quadrature == "learned" and draw(st.booleans()),
                             support=support, window=window,
                             radius=radius, skip=draw(st.booleans()), bias=draw(st.booleans()),
                             value_bias=draw(st.booleans()), rng=rng, dtype=F64)
    for p in op.parameters():                       # every parameter random, including zero-inits
        p.data[...] = rng.normal(0.0, 0.5, p.shape)
    fq = rng.standard_normal((B, N, Cq))
    fs = fq if not cross else rng.standard_normal((B, M, C))
    if D == 2 or family == "mlp" and draw(st.booleans()):
        pq = rng.uniform(-2, 2, (B, N, D))
        ps = pq if not cross else rng.uniform(-2, 2, (B, M, D))
        pos_args = {"positions": pq} if not cross else {"positions": pq[0], "source_positions": ps[0]}
        if cross:
            pq, ps = np.broadcast_to(pq[:1], pq.shape), np.broadcast_to(ps[:1], ps.shape)
    else:                                            # integer grids; cross sources may be shifted
        shift = draw(st.integers(-2, 2)) if cross else 0
        pq = np.broadcast_to(np.arange(N, dtype=F64)[None, :, None], (B, N, 1))
        ps = pq if not cross else np.broadcast_to(np.arange(M, dtype=F64)[None, :, None] + shift, (B, M, 1))
        pos_args = {} if not cross or shift == 0 else {"source_positions": np.arange(M) + shift}
        if pos_args:
            pos_args["source_positions"] = pos_args["source_positions"][:, None]
    mask = None
    mask_shape = draw(st.sampled_from([None, (B, N, M), (N, M), (B, H, N, M), (1, H, N, M), (B, 1, N, M)]))
    if mask_shape is not None:
        mask = rng.uniform(size=mask_shape) < 0.6
        mask[..., 0, :] = False                       # an all-masked row
    bias_shape = draw(st.sampled_from([None, (N, M), (H, N, M), (1, N, M), (B, H, N, M), (1, H, N, M)]))
    bias = None if bias_shape is None else rng.standard_normal(bias_shape)
    wkind = draw(st.sampled_from(["none", "M", "BM", "BHM"]))
    given_w = {"none": None, "M": rng.uniform(0.2, 2, (M,)), "BM": rng.uniform(0.2, 2, (B, M)),
               "BHM": rng.uniform(0.0, 2, (B, H, M))}[wkind]
    full_w = None if given_w is None else np.broadcast_to(
        given_w if given_w.ndim == 3 else given_w.reshape((given_w.size // max(M, 1) if M else 1, 1, M)), (B, H, M))
    call = {**pos_args, "weights": given_w, "mask": mask, "score_bias": bias}
    if cross:
        call["source"] = fs
    full_mask = None if mask is None else np.broadcast_to(mask if mask.ndim == 4 else (
        mask[:, None] if mask.ndim == 3 else mask), (B, H, N, M))
    full_bias = None if bias is None else np.broadcast_to(bias, (B, H, N, M))
    return op, fq, call, (fq, pq, fs, ps, support, window, radius, full_mask, full_w, full_bias)


@pytest.mark.parametrize("family", FAMILIES)
@given(data=st.data())
def test_operator_matches_explicit_loop(family, data):
    op, fq, call, loop_args = data.draw(cases(family))
    y = op(fq, **call)
    want = loop_transform(op, *loop_args)
    np.testing.assert_allclose(y.data, want, rtol=1e-10, atol=1e-10)
    assert np.isfinite(y.data).all()


@pytest.mark.parametrize("mode", ["self", "cross"])
def test_empty_inputs_get_zero_gradients_not_none(mode):
    """N = 0 queries (self mode) or M = 0 sources (cross mode): the integral is 0, and the inputs'
    gradients are zeros of their shapes (as for any op on empty arrays), not None."""
    layer = T.IntegralTransform(2, 3, T.MLPKernel(2, heads=1, hidden=4, rng=0), normalization="softmax", rng=0)
    n = 0 if mode == "self" else 3
    x = itn.tensor(np.ones((2, n, 2)), requires_grad=True)
    source = itn.tensor(np.ones((2, 0, 2)), requires_grad=True) if mode == "cross" else None
    y = layer(x.astype(np.float32), source=None if source is None else source.astype(np.float32))
    assert y.shape == (2, n, 3)
    np.testing.assert_array_equal(y.numpy(), np.broadcast_to(layer.b.numpy(), (2, n, 3)))
    y.sum().backward()
    for t in (x, source):
        if t is not None:
            assert t.grad is not None and t.grad.shape == t.shape and not np.any(t.grad.numpy())
