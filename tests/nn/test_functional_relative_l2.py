"""relative_l2_loss against its formula written with Python's math module sample by sample, its
gradient against the closed form (x - t) / (||x - t|| ||t||) and gradcheck, the zero-difference
subgradient, float32, and the errors."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import itnet_np as itn
import itnet_np.nn.functional as F
from itnet_np.errors import ConfigError, ShapeError


def loop(x, t):
    """(per-sample losses, d loss_b / d x) from the definition, one sample at a time."""
    losses, grad = [], np.zeros_like(x)
    for b in range(x.shape[0]):
        d, tb = (x[b] - t[b]).ravel(), t[b].ravel()
        dn = math.sqrt(math.fsum(v * v for v in d))
        tn = math.sqrt(math.fsum(v * v for v in tb))
        losses.append(dn / tn)
        grad[b] = ((x[b] - t[b]) / (dn * tn))
    return np.array(losses), grad


@given(shape=st.sampled_from([(1, 3), (4, 5), (3, 2, 4)]), reduction=st.sampled_from(["mean", "sum", "none"]),
       seed=st.integers(0, 2**16))
def test_matches_formula_and_gradient(shape, reduction, seed):
    rng = np.random.default_rng(seed)
    x, t = rng.standard_normal(shape), rng.standard_normal(shape) + 0.5
    want, dwant = loop(x, t)
    reduce = {"mean": np.mean, "sum": np.sum, "none": lambda a: a}[reduction]
    tx = itn.tensor(x, requires_grad=True)
    out = F.relative_l2_loss(tx, t, reduction=reduction)
    np.testing.assert_allclose(out.numpy(), reduce(want), rtol=1e-13, atol=0)
    cotangent = rng.standard_normal(out.shape)
    out.backward(cotangent)
    weight = cotangent / shape[0] if reduction == "mean" else cotangent
    weight = np.broadcast_to(weight, (shape[0],)).reshape((-1,) + (1,) * (len(shape) - 1))
    np.testing.assert_allclose(tx.grad.numpy(), dwant * weight, rtol=1e-12, atol=1e-15)
    fn = lambda a, b: F.relative_l2_loss(a, b, reduction=reduction)  # noqa: E731
    assert itn.gradcheck(fn, [x, t])


def test_agrees_with_the_metric():
    """The mean reduction is the metric itnet_np.train.relative_l2 reports."""
    from itnet_np.train import relative_l2
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((6, 7, 1)), rng.standard_normal((6, 7, 1))
    assert F.relative_l2_loss(x, t).item() == pytest.approx(relative_l2(x, t), rel=1e-13)


def test_gradient_at_zero_difference_is_zero():
    t = np.array([[1.0, 2.0], [3.0, -1.0]])
    x = itn.tensor(np.array([[1.0, 2.0], [2.0, -1.0]]), requires_grad=True)
    F.relative_l2_loss(x, t, reduction="sum").backward()
    g = x.grad.numpy()
    assert np.isfinite(g).all()
    np.testing.assert_array_equal(g[0], [0.0, 0.0])
    np.testing.assert_allclose(g[1], [-1.0 / math.sqrt(10.0), 0.0], rtol=1e-15)


def test_float32_stays_float32():
    rng = np.random.default_rng(0)
    x = itn.tensor(rng.standard_normal((3, 4)).astype(np.float32), requires_grad=True)
    out = F.relative_l2_loss(x, rng.standard_normal((3, 4)).astype(np.float32))
    out.backward()
    assert out.dtype == x.grad.dtype == np.float32


@pytest.mark.parametrize("error,message,call", [
    (ShapeError, r"input has shape \(2, 3\) and target \(2, 4\)",
     lambda: F.relative_l2_loss(np.ones((2, 3)), np.ones((2, 4)))),
    (ShapeError, r"at least one axis per sample, got shape \(3,\)",
     lambda: F.relative_l2_loss(np.ones(3), np.ones(3))),
    (ShapeError, r"target sample\(s\) \[1\] have norm 0",
     lambda: F.relative_l2_loss(np.ones((2, 3)), np.array([[1.0, 0, 0], [0, 0, 0]]))),
    (ConfigError, "relative_l2_loss: reduction", lambda: F.relative_l2_loss(np.ones((2, 3)), np.ones((2, 3)),
                                                                           reduction="avg")),
])
def test_errors(error, message, call):
    with pytest.raises(error, match=message):
        call()
