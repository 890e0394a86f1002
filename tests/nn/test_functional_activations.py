"""relu, leaky_relu, elu, sigmoid, silu, softplus, gelu, erf: forward against SciPy / explicit formulas, derivatives
against the closed forms, gradcheck and gradgradcheck, overflow-free extremes, errors."""
import math

import numpy as np
import pytest
import scipy.special as sp
from hypothesis import given
from hypothesis.extra import numpy as hnp
from strategies import arrays

import itnet_np as itn
import itnet_np.nn.functional as F
from itnet_np.errors import ConfigError

shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)


def _grad(f, x):
    t = itn.tensor(x, requires_grad=True)
    f(t).sum().backward()
    return t.grad.numpy()


def _softplus_ref(x, beta=1.0, threshold=20.0):
    # np.logaddexp(0, t) = log(1 + e^t) without overflow: an independent stable form.
    return np.where(beta * x > threshold, x, np.logaddexp(0.0, beta * x) / beta)


def _gelu_tanh_ref(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


FORWARD = {
    "relu": (F.relu, lambda x: np.where(x > 0, x, 0.0)),
    "sigmoid": (F.sigmoid, sp.expit),
    "silu": (F.silu, lambda x: x * sp.expit(x)),
    "softplus": (F.softplus, _softplus_ref),
    "softplus_beta": (lambda x: F.softplus(x, beta=2.5, threshold=3.0),
                      lambda x: _softplus_ref(x, 2.5, 3.0)),
    "gelu": (F.gelu, lambda x: x * sp.ndtr(x)),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), _gelu_tanh_ref),
    "erf": (F.erf, sp.erf),
    "leaky_relu": (F.leaky_relu, lambda x: np.where(x > 0, x, 0.01 * x)),
    "leaky_relu_slope": (lambda x: F.leaky_relu(x, 0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
    "elu": (F.elu, lambda x: np.where(x > 0, x, np.expm1(x))),
    "elu_alpha": (lambda x: F.elu(x, alpha=1.7), lambda x: np.where(x > 0, x, 1.7 * np.expm1(x))),
}

# Derivatives in closed form, written from calculus, not from the implementation.
DERIVATIVE = {
    "relu": (F.relu, lambda x: (x > 0).astype(float)),
    "sigmoid": (F.sigmoid, lambda x: sp.expit(x) * sp.expit(-x)),
    "silu": (F.silu, lambda x: sp.expit(x) + x * sp.expit(x) * sp.expit(-x)),
    "softplus_beta": (lambda x: F.softplus(x, beta=2.5, threshold=3.0),
                      lambda x: np.where(2.5 * x > 3.0, 1.0, sp.expit(2.5 * x))),
    "gelu": (F.gelu, lambda x: sp.ndtr(x) + x * np.exp(-x * x / 2) / math.sqrt(2 * math.pi)),
    "erf": (F.erf, lambda x: 2 / math.sqrt(math.pi) * np.exp(-x * x)),
    "leaky_relu_slope": (lambda x: F.leaky_relu(x, 0.2), lambda x: np.where(x > 0, 1.0, 0.2)),
    "elu_alpha": (lambda x: F.elu(x, alpha=1.7), lambda x: np.where(x > 0, 1.0, 1.7 * np.exp(x))),
}


@pytest.mark.parametrize("name", sorted(FORWARD))
@given(data=shapes.flatmap(lambda s: arrays(s, -6.0, 6.0)))
def test_forward_matches_reference(name, data):
    f, ref = FORWARD[name]
    before = data.copy()
    out = f(itn.tensor(data)).numpy()
    np.testing.assert_allclose(out, ref(data), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(data, before)
    # Raw arrays in, raw arrays out (the fast path) with the same values.
    np.testing.assert_allclose(np.asarray(f(data)), out, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(DERIVATIVE))
@given(data=shapes.flatmap(lambda s: arrays(s, -5.0, 5.0)))
def test_derivative_matches_closed_form(name, data):
    f, dref = DERIVATIVE[name]
    np.testing.assert_allclose(_grad(f, data), dref(data), rtol=1e-12, atol=1e-14)


def test_gelu_tanh_derivative_by_finite_difference_of_reference():
    x = np.linspace(-4, 4, 41)
    h = 1e-6
    numeric = (_gelu_tanh_ref(x + h) - _gelu_tanh_ref(x - h)) / (2 * h)
    np.testing.assert_allclose(_grad(lambda t: F.gelu(t, approximate="tanh"), x), numeric, atol=1e-8)


@pytest.mark.parametrize("name", sorted(FORWARD))
def test_gradcheck_and_gradgradcheck(name):
    f, _ = FORWARD[name]
    rng = np.random.default_rng(1)
    # Keep away from the kinks (relu at 0, softplus at its threshold) where finite differences lie.
    x = rng.uniform(0.2, 2.0, (3, 4)) * rng.choice([-1.0, 1.0], (3, 4))
    if name == "softplus_beta":
        x = np.where(np.abs(2.5 * x - 3.0) < 0.1, x + 0.2, x)
    assert itn.gradcheck(f, [x])
    assert itn.gradgradcheck(f, [x])


def test_softplus_threshold_semantics():
    # Above the threshold softplus returns x exactly (torch semantics); below, the smooth branch.
    x = np.array([-30.0, -1.0, 0.0, 19.0, 21.0, 100.0])
    out = F.softplus(x)
    np.testing.assert_array_equal(out[4:], x[4:])
    np.testing.assert_allclose(out[:4], np.log1p(np.exp(x[:4])), rtol=1e-15)
    np.testing.assert_array_equal(_grad(F.softplus, x)[4:], [1.0, 1.0])


@pytest.mark.parametrize("f", [F.sigmoid, F.silu, F.softplus, F.gelu, F.relu, F.elu, F.leaky_relu,
                               lambda x: F.gelu(x, approximate="tanh")])
def test_extremes_do_not_overflow(f):
    x = np.array([-1e4, -800.0, -50.0, 0.0, 50.0, 800.0, 1e4])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        out = f(x)
        g = _grad(f, x)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(g))


def test_sigmoid_saturates_exactly():
    out = F.sigmoid(np.array([-800.0, 800.0, 0.0]))
    assert out[0] == 0.0 and out[1] == 1.0 and out[2] == 0.5
    assert F.sigmoid(np.array([-745.0]))[0] > 0  # expit is still representable there


@pytest.mark.parametrize("f", [F.relu, F.sigmoid, F.silu, F.softplus, F.gelu, F.erf, F.elu, F.leaky_relu,
                               lambda x: F.gelu(x, approximate="tanh")])
def test_float32_stays_float32(f):
    x = itn.tensor(np.linspace(-3, 3, 7, dtype=np.float32), requires_grad=True)
    y = f(x)
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


@pytest.mark.parametrize("f", [lambda x: F.elu(x, alpha=0.5), lambda x: F.leaky_relu(x, 0.3), F.softplus])
def test_zero_dim_float32_stays_float32(f):
    # NumPy < 2 promotes a 0-d float32 array with a Python float to float64 (the constants inside).
    for value in (-1.5, 2.0):
        x = itn.tensor(np.array(value, np.float32), requires_grad=True)
        y = f(x)
        y.backward()
        assert y.dtype == x.grad.dtype == np.float32


def test_leaky_relu_and_elu_gradient_at_zero_follow_torch():
    # torch uses the x <= 0 branch at 0: negative_slope for leaky_relu, alpha for elu.
    np.testing.assert_array_equal(_grad(lambda t: F.leaky_relu(t, 0.2), np.zeros(2)), [0.2, 0.2])
    np.testing.assert_array_equal(_grad(lambda t: F.elu(t, alpha=1.7), np.zeros(2)), [1.7, 1.7])


def test_torch_cross_check():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).standard_normal(50) * 8
    tx = torch.tensor(x)
    tf = torch.nn.functional
    pairs = [(F.relu(x), tf.relu(tx)), (F.sigmoid(x), torch.sigmoid(tx)), (F.silu(x), tf.silu(tx)),
             (F.softplus(x, beta=0.7, threshold=4.0), tf.softplus(tx, beta=0.7, threshold=4.0)),
             (F.gelu(x), tf.gelu(tx)), (F.gelu(x, approximate="tanh"), tf.gelu(tx, approximate="tanh")),
             (F.leaky_relu(x, 0.2), tf.leaky_relu(tx, 0.2)), (F.elu(x, 1.7), tf.elu(tx, 1.7))]
    for ours, theirs in pairs:
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-12, atol=1e-14)


def test_errors():
    with pytest.raises(ConfigError, match="approximate"):
        F.gelu(np.ones(2), approximate="fast")
    with pytest.raises(ConfigError, match="beta"):
        F.softplus(np.ones(2), beta=0)
    with pytest.raises(ConfigError, match="leaky_relu: negative_slope must be a number"):
        F.leaky_relu(np.ones(2), negative_slope="0.1")
    with pytest.raises(ConfigError, match="elu: alpha must be a number"):
        F.elu(np.ones(2), alpha=None)
