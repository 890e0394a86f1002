"""Gradients of the sampled ops with the draws fixed (one Draws object, fixed counter): central
differences in float64 (itn.gradcheck) for every input of sampled_mlp and sampled_attention under
each normalisation, and through IntegralTransform with the counter reset before every evaluation.
The backward regenerates the draws, so this also checks that forward and backward see the same ones.
"""
import numpy as np
import pytest
from test_montecarlo_estimator import make_layer

import itnet_np as itn
from itnet_np import transform as T
from itnet_np.transform.montecarlo import MonteCarlo
from itnet_np.transform.montecarlo.draws import Draws
from itnet_np.transform.montecarlo.engine_ops import sampled_attention, sampled_mlp

N, M = 70, 50


def draws(proposal):
    lo = np.maximum(np.arange(N) - 30, 0)
    hi = np.minimum(np.arange(N) + 1, M)           # causal-like rows, some ranges beyond S
    positions = (np.arange(N, dtype=float)[:, None], np.arange(M, dtype=float)[:, None])
    return Draws(MonteCarlo(samples=12, proposal=proposal, seed=7), 3, lo, hi, positions=positions)


@pytest.mark.parametrize("norm", ["none", "sum", "softmax"])
@pytest.mark.parametrize("proposal", ["uniform", "locality"])
def test_sampled_mlp_gradcheck(norm, proposal):
    rng = np.random.default_rng(0)
    B, H, K, R, dv = 1, 2, 3, 2, 2
    w = rng.uniform(0.5, 1.5, size=(B, H, M))
    inputs = [rng.normal(size=s) * 0.5 for s in ((B, N, K), (B, M, K), (B, N, R), (B, M, R), (K, R), (H, K),
                                                  (H,), (B, H, M, dv))] + [w]
    if norm == "sum":
        inputs[6] = inputs[6] + 4.0                  # b2: keeps Z away from 0
    d = draws(proposal)
    assert len(d.realise()[0]) < M * 6              # sampled
    assert itn.gradcheck(lambda *a: sampled_mlp(*a, act="tanh", normalization=norm, draws=d),
                         [itn.tensor(a, requires_grad=True) for a in inputs])


@pytest.mark.parametrize("norm", ["none", "softmax"])
def test_sampled_attention_gradcheck(norm):
    rng = np.random.default_rng(1)
    B, H, d = 1, 2, 3
    inputs = [rng.normal(size=s) for s in ((B, H, N, d), (B, H, M, d), (B, H, M, 2))]
    dr = draws("stratified")
    assert itn.gradcheck(lambda q, k, v: sampled_attention(q, k, v, scale=0.5, normalization=norm, draws=dr),
                         [itn.tensor(a, requires_grad=True) for a in inputs])


@pytest.mark.parametrize("kind", ["mlp", "dot"])
@pytest.mark.parametrize("norm", ["none", "sum", "softmax"])
def test_layer_gradcheck_with_fixed_draws(kind, norm):
    layer = make_layer(kind, norm, "causal", C=3, H=1)
    method = MonteCarlo(samples=10, proposal="stratified", seed=1)
    x = np.random.default_rng(2).normal(size=(1, N, 3))
    w = np.random.default_rng(3).uniform(0.5, 1.5, size=N)

    def f(x, w):
        layer.integration = method                   # counter 0: the same draws every evaluation
        return layer(x, weights=w)
    assert itn.gradcheck(f, [itn.tensor(x, requires_grad=True), itn.tensor(w, requires_grad=True)])
    layer.integration = method
    y = layer(itn.tensor(x))
    itn.sum(y * y).backward()                        # every parameter is reached through the sampled op
    for name, p in layer.named_parameters():
        g = np.asarray(p.grad.data)
        assert np.isfinite(g).all() and np.abs(g).max() > 0, name


@pytest.mark.parametrize("kind", ["mlp", "dot"])
@pytest.mark.parametrize("cv", [False, True])
def test_float32_stays_float32(kind, cv):
    """Sampled (and control-variate) forwards and gradients keep float32 (no silent upcast)."""
    k = (T.MLPKernel(3, heads=1, hidden=4, rng=0, dtype=np.float32) if kind == "mlp"
         else T.DotProductKernel(3, heads=1, rng=0, dtype=np.float32))
    layer = T.IntegralTransform(3, 3, k, normalization="sum" if cv else "softmax", rng=0, dtype=np.float32)
    if kind == "mlp":
        layer.kernel.b2.data[:] = 3.0
    layer.integration = MonteCarlo(samples=8, control_variate=cv, rank=2)
    x = itn.tensor(np.random.default_rng(0).normal(size=(1, 70, 3)).astype(np.float32), requires_grad=True)
    y = layer(x)
    itn.sum(y * y).backward()
    assert y.dtype == np.float32 and x.grad.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in layer.parameters())
