"""Monte Carlo integration (itnet_np/transform/montecarlo): the estimators against their published
formulas, evaluated independently here from the dense scores.

* For the draws a forward actually used (captured), the layer's output equals the explicit estimator
  loop (unbiased sum for 'none', ratio for 'sum' / 'softmax') to 1e-12, for both kernels, every
  proposal and several supports.
* S >= the support size (and S = M without replacement) equals the exact operator to 1e-12.
* Unbiasedness: the mean over R seeds lies within the Bonferroni z-band of the sample standard error.
* The train / eval rule, the call counter, determinism, and the declines.
"""
from statistics import NormalDist

import numpy as np
import pytest

import itnet_np as itn
from itnet_np import transform as T
from itnet_np.errors import ConfigError
from itnet_np.transform import planner
from itnet_np.transform.montecarlo import MonteCarlo
from itnet_np.transform.montecarlo import draws as D
from itnet_np.transform.montecarlo import plan as MP

F64 = np.float64
PROPOSALS = ("uniform", "stratified", "locality", "proxy")


def make_layer(kind, norm, support="full", C=4, H=2, seed=1, window=None):
    if kind == "mlp":
        k = T.MLPKernel(C, heads=H, hidden=6, inputs=("dp", "fourier", "fi", "fj"), fourier=2,
                        activation="tanh", rng=seed, dtype=F64)
    else:
        k = T.DotProductKernel(C, heads=H, rng=seed, dtype=F64)
    if support == "window":
        support = "full"
    layer = T.IntegralTransform(C, C, k, normalization=norm, support=support, window=window, rng=seed + 1,
                                dtype=F64, bias=False)
    if norm == "sum":                                 # keep Z = sum_j s_ij away from 0
        if kind == "mlp":
            layer.kernel.b2.data[:] = 3.0
        else:
            layer.kernel.W_q.data[:] *= 0.1
    return layer


def features(B=2, N=128, C=4, seed=0):
    return np.random.default_rng(seed).normal(size=(B, N, C))


def dense_parts(layer, x):
    """Raw scores s (B, H, N, M), values v (B, H, M, d), and each row's support [lo_i, hi_i)."""
    call = layer._call(itn.tensor(x), None, None, None, None, None, None)
    s = np.asarray(layer.kernel.scores(call.proj).data)
    lo, hi = MP.support_ranges(call.support)
    return s, np.asarray(call.values.data), lo, hi


def explicit_estimate(s, v, idx, coef, row_lo, row_hi, norm):
    """The estimator written from its formula: y_i = sum_s c_s f_ij_s v_j_s (/ sum_s c_s f_ij_s)."""
    B, H, N, _ = s.shape
    out = np.zeros((B, H, N, v.shape[-1]))
    for i in range(N):
        J, c = idx[row_lo[i]:row_hi[i]], coef[row_lo[i]:row_hi[i]]
        f = c * (np.exp(s[:, :, i, J]) if norm == "softmax" else s[:, :, i, J])      # (B, H, n_i)
        num = np.einsum("bhj,bhjd->bhd", f, v[:, :, J])
        if norm == "none":
            out[:, :, i] = num
        else:
            z = f.sum(-1)[..., None]
            out[:, :, i] = np.where(z != 0, num / np.where(z != 0, z, 1), 0)
    return out


def heads_out(layer, x):
    """The per-head integral (B, H, N, d) of a forward (W_O undone: W_O is square and invertible here)."""
    y = np.asarray(layer(itn.tensor(x)).data)
    merged = y @ np.linalg.inv(layer.W_O.data).T
    B, N = x.shape[:2]
    return merged.reshape(B, N, layer.heads, layer.head_dim).transpose(0, 2, 1, 3)


@pytest.fixture
def captured(monkeypatch):
    seen = []
    original = D.Draws.realise

    def realise(self):
        out = original(self)
        seen.append(out)
        return out
    monkeypatch.setattr(D.Draws, "realise", realise)
    return seen


@pytest.mark.parametrize("kind", ["mlp", "dot"])
@pytest.mark.parametrize("norm", ["none", "sum", "softmax"])
@pytest.mark.parametrize("proposal,support", [("uniform", "full"), ("stratified", "causal"),
                                              ("locality", "window"), ("proxy", "full"), ("proxy", "causal")])
def test_output_is_the_estimator_on_the_drawn_sources(kind, norm, proposal, support, captured):
    layer = make_layer(kind, norm, support, window=40 if support == "window" else None)
    x = features()
    s, v, _, _ = dense_parts(layer, x)
    layer.integration = MonteCarlo(samples=24, proposal=proposal, seed=3)
    got = heads_out(layer, x)
    idx, coef, row_lo, row_hi = captured[-1]
    assert len(idx) < 128 * 2 and np.all(row_hi >= row_lo)      # sampled, not exact
    np.testing.assert_allclose(got, explicit_estimate(s, v, idx, coef, row_lo, row_hi, norm),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["mlp", "dot"])
