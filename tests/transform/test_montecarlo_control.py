"""The low-rank control variate (montecarlo/control.py).

* A kernel of rank <= R (dot product with head_dim 2 < R): the skeleton is exact, the residual is 0,
  so the estimate equals the exact operator (1e-10) at any S, 'none' and 'sum', full and causal.
* On a full-rank MLP kernel: unbiased ('none') within the Bonferroni band of the sample error.
* The correction op against its formula (a dense masked sum minus the drawn sum), its gradcheck,
  and the layer's gradcheck with the draws fixed.
"""
import numpy as np
import pytest
from test_montecarlo_estimator import _band, features, heads_out, make_layer

import itnet_np as itn
from itnet_np import transform as T
from itnet_np.errors import ConfigError
from itnet_np.transform.montecarlo import MonteCarlo
from itnet_np.transform.montecarlo.control import lowrank_correction
from itnet_np.transform.montecarlo.draws import Draws

F64 = np.float64


def rank2_layer(norm, support):
    k = T.DotProductKernel(4, heads=2, head_dim=2, rng=3, dtype=F64)
    return T.IntegralTransform(4, 4, k, normalization=norm, support=support, rng=4, dtype=F64)


@pytest.mark.parametrize("norm", ["none", "sum"])
@pytest.mark.parametrize("support", ["full", "causal"])
@pytest.mark.parametrize("proposal", ["uniform", "stratified", "locality"])
def test_exact_when_the_kernel_has_rank_at_most_r(norm, support, proposal):
    layer = rank2_layer(norm, support)
    x = itn.tensor(features(N=200, seed=5))
    exact = np.asarray(layer(x).data)
    layer.integration = MonteCarlo(samples=8, proposal=proposal, control_variate=True, rank=4)
    np.testing.assert_allclose(np.asarray(layer(x).data), exact, rtol=1e-10, atol=1e-10)
    layer.integration = MonteCarlo(samples=8, proposal=proposal)
    assert not np.allclose(np.asarray(layer(x).data), exact, rtol=1e-3)    # without it: sampled


def test_unbiased_on_a_full_rank_kernel():
    layer = make_layer("mlp", "none", "causal")
    x = features(B=1, N=128)
    exact = heads_out(layer, x)
    R = 200
    runs = []
    for seed in range(R):
        layer.integration = MonteCarlo(samples=16, control_variate=True, rank=4, seed=seed)
        runs.append(heads_out(layer, x))
    runs = np.array(runs)
    mean, se = runs.mean(0), runs.std(0, ddof=1) / np.sqrt(R)
    live = se > 1e-9 * np.abs(exact).max()
    assert live.mean() > 0.5
    assert np.all(np.abs(mean - exact)[live] <= _band(live.sum()) * se[live])


def _case(seed=0, N=70, M=50):
    rng = np.random.default_rng(seed)
    lo = np.maximum(np.arange(N) - 30, 0)
    hi = np.minimum(np.arange(N) + 1, M)
    draws = Draws(MonteCarlo(samples=12, seed=seed), 0, lo, hi)
    phi, psi = rng.normal(size=(1, 2, N, 3)), rng.normal(size=(1, 2, M, 3))
    return draws, phi, psi, lo, hi, rng.normal(size=(1, 2, M, 2))


def test_correction_is_the_dense_masked_sum_minus_the_drawn_sum():
    draws, phi, psi, lo, hi, u = _case()
    G = np.einsum("bhnr,bhmr->bhnm", phi, psi)
    keep = (np.arange(50) >= lo[:, None]) & (np.arange(50) < hi[:, None])
    want = np.einsum("bhnm,bhmd->bhnd", G * keep, u)
    idx, coef, row_lo, row_hi = draws.realise()
    for i in range(70):
        J, c = idx[row_lo[i]:row_hi[i]], coef[row_lo[i]:row_hi[i]]
        want[:, :, i] -= np.einsum("s,bhs,bhsd->bhd", c, G[:, :, i, J], u[:, :, J])
    got = lowrank_correction(u, phi=phi, psi=psi, lo=lo, hi=hi, draws=draws)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert itn.gradcheck(lambda t: lowrank_correction(t, phi=phi, psi=psi, lo=lo, hi=hi, draws=draws),
                         [itn.tensor(u, requires_grad=True)])


@pytest.mark.parametrize("kind", ["mlp", "dot"])
@pytest.mark.parametrize("norm", ["none", "sum"])
def test_layer_gradcheck_with_fixed_draws(kind, norm):
    """With respect to the quadrature weights, which the skeleton G does not read: G is then fixed as
    well as the draws. (G is built from the features; it is detached by design, so the gradient with
    respect to x is the unbiased one of the module docstring, not the derivative of this realisation.)"""
    layer = make_layer(kind, norm, "causal", C=3, H=1)
    method = MonteCarlo(samples=10, control_variate=True, rank=3, seed=1)
    x = itn.tensor(np.random.default_rng(2).normal(size=(1, 70, 3)))
    w = np.random.default_rng(3).uniform(0.5, 1.5, size=70)

    def f(w):
        layer.integration = method
        return layer(x, weights=w)
    assert itn.gradcheck(f, [itn.tensor(w, requires_grad=True)])


def test_declines():
    layer = make_layer("mlp", "softmax")
    layer.integration = MonteCarlo(samples=8, control_variate=True)
    with pytest.raises(ConfigError, match="softmax"):
        layer(itn.tensor(features()))
    layer = make_layer("mlp", "none")
    layer.integration = MonteCarlo(samples=8, control_variate=True, proposal="proxy")
    with pytest.raises(ConfigError, match="proxy"):
        layer(itn.tensor(features()))
