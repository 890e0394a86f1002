"""softmax / log_softmax: forward against scipy.special over every axis, the Jacobian against
diag(s) - s s^T, stability at large and infinite inputs, gradcheck and gradgradcheck."""
import numpy as np
import pytest
import scipy.special as sp
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import arrays

import itnet_np as itn
import itnet_np.nn.functional as F
from itnet_np.errors import ShapeError


@st.composite
def array_and_axis(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    return draw(arrays(shape, -20.0, 20.0)), axis


@given(array_and_axis())
def test_forward_matches_scipy(case):
    x, axis = case
    np.testing.assert_allclose(F.softmax(itn.tensor(x), axis=axis).numpy(), sp.softmax(x, axis=axis),
                               rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(F.log_softmax(itn.tensor(x), axis=axis).numpy(),
                               sp.log_softmax(x, axis=axis), rtol=1e-12, atol=1e-12)


@given(array_and_axis())
def test_vjp_matches_explicit_jacobian(case):
    x, axis = case
    g = np.random.default_rng(0).standard_normal(x.shape)
    # Move the axis last, apply J = diag(s) - s s^T (softmax) or I - 1 s^T (log_softmax) per row.
    xl, gl = np.moveaxis(x, axis, -1), np.moveaxis(g, axis, -1)
    s = sp.softmax(xl, axis=-1)
    jac_soft = s[..., :, None] * np.eye(s.shape[-1]) - s[..., :, None] * s[..., None, :]
    jac_log = np.eye(s.shape[-1]) - s[..., None, :]
    want_soft = np.moveaxis(np.einsum("...ij,...i->...j", jac_soft, gl), -1, axis)
    want_log = np.moveaxis(np.einsum("...ij,...i->...j", jac_log, gl), -1, axis)
    for f, want in ((F.softmax, want_soft), (F.log_softmax, want_log)):
        t = itn.tensor(x, requires_grad=True)
        f(t, axis=axis).backward(g)
        np.testing.assert_allclose(t.grad.numpy(), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("f", [F.softmax, F.log_softmax])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gradcheck_and_gradgradcheck(f, axis):
    x = np.random.default_rng(3).standard_normal((3, 4, 2))
    assert itn.gradcheck(lambda t: f(t, axis=axis), [x])
    assert itn.gradgradcheck(lambda t: f(t, axis=axis), [x])


def test_large_inputs_are_stable():
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1e300]])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s = F.softmax(x)
        ls = F.log_softmax(x)
    np.testing.assert_allclose(s, sp.softmax(x, axis=-1), rtol=1e-14)
    np.testing.assert_allclose(ls, sp.log_softmax(x, axis=-1), rtol=1e-14)


def test_minus_inf_entries_get_zero_probability_and_zero_gradient():
    x = np.array([[0.5, -np.inf, 1.5], [-np.inf, 2.0, -np.inf]])
    s = F.softmax(x)
    np.testing.assert_allclose(s, [[sp.expit(-1.0), 0.0, sp.expit(1.0)], [0.0, 1.0, 0.0]], rtol=1e-14)
    t = itn.tensor(x, requires_grad=True)
    F.softmax(t).backward(np.ones_like(x) + np.arange(3.0))
    assert np.all(np.isfinite(t.grad.numpy()))
    assert t.grad.numpy()[0, 1] == 0.0
    assert F.log_softmax(x)[1, 1] == 0.0


def test_rows_sum_to_one_and_log_consistent():
    x = np.random.default_rng(4).standard_normal((5, 7)) * 30
    np.testing.assert_allclose(F.softmax(x, axis=0).sum(axis=0), 1.0, rtol=1e-14)
    np.testing.assert_allclose(np.exp(F.log_softmax(x, axis=0)), F.softmax(x, axis=0), rtol=1e-13)


def test_float32_stays_float32():
    x = itn.tensor(np.ones((2, 3), dtype=np.float32), requires_grad=True)
    F.log_softmax(F.softmax(x)).sum().backward()
    assert x.grad.dtype == np.float32


def test_errors():
    with pytest.raises(ShapeError, match="axis 2"):
        F.softmax(np.ones((2, 3)), axis=2)
    with pytest.raises(TypeError, match="axis must be an int"):
        F.log_softmax(np.ones((2, 3)), axis=(0, 1))


@pytest.mark.parametrize("f", [F.softmax, F.log_softmax])
@pytest.mark.parametrize("shape,axis", [((2, 0), 1), ((0, 3), 0), ((0, 3), 1), ((0,), 0), ((2, 0, 3), -2)])
def test_empty_input_gives_an_empty_result(f, shape, axis):
    # torch: softmax over an axis of length 0 (or of an empty batch) is an empty tensor of x's shape;
    # NumPy's max over the empty axis used to raise "zero-size array to reduction operation".
    x = itn.tensor(np.zeros(shape), requires_grad=True)
    y = f(x, axis=axis)
    assert y.shape == shape and y.dtype == np.float64
    itn.sum(y).backward()
    assert x.grad.shape == shape
    assert f(np.zeros(shape, np.float32), axis=axis).dtype == np.float32
