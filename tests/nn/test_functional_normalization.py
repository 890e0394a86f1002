"""layer_norm: forward against the NumPy formula, the input gradient against the closed form,
gradcheck / gradgradcheck with weight and bias, torch cross-check, errors."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import itnet_np as itn
import itnet_np.nn.functional as F
from itnet_np.errors import ConfigError, ShapeError


def ln_reference(x, k, w=None, b=None, eps=1e-5):
    axes = tuple(range(x.ndim - k, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mu) / np.sqrt(var + eps)
    return y * (1 if w is None else w) + (0 if b is None else b)


@st.composite
def ln_case(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4))
    k = draw(st.integers(1, len(shape)))
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    x = rng.standard_normal(shape) * 3 + 1
    affine = draw(st.booleans())
    w = rng.standard_normal(shape[len(shape) - k:]) if affine else None
    b = rng.standard_normal(shape[len(shape) - k:]) if affine else None
    return x, k, w, b, draw(st.sampled_from([1e-5, 0.5]))


@given(ln_case())
def test_forward_and_gradient_match_formula(case):
    x, k, w, b, eps = case
    normalized_shape = x.shape[x.ndim - k:]
    t = itn.tensor(x, requires_grad=True)
    y = F.layer_norm(t, normalized_shape, w, b, eps=eps)
    np.testing.assert_allclose(y.numpy(), ln_reference(x, k, w, b, eps), rtol=1e-12, atol=1e-12)
    g = np.random.default_rng(1).standard_normal(x.shape)
    y.backward(g)
    # dx = r (gw - mean(gw) - yhat mean(gw yhat)) over the normalised axes, gw = g * weight.
    axes = tuple(range(x.ndim - k, x.ndim))
    yhat = ln_reference(x, k, eps=eps)
    r = 1 / np.sqrt(((x - x.mean(axis=axes, keepdims=True)) ** 2).mean(axis=axes, keepdims=True) + eps)
    gw = g * (1 if w is None else w)
    want = r * (gw - gw.mean(axis=axes, keepdims=True) - yhat * (gw * yhat).mean(axis=axes, keepdims=True))
    np.testing.assert_allclose(t.grad.numpy(), want, rtol=1e-10, atol=1e-11)


def test_gradcheck_and_gradgradcheck_with_affine():
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    f = lambda x_, w_, b_: F.layer_norm(x_, (3, 4), w_, b_)
    assert itn.gradcheck(f, [x, w, b])
    assert itn.gradgradcheck(f, [x, w, b])
    assert itn.gradgradcheck(lambda x_: F.layer_norm(x_, 4, eps=0.1), [x])


def test_torch_cross_check():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((3, 2, 5)), rng.standard_normal(5), rng.standard_normal(5)
    theirs = torch.nn.functional.layer_norm(torch.tensor(x), (5,), torch.tensor(w), torch.tensor(b), 1e-5)
    np.testing.assert_allclose(F.layer_norm(x, 5, w, b), theirs.numpy(), rtol=1e-12, atol=1e-13)


def test_constant_rows_are_finite():
    x = itn.tensor(np.full((2, 4), 3.0), requires_grad=True)
    y = F.layer_norm(x, 4)
    y.backward(np.arange(8.0).reshape(2, 4))
    assert np.all(y.numpy() == 0) and np.all(np.isfinite(x.grad.numpy()))


def test_errors():
    x = np.zeros((2, 3))
    with pytest.raises(ShapeError, match=r"\(2, 3\) does not end with normalized_shape \(2,\)"):
        F.layer_norm(x, 2)
    with pytest.raises(ShapeError, match="weight has shape"):
        F.layer_norm(x, 3, weight=np.ones(2))
    with pytest.raises(ShapeError, match="bias has shape"):
        F.layer_norm(x, 3, bias=np.ones((1, 3)))
    with pytest.raises(ConfigError, match="eps"):
        F.layer_norm(x, 3, eps=0.0)
