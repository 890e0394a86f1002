"""The learned low-rank factorisation (kernels/lowrank.py, transform/lowrank/).

* backend='lowrank' (O((N + M) r d) sums / prefix sums) equals the dense reference (the masked
  N x M form) to 1e-10, forward and every gradient, for 'none' and 'sum', full, causal, strictly
  causal, window and radius supports on sorted off-grid positions, with quadrature weights; for the
  linear-attention kernel and the MLP-featured one (positions, Fourier features, a hidden layer).
* Rank-R approximations: skeleton and randomly pivoted cross reproduce a kernel of rank <= R to
  1e-10 (a random rank-3 oracle, and an MLPKernel on Fourier features with identity activation,
  rank 2F + 1); Performer features are unbiased for e^(q . k); svd_mass against numpy's SVD.
* Distillation: the first reported loss is the relative error computed here; it decreases. The
  closed-form fit of the output layers recovers a teacher that lies in the student's hidden span
  (every pair, not only the fitted block, to 1e-10), and below that rank its error is the
  Eckart-Young tail of the teacher block's own singular values.
"""
from statistics import NormalDist

import numpy as np
import pytest

import itnet_np as itn
from itnet_np import transform as T
from itnet_np.errors import ConfigError
from itnet_np.transform.kernels.base import Points
from itnet_np.transform.lowrank import approx
from itnet_np.transform.lowrank.distill import distill, fit_output_layers

F64 = np.float64
SUPPORTS = [("full", None, None), ("causal", None, None), ("strict_causal", None, None), ("full", 7, None),
            ("full", None, 0.3)]


def kernel(kind):
    if kind == "linear":
        return T.LowRankKernel(4, heads=2, feature_dim=3, rng=1, dtype=F64)
    return T.LowRankKernel(4, heads=2, feature_dim=3, inputs=("p", "fourier", "f"), hidden=5, fourier=2,
                           feature_map="softplus", bias=True, rng=1, dtype=F64)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("norm", ["none", "sum"])
@pytest.mark.parametrize("support,window,radius", SUPPORTS)
def test_factorised_equals_dense_with_gradients(kind, norm, support, window, radius):
    rng = np.random.default_rng(0)
    N = 40
    x = rng.normal(size=(2, N, 4))
    pos = np.sort(rng.uniform(0, 4, size=N))[:, None] if window is None else np.arange(N, dtype=F64)[:, None]
    w = rng.uniform(0.5, 1.5, size=N)
    outs = []
    for backend in ("dense", "lowrank"):
        layer = T.IntegralTransform(4, 4, kernel(kind), normalization=norm, support=support, window=window,
                                    radius=radius, backend=backend, rng=2, dtype=F64)
        xt, wt = itn.tensor(x, requires_grad=True), itn.tensor(w, requires_grad=True)
        y = layer(xt, pos, weights=wt)
        itn.sum(y * y).backward()
        grads = [xt.grad.data, wt.grad.data] + [p.grad.data for _, p in layer.named_parameters()]
        outs.append((y.data, grads, layer.explain(xt, pos, weights=wt)))
    assert "runs 'lowrank'" in outs[1][2]
    np.testing.assert_allclose(outs[1][0], outs[0][0], rtol=1e-10, atol=1e-10)
    for g1, g0 in zip(outs[1][1], outs[0][1]):
        np.testing.assert_allclose(g1, g0, rtol=1e-10, atol=1e-10)


def test_declines():
    x = itn.tensor(np.random.default_rng(0).normal(size=(1, 8, 4)))
    layer = T.IntegralTransform(4, 4, kernel("linear"), normalization="softmax", backend="lowrank", rng=0, dtype=F64)
    with pytest.raises(ConfigError, match="softmax"):
        layer(x)
    layer = T.IntegralTransform(4, 4, kernel("linear"), backend="lowrank", rng=0, dtype=F64)
    with pytest.raises(ConfigError, match="mask"):
        layer(x, mask=np.ones((8, 8), bool))
    with pytest.raises(ConfigError, match="score_bias"):
        layer(x, score_bias=np.zeros((8, 8)))
    other = T.IntegralTransform(4, 4, T.DotProductKernel(4, rng=0, dtype=F64), backend="lowrank", rng=0, dtype=F64)
    with pytest.raises(ConfigError, match="LowRankKernel"):
        other(x)


