"""Statistics of the Monte Carlo estimators (montecarlo/plan.py), with bands derived from the theory.

* Variance ~ 1/S: the fitted slope of log(total variance) against log S is -1 within z standard
  errors (the standard error of a log sample variance from R replicates is about sqrt(2 / (R - 1))).
* SNIS (self-normalised) bias O(1/S), measured exactly: with S uniform draws from M sources the
  estimate depends only on the multinomial counts, so E and Var are finite sums. The delta method
  gives  S bias -> c = (y Var[B] - Cov[A, B]) / Z^2  and  S Var -> sigma^2 = Var[A - y B] / Z^2
  (A = M f_j v_j, B = M f_j for one uniform draw j); the remainders are O(1/S^2), so doubling S at
  least halves |bias - c / S| and |Var - sigma^2 / S|, and bias^2 / Var (order 1/S) halves.
* The implementation's mean over R seeds equals that exact expectation (a biased value, not y)
  within the Bonferroni band of the sample standard error.
"""
import math
from itertools import combinations_with_replacement

import numpy as np
import pytest
from test_montecarlo_estimator import _band, make_layer

import itnet_np as itn
from itnet_np.transform.montecarlo import MonteCarlo


def _estimates(layer, x, source, S, R, **kw):
    out = []
    for seed in range(R):
        layer.integration = MonteCarlo(samples=S, seed=seed, **kw)
        out.append(np.asarray(layer(itn.tensor(x), source=None if source is None else itn.tensor(source)).data))
    return np.array(out)


@pytest.mark.parametrize("norm", ["none", "softmax"])
def test_variance_falls_as_one_over_s(norm):
    layer = make_layer("dot", norm, C=4)
    rng = np.random.default_rng(4)
    x, source = rng.normal(size=(1, 64, 4)), rng.normal(size=(1, 2048, 4))
    sizes, R = np.array([8, 16, 32, 64, 128]), 150
    logv = np.log([_estimates(layer, x, source, S, R).var(0, ddof=1).sum() for S in sizes])
    logs = np.log(sizes)
    slope = np.polyfit(logs, logv, 1)[0]
    se = math.sqrt(2 / (R - 1)) / math.sqrt(((logs - logs.mean()) ** 2).sum())
    assert abs(slope + 1) <= _band(1) * se, (slope, se)


def _compositions(M, S):
    """Every count vector k (K, M) with sum S, and its multinomial probability under uniform draws."""
    counts = np.array([np.bincount(c, minlength=M) for c in combinations_with_replacement(range(M), S)])
    logp = (math.lgamma(S + 1) - np.array([sum(math.lgamma(k + 1) for k in row) for row in counts])
            - S * math.log(M))
    return counts, np.exp(logp)


def _snis_moments(f, v, S):
    """Exact mean and variance of the SNIS estimate sum_s f_js v_js / sum_s f_js (S uniform draws)."""
    counts, p = _compositions(f.shape[1], S)
    est = np.einsum("km,nm,md->knd", counts, f, v) / (counts @ f.T)[..., None]     # (K, n, d)
    mean = np.einsum("k,knd->nd", p, est)
    return mean, np.einsum("k,knd->nd", p, (est - mean) ** 2)


def test_snis_bias_is_order_one_over_s_and_below_the_variance():
    rng = np.random.default_rng(0)
    M = 4
    f, v = np.exp(rng.normal(size=(3, M))), rng.normal(size=(M, 2))     # f = w e^s > 0 (softmax)
    y = f @ v / f.sum(1, keepdims=True)
    Z = f.mean(1)[:, None]                                                # E[B] / M
    A, B = f[:, :, None] * v[None], f[:, :, None]                         # per draw (the M cancels)
    cov_ab = (A * B).mean(1) - A.mean(1) * B.mean(1)
    var_b = (B * B).mean(1) - B.mean(1) ** 2
    c = (y * var_b - cov_ab) / Z ** 2
    sigma2 = ((A - y[:, None] * B) ** 2).mean(1) / Z ** 2
    sizes = [8, 16, 32, 64]
    bias, var = zip(*[(m - y, s2) for m, s2 in (_snis_moments(f, v, S) for S in sizes)])
    rest_b = [np.abs(b - c / S).max() for b, S in zip(bias, sizes)]
    rest_v = [np.abs(s2 - sigma2 / S).max() for s2, S in zip(var, sizes)]
    ratio = [(b ** 2 / s2).max() for b, s2 in zip(bias, var)]
    assert np.abs(bias[0]).max() > 0                                      # a real bias to measure
    for k in range(1, len(sizes)):
        assert rest_b[k] <= rest_b[k - 1] / 2 and rest_v[k] <= rest_v[k - 1] / 2
        assert ratio[k] <= ratio[k - 1] / 2 * (1 + 1 / sizes[k - 1])
    assert ratio[-1] < 1


def test_implementation_mean_is_the_exact_snis_expectation():
    """Cross mode, M = 6 sources, S = 3 uniform draws per tile: the mean of R estimates matches the
    exact multinomial expectation (which differs from the exact integral by the SNIS bias)."""
    layer = make_layer("dot", "softmax", C=4)
    rng = np.random.default_rng(1)
    x, source = rng.normal(size=(1, 64, 4)), rng.normal(size=(1, 6, 4)) * 2
    layer.integration = "exact"
    call = layer._call(itn.tensor(x), None, itn.tensor(source), None, None, None, None)
    s = np.asarray(layer.kernel.scores(call.proj).data)[0]                # (H, N, M)
    v = np.asarray(call.values.data)[0]                                   # (H, M, d)
    exact_mean = np.stack([_snis_moments(np.exp(s[h]), v[h], 3)[0] for h in range(s.shape[0])])
    R = 400
    runs = _estimates(layer, x, source, 3, R)
    Wo = np.linalg.inv(layer.W_O.data)
    heads = (runs @ Wo.T).reshape(R, 64, layer.heads, layer.head_dim).transpose(0, 2, 1, 3)
    mean, se = heads.mean(0), heads.std(0, ddof=1) / math.sqrt(R)
    assert np.all(np.abs(mean - exact_mean) <= _band(mean.size) * se)
    exact = np.einsum("hnm,hmd->hnd", np.exp(s), v) / np.exp(s).sum(-1)[..., None]
    assert np.any(np.abs(mean - exact) > _band(mean.size) * se)       # the band resolves the bias
