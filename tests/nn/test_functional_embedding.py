"""embedding: rows picked by index, gradient accumulated over repeated indices (against an explicit
loop), gradcheck / gradgradcheck, errors."""
import numpy as np
import pytest

import itnet_np as itn
import itnet_np.nn.functional as F
from itnet_np.errors import ConfigError, DTypeError, ShapeError


def test_forward_and_accumulated_gradient():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 3))
    idx = np.array([[1, 4, 1], [0, 1, 4]])
    t = itn.tensor(w, requires_grad=True)
    out = F.embedding(idx, t)
    assert out.shape == (2, 3, 3)
    for pos in np.ndindex(*idx.shape):
        np.testing.assert_array_equal(out.numpy()[pos], w[idx[pos]])
    g = rng.standard_normal(out.shape)
    out.backward(g)
    want = np.zeros_like(w)
    for pos in np.ndindex(*idx.shape):
        want[idx[pos]] += g[pos]
    np.testing.assert_allclose(t.grad.numpy(), want, rtol=1e-15)
    assert np.all(t.grad.numpy()[[2, 3]] == 0)


def test_gradcheck_and_gradgradcheck():
    w = np.random.default_rng(1).standard_normal((4, 2))
    idx = np.array([3, 0, 3, 3])
    assert itn.gradcheck(lambda t: F.embedding(idx, t), [w])
    assert itn.gradgradcheck(lambda t: F.embedding(idx, t) ** 2, [w])


def test_integer_tensor_indices_and_scalar_index():
    w = np.arange(6.0).reshape(3, 2)
    np.testing.assert_array_equal(F.embedding(itn.tensor(np.array([2, 0])), w), w[[2, 0]])
    np.testing.assert_array_equal(F.embedding(np.int64(1), w), w[1])


def test_errors():
    w = np.zeros((3, 2))
    with pytest.raises(DTypeError, match="indices must be integers"):
        F.embedding(np.array([0.0, 1.0]), w)
    with pytest.raises(ConfigError, match=r"\[0, 3\).*\[0, 3\]"):
        F.embedding(np.array([0, 3]), w)
    with pytest.raises(ConfigError, match=r"\[-1, 0\]"):
        F.embedding(np.array([-1, 0]), w)
    with pytest.raises(ShapeError, match="weight must be"):
        F.embedding(np.array([0]), np.zeros(3))