@pytest.mark.parametrize("norm", ["none", "sum", "softmax"])
@pytest.mark.parametrize("proposal", PROPOSALS + ("without",))
def test_samples_covering_the_support_equal_the_exact_operator(kind, norm, proposal):
    layer = make_layer(kind, norm, "causal")
    x = features(N=130)
    exact = np.asarray(layer(itn.tensor(x)).data)
    replace = proposal != "without"
    layer.integration = MonteCarlo(samples=130, proposal="uniform" if not replace else proposal,
                                   replace=replace)
    np.testing.assert_allclose(np.asarray(layer(itn.tensor(x)).data), exact, rtol=1e-12, atol=1e-12)


def test_without_replacement_uses_distinct_draws_with_horvitz_thompson_weights():
    lo, hi = np.zeros(64, np.int64), np.full(64, 100, np.int64)
    idx, coef, _row_lo, _row_hi = D.Draws(MonteCarlo(samples=30, replace=False, seed=5), 0, lo, hi).realise()
    assert len(np.unique(idx)) == 30 and np.all((idx >= 0) & (idx < 100))
    np.testing.assert_array_equal(coef, np.full(30, 100 / 30))


def _band(count):
    """z such that P(|Z| > z) = 1e-3 / count: a Bonferroni band over ``count`` checked entries."""
    return NormalDist().inv_cdf(1 - 1e-3 / (2 * count))


@pytest.mark.parametrize("kind", ["mlp", "dot"])
@pytest.mark.parametrize("proposal", PROPOSALS + ("without",))
def test_plain_estimator_is_unbiased(kind, proposal):
    """'none': the mean of R independent estimates lies within z * (sample std / sqrt R) of the exact
    integral for every entry (z from a Bonferroni bound at a 1e-3 family-wise false-alarm rate)."""
    layer = make_layer(kind, "none", "causal")
    x = features(B=1, N=128)
    exact = heads_out(layer, x)
    R = 300
    runs = []
    for seed in range(R):
        layer.integration = MonteCarlo(samples=16, proposal="uniform" if proposal == "without" else proposal,
                                       replace=proposal != "without", seed=seed)
        runs.append(heads_out(layer, x))
    runs = np.array(runs)
    mean, se = runs.mean(0), runs.std(0, ddof=1) / np.sqrt(R)
    live = se > 1e-9 * np.abs(exact).max()            # rows whose support is exact (n <= S) have se = 0
    assert live.mean() > 0.5
    z = _band(live.sum())
    assert np.all(np.abs(mean - exact)[live] <= z * se[live])
    np.testing.assert_allclose(mean[~live], exact[~live], rtol=1e-10, atol=1e-12)


def test_train_samples_eval_is_exact_and_the_counter_advances():
    layer = make_layer("mlp", "softmax")
    x = itn.tensor(features())
    exact = np.asarray(layer(x).data)
    layer.integration = MonteCarlo(samples=16, seed=2)
    first, second = np.asarray(layer(x).data), np.asarray(layer(x).data)
    assert not np.allclose(first, exact) and not np.allclose(first, second)
    layer.eval()
    np.testing.assert_array_equal(np.asarray(layer(x).data), exact)
    layer.train()
    layer.integration = MonteCarlo(samples=16, seed=2)        # assigning resets the counter
    np.testing.assert_array_equal(np.asarray(layer(x).data), first)
    layer.integration = "exact"
    np.testing.assert_array_equal(np.asarray(layer(x).data), exact)


def test_declines_and_errors():
    layer = make_layer("mlp", "none")
    x = itn.tensor(features())
    assert "exact evaluation" in layer.explain(x)
    layer.integration = MonteCarlo(samples=8)
    assert "Monte Carlo" in layer.explain(x)
    with pytest.raises(ConfigError, match="index band nor per-row.*integration='exact'"):
        layer(x, mask=np.ones((128, 128), bool))
    with pytest.raises(ConfigError, match="integration must be"):
        layer.integration = "sampled"
    for bad in ({"samples": 0}, {"proposal": "importance"}, {"tile": 48}, {"mix": 0.0},
                {"replace": False, "proposal": "proxy"}):
        with pytest.raises(ConfigError):
            MonteCarlo(**bad)
    dot = make_layer("dot", "softmax")
    dot.integration = MonteCarlo(samples=8)
    w = np.ones(128)
    w[3] = 0
    with pytest.raises(ConfigError, match="weights"):
        dot(x, weights=w)
    assert isinstance(planner._BACKENDS["montecarlo"](
        dot._call(x, None, None, None, None, None, None)), planner.Plan)


def test_no_queries_in_cross_mode():
    layer = make_layer("mlp", "softmax")
    layer.integration = MonteCarlo(samples=4)
    x, source = itn.tensor(np.zeros((1, 0, 4)), requires_grad=True), itn.tensor(np.ones((1, 5, 4)), requires_grad=True)
    y = layer(x, source=source)
    itn.sum(y).backward()
    assert y.shape == (1, 0, 4) and source.grad.shape == (1, 5, 4)
