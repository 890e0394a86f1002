"""binary_cross_entropy_with_logits, l1_loss and huber_loss: forwards and gradients against the
textbook formulas evaluated element by element with Python's math module, stability at huge
logits, gradcheck / gradgradcheck, float32 and the errors."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import itnet_np as itn
import itnet_np.nn.functional as F
from itnet_np.errors import ConfigError, DTypeError, ShapeError

REDUCE = {"mean": np.mean, "sum": np.sum, "none": lambda a: a}


def bce_loop(x, y, w, pw):
    """-w [pw y log s(x) + (1 - y) log(1 - s(x))] per element, with s(x) = 1 / (1 + e^-x) and
    log s(x) = -log1p(e^-x) (x >= 0) or x - log1p(e^x) (x < 0), written out element by element.
    Returns (loss, dloss/dx) where dloss/dx = w [(1 - y) s(x) - pw y (1 - s(x))]."""
    x, y = np.broadcast_arrays(x, y)
    w = np.broadcast_to(1.0 if w is None else w, x.shape)
    pw = np.broadcast_to(1.0 if pw is None else pw, x.shape)
    loss, grad = np.zeros(x.shape), np.zeros(x.shape)
    for i in np.ndindex(*x.shape):
        v = x[i]
        log_s = -math.log1p(math.exp(-v)) if v >= 0 else v - math.log1p(math.exp(v))
        log_1ms = log_s - v                      # log(1 - s) = log(s) - x
        s = math.exp(log_s)
        loss[i] = -w[i] * (pw[i] * y[i] * log_s + (1 - y[i]) * log_1ms)
        grad[i] = w[i] * ((1 - y[i]) * s - pw[i] * y[i] * (1 - s))
    return loss, grad


@given(shape=st.sampled_from([(3,), (2, 3), (2, 1, 4)]), reduction=st.sampled_from(["mean", "sum", "none"]),
       seed=st.integers(0, 2**16), weighted=st.booleans(), pos=st.booleans())
def test_bce_with_logits_matches_formula(shape, reduction, seed, weighted, pos):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 4
    y = rng.uniform(0, 1, shape)
    w = rng.uniform(0.5, 2, shape[-1:]) if weighted else None
    pw = rng.uniform(0.5, 3, shape[-1:]) if pos else None
    loss, grad = bce_loop(x, y, w, pw)
    t = itn.tensor(x, requires_grad=True)
    out = F.binary_cross_entropy_with_logits(t, y, weight=w, pos_weight=pw, reduction=reduction)
    np.testing.assert_allclose(out.numpy(), REDUCE[reduction](loss), rtol=1e-12, atol=1e-13)
    out.backward(np.ones(out.shape))
    scale = 1 / x.size if reduction == "mean" else 1.0
    np.testing.assert_allclose(t.grad.numpy(), grad * scale, rtol=1e-11, atol=1e-13)
    f = lambda a, b: F.binary_cross_entropy_with_logits(a, b, weight=w, pos_weight=pw, reduction=reduction)
    assert itn.gradcheck(f, [x, y]) and itn.gradgradcheck(f, [x, y])


def test_bce_with_logits_is_stable_for_huge_logits():
    x = np.array([800.0, -800.0, 800.0, -800.0, 0.0])
    y = np.array([1.0, 0.0, 0.0, 1.0, 0.5])
    t = itn.tensor(x, requires_grad=True)
    out = F.binary_cross_entropy_with_logits(t, y, reduction="none")
    np.testing.assert_allclose(out.numpy(), [0.0, 0.0, 800.0, 800.0, math.log(2)], rtol=1e-15, atol=0)
    out.backward(np.ones(5))
    np.testing.assert_allclose(t.grad.numpy(), [0.0, 0.0, 1.0, -1.0, 0.0], atol=0)


@given(shape=st.sampled_from([(3,), (2, 3), (2, 1, 4)]), reduction=st.sampled_from(["mean", "sum", "none"]),
       seed=st.integers(0, 2**16), delta=st.sampled_from([0.3, 1.0, 2.5]))
def test_l1_and_huber_match_formula(shape, reduction, seed, delta):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(shape) * 2, rng.standard_normal(shape)
    d = a - b
    huber = np.array([0.5 * v * v if abs(v) < delta else delta * (abs(v) - 0.5 * delta) for v in d.ravel()])
    dhuber = np.array([v if abs(v) < delta else delta * np.sign(v) for v in d.ravel()])
    scale = 1 / a.size if reduction == "mean" else 1.0
    for fn, want, dwant in ((lambda x, y: F.l1_loss(x, y, reduction=reduction), np.abs(d), np.sign(d)),
                            (lambda x, y: F.huber_loss(x, y, reduction=reduction, delta=delta),
                             huber.reshape(shape), dhuber.reshape(shape))):
        ta, tb = itn.tensor(a, requires_grad=True), itn.tensor(b, requires_grad=True)
        out = fn(ta, tb)
        np.testing.assert_allclose(out.numpy(), REDUCE[reduction](want), rtol=1e-13, atol=1e-14)
        out.backward(np.ones(out.shape))
        np.testing.assert_allclose(ta.grad.numpy(), dwant * scale, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(tb.grad.numpy(), -dwant * scale, rtol=1e-13, atol=1e-15)
        assert itn.gradcheck(fn, [a, b]) and itn.gradgradcheck(fn, [a, b])


def test_l1_gradient_at_zero_difference_is_zero():
    a = itn.tensor(np.array([1.0, 2.0]), requires_grad=True)
    F.l1_loss(a, np.array([1.0, 3.0]), reduction="sum").backward()
    np.testing.assert_array_equal(a.grad.numpy(), [0.0, -1.0])


@pytest.mark.parametrize("fn", [
    lambda x, y: F.binary_cross_entropy_with_logits(x, y, pos_weight=np.full(3, 2.0, np.float32)),
    lambda x, y: F.l1_loss(x, y), lambda x, y: F.huber_loss(x, y, delta=0.5)])
def test_float32_stays_float32(fn):
    for shape in [(2, 3), (3,)]:
        x = itn.tensor(np.random.default_rng(0).standard_normal(shape).astype(np.float32), requires_grad=True)
        y = np.random.default_rng(1).uniform(0, 1, shape).astype(np.float32)
        out = fn(x, y)
        out.backward()
        assert out.dtype == x.grad.dtype == np.float32
        assert fn(x.data, y).dtype == np.float32


@pytest.mark.parametrize("error,message,call", [
    (ShapeError, r"input has shape \(2, 3\) and target \(3,\)",
     lambda: F.binary_cross_entropy_with_logits(np.zeros((2, 3)), np.zeros(3))),
    (ShapeError, r"pos_weight of shape \(2,\) does not broadcast to the input's shape \(2, 3\)",
     lambda: F.binary_cross_entropy_with_logits(np.zeros((2, 3)), np.zeros((2, 3)), pos_weight=np.ones(2))),
    (ShapeError, r"weight of shape \(4, 3\) does not broadcast",
     lambda: F.binary_cross_entropy_with_logits(np.zeros((2, 3)), np.zeros((2, 3)), weight=np.ones((4, 3)))),
    (DTypeError, "floating of one dtype",
     lambda: F.binary_cross_entropy_with_logits(np.zeros(3), np.array([0, 1, 1]))),
    (ConfigError, "reduction", lambda: F.binary_cross_entropy_with_logits(np.zeros(3), np.zeros(3), reduction="x")),
    (ShapeError, r"l1_loss: input has shape \(3,\) and target \(1,\)", lambda: F.l1_loss(np.zeros(3), np.zeros(1))),
    (ConfigError, "l1_loss: reduction", lambda: F.l1_loss(np.zeros(3), np.zeros(3), reduction="avg")),
    (ConfigError, "huber_loss: delta must be a number > 0", lambda: F.huber_loss(np.zeros(3), np.zeros(3), delta=0)),
    (DTypeError, "huber_loss: target must be a Tensor or an array", lambda: F.huber_loss(np.zeros(3), [0.0] * 3)),
])
def test_errors(error, message, call):
    with pytest.raises(error, match=message):
        call()
