"""linear: y = x W^T + b for 1-D, 2-D and batched inputs against NumPy, gradients against the
closed forms, gradcheck / gradgradcheck, torch cross-check, errors."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import itnet_np as itn
import itnet_np.nn.functional as F
from itnet_np.errors import ShapeError


@given(st.lists(st.integers(1, 3), max_size=3), st.integers(1, 4), st.integers(1, 4), st.booleans(),
       st.integers(0, 100))
def test_forward_and_gradients(lead, n_in, n_out, with_bias, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(tuple(lead) + (n_in,))
    w = rng.standard_normal((n_out, n_in))
    b = rng.standard_normal(n_out) if with_bias else None
    tx, tw = itn.tensor(x, requires_grad=True), itn.tensor(w, requires_grad=True)
    tb = itn.tensor(b, requires_grad=True) if with_bias else None
    y = F.linear(tx, tw, tb)
    want = np.einsum("...i,oi->...o", x, w) + (b if with_bias else 0)
    np.testing.assert_allclose(y.numpy(), want, rtol=1e-12, atol=1e-13)
    g = rng.standard_normal(want.shape)
    y.backward(g)
    np.testing.assert_allclose(tx.grad.numpy(), np.einsum("...o,oi->...i", g, w), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(tw.grad.numpy(), g.reshape(-1, n_out).T @ x.reshape(-1, n_in), rtol=1e-12, atol=1e-13)
    if with_bias:
        np.testing.assert_allclose(tb.grad.numpy(), g.reshape(-1, n_out).sum(axis=0), rtol=1e-12, atol=1e-13)


def test_gradcheck_and_gradgradcheck():
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    assert itn.gradcheck(F.linear, [x, w, b])
    assert itn.gradgradcheck(lambda *a: F.linear(*a) ** 2, [x, w, b])


def test_torch_cross_check():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((3, 2, 4)), rng.standard_normal((5, 4)), rng.standard_normal(5)
    theirs = torch.nn.functional.linear(torch.tensor(x), torch.tensor(w), torch.tensor(b)).numpy()
    np.testing.assert_allclose(F.linear(x, w, b), theirs, rtol=1e-12, atol=1e-13)


def test_errors():
    with pytest.raises(ShapeError, match=r"input of shape \(2, 3\) does not match weight of shape \(4, 5\)"):
        F.linear(np.zeros((2, 3)), np.zeros((4, 5)))
    with pytest.raises(ShapeError, match="weight must be"):
        F.linear(np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(ShapeError, match=r"bias has shape \(3,\), expected \(4,\)"):
        F.linear(np.zeros((2, 3)), np.zeros((4, 3)), np.zeros(3))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bias_added_in_place_into_the_product_only(dtype):
    # With a bias, linear is one primitive that adds b into the GEMM's fresh output: the inputs are
    # left alone, the dtype is kept, and db is the sum of g over every leading position.
    rng = np.random.default_rng(3)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((2, 3, 4), (5, 4), (5,)))
    before = [a.copy() for a in (x, w, b)]
    tb = itn.tensor(b, requires_grad=True)
    y = F.linear(itn.tensor(x), itn.tensor(w), tb)
    for a, c in zip((x, w, b), before):
        np.testing.assert_array_equal(a, c)
    assert y.dtype == dtype
    g = rng.standard_normal(y.shape).astype(dtype)
    y.backward(g)
    assert tb.grad.dtype == dtype
    np.testing.assert_allclose(tb.grad.numpy(), g.astype(np.float64).sum(axis=(0, 1)),
                               rtol=1e-12 if dtype == np.float64 else 1e-5)
