"""Python and NumPy protocols on Tensors (issue 7): float(), int(), round(), format specs,
operator.index, bool(), np.asarray and NumPy's reductions.

Decisions, stated by the tests: a one-element tensor converts to a Python number (of any shape,
as in torch); anything larger raises ShapeError naming its shape. np.sum(t), np.mean(t), np.max(t),
... call the Tensor methods, so they return Tensors and stay differentiable; ``out=`` is refused;
NumPy ufuncs (np.exp(t)) raise TypeError (use the itn ops); other NumPy functions see
np.asarray(t), a NumPy value without a graph.
"""
import math
import operator
import re

import numpy as np
import pytest

import itnet_np as itn
from itnet_np.errors import ShapeError


def test_one_element_tensors_convert_to_python_numbers():
    loss = itn.tensor(np.array([[2.71828]], dtype=np.float32), requires_grad=True).sum()
    assert isinstance(float(loss), float) and float(loss) == pytest.approx(2.71828, rel=1e-6)
    assert int(itn.tensor(-2.9)) == -2 and int(itn.tensor([7])) == 7
    assert round(itn.tensor(2.5)) == 2 and round(itn.tensor(3.5)) == 4  # Python's half-to-even
    assert round(itn.tensor(np.pi, dtype=np.float64), 3) == 3.142
    assert f"{loss:.3f}" == "2.718" and f"{itn.tensor(3):>4d}" == "   3"
    assert f"{loss}" == str(loss)
    assert bool(itn.tensor([1.0])) and not bool(itn.tensor(0))
    assert itn.tensor([[5.0]]).item() == 5.0


def test_integer_tensors_are_indices():
    i = itn.tensor(2)
    assert operator.index(i) == 2 and [10, 20, 30][i] == 30 and list(range(i)) == [0, 1]
    assert np.arange(5)[itn.tensor(np.int64(4))] == 4
    with pytest.raises(TypeError, match="only integer tensors can be used as an index; this one is float32"):
        operator.index(itn.tensor(1.0))


@pytest.mark.parametrize("convert,what", [(float, "float()"), (int, "int()"), (round, "round()"),
                                          (bool, "bool()"), (lambda t: t.item(), "item()"),
                                          (lambda t: f"{t:.2f}", "format spec '.2f'")])
def test_conversions_of_larger_tensors_name_the_shape(convert, what):
    t = itn.tensor(np.ones((2, 3)))
    with pytest.raises(ShapeError, match=rf"{re.escape(what)} needs a tensor with exactly one element; this one "
                                         r"has shape \(2, 3\) \(6 elements\)"):
        convert(t)
    with pytest.raises(ShapeError, match=r"shape \(0,\)"):
        convert(itn.tensor(np.zeros(0)))


def test_asarray_gives_the_array():
    t = itn.tensor(np.arange(3.0), requires_grad=True)
    a = np.asarray(t)
    assert type(a) is np.ndarray and np.shares_memory(a, t.data)
    c = np.array(t, copy=True) if np.__version__ >= "2" else np.array(t)
    assert not np.shares_memory(c, t.data)
    np.testing.assert_array_equal(np.asarray(t, dtype=np.float32), np.arange(3.0, dtype=np.float32))


@pytest.mark.parametrize("fn,grad", [
    (np.sum, lambda x: np.ones_like(x)), (np.mean, lambda x: np.full_like(x, 1 / x.size)),
    (np.max, lambda x: (x == x.max()).astype(x.dtype)), (np.min, lambda x: (x == x.min()).astype(x.dtype)),
    (np.prod, lambda x: np.prod(x) / x), (np.var, lambda x: 2 * (x - x.mean()) / x.size)])
def test_numpy_reductions_call_the_tensor_methods_and_stay_differentiable(fn, grad):
    xv = np.array([[0.5, -1.5, 2.0], [1.0, 3.0, -0.25]])
    x = itn.tensor(xv, requires_grad=True)
    y = fn(x)
    assert isinstance(y, itn.Tensor) and y.requires_grad
    assert y.item() == pytest.approx(float(fn(xv)), rel=1e-14)
    y.backward()
    np.testing.assert_allclose(x.grad.data, grad(xv), rtol=1e-14)
    by_axis = np.sum(x, axis=0, keepdims=True)
    np.testing.assert_allclose(by_axis.data, xv.sum(0, keepdims=True), rtol=1e-15)
    with pytest.raises(TypeError, match=r"out=.*not supported"):
        fn(x, out=np.zeros(()))


def test_numpy_reduction_dtype_argument_is_an_explicit_cast():
    x = itn.tensor(np.array([1.5, 2.5], dtype=np.float32), requires_grad=True)
    y = np.sum(x, dtype=np.float64)
    assert y.dtype == np.float64 and y.item() == 4.0
    y.backward()
    assert x.grad.dtype == np.float32


def test_numpy_ufuncs_refuse_tensors_and_ndarray_operators_defer():
    x = itn.tensor(np.array([0.0, 1.0]), requires_grad=True)
    with pytest.raises(TypeError):
        np.exp(x)
    y = np.array([2.0, 3.0]) * x  # ndarray * Tensor -> Tensor.__rmul__, recorded
    assert isinstance(y, itn.Tensor) and y.requires_grad
    assert math.isclose(float(np.concatenate([x, x]).sum()), 2.0)  # other functions see np.asarray(x)


def test_reduction_and_order_methods_match_numpy():
    """The Tensor methods added with the ops (std, norm, cumsum, cumprod, argmax, argmin, sort,
    topk, tril, triu) compute what NumPy computes, and keep the graph where a value is returned."""
    a = np.random.default_rng(3).standard_normal((4, 5))
    t = itn.tensor(a, requires_grad=True)
    np.testing.assert_allclose(t.std(axis=1, ddof=1).numpy(), a.std(axis=1, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(t.norm(axis=0).numpy(), np.linalg.norm(a, axis=0), rtol=1e-12)
    np.testing.assert_allclose(t.cumsum(axis=1).numpy(), np.cumsum(a, axis=1), rtol=1e-12)
    np.testing.assert_allclose(t.cumprod(axis=0).numpy(), np.cumprod(a, axis=0), rtol=1e-12)
    np.testing.assert_array_equal(t.argmax(axis=1).numpy(), a.argmax(axis=1))
    np.testing.assert_array_equal(t.argmin(axis=0).numpy(), a.argmin(axis=0))
    values, indices = t.sort(axis=1, descending=True)
    np.testing.assert_array_equal(values.numpy(), -np.sort(-a, axis=1))
    np.testing.assert_array_equal(indices.numpy(), np.argsort(-a, axis=1, kind="stable"))
    top, where = t.topk(2, axis=1)
    np.testing.assert_array_equal(top.numpy(), -np.sort(-a, axis=1)[:, :2])
    np.testing.assert_array_equal(np.take_along_axis(a, where.numpy(), axis=1), top.numpy())
    np.testing.assert_array_equal(t.tril(k=-1).numpy(), np.tril(a, -1))
    np.testing.assert_array_equal(t.triu(k=1).numpy(), np.triu(a, 1))
    (top.sum() + t.norm()).backward()
    expected = a / np.linalg.norm(a)
    np.put_along_axis(expected, where.numpy(), np.take_along_axis(expected, where.numpy(), 1) + 1, 1)
    np.testing.assert_allclose(t.grad.numpy(), expected, rtol=1e-12)