def _rank3_oracle(n=60, m=50):
    rng = np.random.default_rng(3)
    E = rng.normal(size=(1, 2, n, 3)) @ rng.normal(size=(1, 2, 3, m))
    return E, lambda i, j: E[:, :, i][:, :, :, j]


@pytest.mark.parametrize("rank", [3, 5])
def test_approximations_are_exact_at_the_true_rank(rank):
    E, oracle = _rank3_oracle()
    for phi, psi in (approx.skeleton(oracle, 60, 50, rank), approx.cross(oracle, 60, 50, rank, rng=0)):
        np.testing.assert_allclose(phi @ np.swapaxes(psi, -1, -2), E, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(approx.svd_mass(E, rank), 1.0, rtol=1e-12)


def test_fourier_mlp_kernel_has_rank_2f_plus_1():
    """s_ij = W2 (W_s sin(w dp) + W_c cos(w dp) + b1) + b2 with identity activation: rank 2F + 1."""
    F, N = 3, 80
    k = T.MLPKernel(2, heads=2, hidden=6, inputs=("fourier",), fourier=F, frequency_scale=3.0,
                    activation="identity", rng=4, dtype=F64)
    pts = Points(np.zeros((1, N, 2)), np.linspace(0, 3, N)[None, :, None])
    oracle = approx.kernel_entries(k, k.project(pts, pts))
    E = oracle(np.arange(N), np.arange(N))
    sigma = np.linalg.svd(E, compute_uv=False)
    assert np.all(sigma[..., 2 * F + 1:] <= 1e-10 * sigma[..., :1])     # the construction's rank
    phi, psi = approx.skeleton(oracle, N, N, 2 * F + 1)
    np.testing.assert_allclose(phi @ np.swapaxes(psi, -1, -2), E, rtol=1e-10, atol=1e-10)
    mass = approx.svd_mass(E, 2)
    np.testing.assert_allclose(mass, (sigma[..., :2] ** 2).sum(-1) / (sigma ** 2).sum(-1), rtol=1e-12)


def test_performer_features_are_unbiased():
    rng = np.random.default_rng(5)
    q, k = rng.normal(size=(1, 1, 6, 3)) * 0.4, rng.normal(size=(1, 1, 5, 3)) * 0.4
    exact = np.exp(q @ np.swapaxes(k, -1, -2))
    R, reps = 64, 400
    est = np.array([np.einsum("bhnr,bhmr->bhnm", *approx.performer(q, k, R, rng=s)) for s in range(reps)])
    mean, se = est.mean(0), est.std(0, ddof=1) / np.sqrt(reps)
    z = NormalDist().inv_cdf(1 - 1e-3 / (2 * exact.size))
    assert np.all(np.abs(mean - exact) <= z * se)


def test_distillation_reports_the_relative_error_and_fits():
    rng = np.random.default_rng(6)
    N = 96
    pts = Points(rng.normal(size=(1, N, 4)), np.linspace(0, 1, N)[None, :, None])
    teacher = T.MLPKernel(4, heads=2, hidden=8, inputs=("dp", "fourier", "fi"), fourier=2, rng=7, dtype=F64)
    student = T.LowRankKernel(4, heads=2, feature_dim=8, inputs=("p", "fourier", "f"), hidden=16,
                              frequencies=teacher.frequencies, feature_map="identity", rng=8, dtype=F64)
    before = {n: p.data.copy() for n, p in teacher.named_parameters()}
    # the first step's block and loss, computed here from the same generator
    draw = np.random.default_rng(0)
    i, j = np.sort(draw.choice(N, 32, replace=False)), np.sort(draw.choice(N, 32, replace=False))
    target = teacher.scores(teacher.project(pts, pts)).data[:, :, i][:, :, :, j]
    sub = student.project(Points(pts.features[:, i], pts.positions[:, i]), Points(pts.features[:, j], pts.positions[:, j]))
    pred = np.einsum("bnhr,bmhr->bhnm", sub.query["phi"].data, sub.source["psi"].data)
    first = np.mean((pred - target) ** 2) / np.mean(target ** 2)
    losses = distill(student, teacher, pts, steps=150, rows=32, cols=32, lr=5e-3, rng=0)
    np.testing.assert_allclose(losses[0], first, rtol=1e-12)
    assert np.mean(losses[-10:]) < losses[0] / 2
    for n, p in teacher.named_parameters():
        np.testing.assert_array_equal(p.data, before[n])


def _pair(rank_teacher, rank_student, seed=0):
    """A LowRankKernel teacher and a student sharing its hidden layers (so the teacher's scores lie
    in the student's feature spans), both with identity feature maps."""
    options = dict(inputs=("p", "fourier", "f"), hidden=12, fourier=3, feature_map="identity", dtype=F64)
    teacher = T.LowRankKernel(4, heads=2, feature_dim=rank_teacher, rng=seed, **options)
    student = T.LowRankKernel(4, heads=2, feature_dim=rank_student, frequencies=teacher.frequencies,
                              rng=seed + 1, **options)
    for name in ("U_q", "c_q", "U_k", "c_k"):
        getattr(student, name).data[...] = getattr(teacher, name).data
    rng = np.random.default_rng(seed)
    pts = Points(rng.normal(size=(1, 80, 4)), rng.uniform(0, 1, (1, 80, 1)))
    return teacher, student, pts


def test_fit_output_layers_recovers_a_teacher_in_the_span():
    teacher, student, pts = _pair(rank_teacher=3, rank_student=5)
    err = fit_output_layers(student, teacher, pts, rows=40, cols=50, rng=1)
    assert err < 1e-20
    exact = teacher.scores(teacher.project(pts, pts)).data
    fitted = student.scores(student.project(pts, pts)).data               # all 80 x 80 pairs
    np.testing.assert_allclose(fitted, exact, rtol=0, atol=1e-10 * np.abs(exact).max())


def test_fit_output_layers_below_the_rank_is_the_eckart_young_tail():
    teacher, student, pts = _pair(rank_teacher=6, rank_student=2)
    err = fit_output_layers(student, teacher, pts, rows=40, cols=50, rng=1)
    draw = np.random.default_rng(1)                        # the block the fit saw (same draws)
    i, j = np.sort(draw.choice(80, 40, replace=False)), np.sort(draw.choice(80, 50, replace=False))
    block = teacher.scores(teacher.project(pts, pts)).data[0][:, i][:, :, j]
    sigma = np.linalg.svd(block, compute_uv=False)                       # (H, 40)
    tail = (sigma[:, 2:] ** 2).sum() / (sigma ** 2).sum()
    assert tail > 1e-3                                                    # the check is not vacuous
    np.testing.assert_allclose(err, tail, rtol=1e-8)


def test_fit_output_layers_refuses_students_it_cannot_fit():
    teacher, student, pts = _pair(3, 3)
    positive = T.LowRankKernel(4, heads=2, feature_dim=3, inputs=("p", "f"), hidden=12, feature_map="softplus",
                               dtype=F64)
    with pytest.raises(ConfigError, match="feature_map='identity'"):
        fit_output_layers(positive, teacher, pts)
    two = Points(np.zeros((2, 80, 4)), np.zeros((2, 80, 1)))
    with pytest.raises(ConfigError, match=r"one batch element .*\(2, 80, 4\)"):
        fit_output_layers(student, teacher, two)
