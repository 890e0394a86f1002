"""In-place safety, as in torch (issue 7): in-place operators on leaves that require grad, the
version counter that catches tensors modified after the forward, and empty tensors' gradients.

Expected gradients are written out by hand from the formulas in each test.
"""
import numpy as np
import pytest

import itnet_np as itn
from itnet_np.errors import DTypeError, GraphError, ShapeError


@pytest.mark.parametrize("update", [lambda w, d: w.__isub__(d), lambda w, d: w.__iadd__(d),
                                    lambda w, d: w.__imul__(d), lambda w, d: w.__itruediv__(d)],
                         ids=["-=", "+=", "*=", "/="])
def test_in_place_on_a_leaf_that_requires_grad_raises_and_points_to_no_grad(update):
    w = itn.tensor(np.array([1.0, 2.0]), requires_grad=True)
    (w * w).sum().backward()
    with pytest.raises(GraphError, match=r"leaf tensor that requires grad.*with itn\.no_grad\(\)"):
        update(w, 0.1 * w.grad)
    assert w.is_leaf and w.requires_grad and w._version == 0


def test_under_no_grad_the_update_is_in_place_and_w_stays_a_leaf():
    w = itn.tensor(np.array([1.0, 2.0]), requires_grad=True)
    array = w.data
    for step in range(3):
        w.grad = None
        (w * w).sum().backward()  # dL/dw = 2 w
        np.testing.assert_allclose(w.grad.data, 2 * array, rtol=1e-15)
        before = array.copy()
        with itn.no_grad():
            w -= 0.1 * w.grad
        assert w.data is array and w.is_leaf and w.requires_grad and w.node is None
        np.testing.assert_allclose(array, before * 0.8, rtol=1e-15)
        assert w._version == step + 1
    with itn.no_grad():
        w *= 2
        w /= 4
        w += itn.tensor(np.array([1.0, 1.0]))
    np.testing.assert_allclose(array, 0.8 ** 3 * np.array([1.0, 2.0]) / 2 + 1, rtol=1e-15)


def test_in_place_without_any_grad_writes_into_the_array():
    t = itn.tensor(np.array([1.0, 2.0, 3.0]))
    array = t.data
    t += 1
    t *= np.array([1, 0, 2])
    assert t.data is array
    np.testing.assert_array_equal(array, [2.0, 0.0, 8.0])


def test_in_place_on_an_intermediate_in_grad_mode_rebinds_and_gradients_stay_right():
    x = itn.tensor(np.array([1.0, -2.0]), requires_grad=True)
    h = x * 3
    alias = h
    h += x * x  # h = 3x + x^2, recorded out of place
    assert h is not alias and alias.node.prim.name == "multiply"
    h.sum().backward()
    np.testing.assert_allclose(x.grad.data, 3 + 2 * x.data, rtol=1e-15)


def test_in_place_keeps_shape_and_dtype():
    t = itn.tensor(np.ones(3))
    with pytest.raises(ShapeError, match=r"would change x from \(3,\) float64 to \(2, 3\) float64"):
        t += np.ones((2, 3))
    i = itn.tensor(np.array([1, 2]))
    with pytest.raises(DTypeError, match=r"would change x from \(2,\) int64 to \(2,\) float"):
        i += 0.5
    with pytest.raises(DTypeError, match="cannot mix float64 and float32"):
        t += np.ones(3, np.float32)


# ----- the version counter -----------------------------------------------------------------------------
def test_mutating_data_after_the_forward_raises_at_backward_instead_of_a_wrong_gradient():
    # y = x * x at x = 1: dy/dx = 2. Without the counter, x.data *= 5 made backward return 10.
    x = itn.tensor(np.array(1.0), requires_grad=True)
    y = x * x
    x.data *= 5
    with pytest.raises(GraphError, match=r"op 'multiply': its input 0 \(shape \(\) float64\) was modified in "
                                         r"place after the forward \(version 0 then, 1 now\)"):
        y.backward()


@pytest.mark.parametrize("mutate", [
    lambda x: x.__setattr__("data", np.array([5.0, 5.0])),
    lambda x: x.__setitem__(0, 7.0),
    lambda x: x.__iadd__(1.0)], ids=["assign_data", "setitem", "iadd"])
def test_every_tensor_api_write_is_seen(mutate):
    x = itn.tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = itn.sin(x) * x
    with itn.no_grad():
        mutate(x)
    with pytest.raises(GraphError, match=r"modified in place after the forward"):
        y.sum().backward(create_graph=True)


def test_a_saved_output_modified_in_place_is_caught():
    x = itn.tensor(np.array([0.5, 1.0]), requires_grad=True)
    y = itn.exp(x)  # exp saves its output for the gradient
    with itn.no_grad():
        y *= 2
    with pytest.raises(GraphError, match=r"op 'exp': its output was modified in place"):
        y.sum().backward()


def test_no_false_alarms():
    x = itn.tensor(np.array([1.0, 2.0]), requires_grad=True)
    with itn.no_grad():
        x += 1  # before the forward: the graph sees version 1 and nothing changes after
    y = (x * x).sum()
    other = itn.tensor(np.array([4.0]))
    other += 1  # an unrelated tensor
    y.backward(retain_graph=True)
    np.testing.assert_allclose(x.grad.data, 2 * np.array([2.0, 3.0]), rtol=1e-15)
    with itn.no_grad():
        x -= 0.5 * x.grad  # after backward, as an optimiser step does
    x.grad = None
    (x * x).sum().backward()  # a new forward sees the new values
    np.testing.assert_allclose(x.grad.data, 2 * (np.array([2.0, 3.0]) - np.array([2.0, 3.0])), atol=1e-15)


def test_setitem_outside_the_graph_and_refused_inside():
    t = itn.tensor(np.zeros((2, 3)))
    t[0] = 1.5
    t[1, [0, 2]] = itn.tensor(np.array([2.0, 3.0]))
    t[t.data > 2.5] = 9
    np.testing.assert_array_equal(t.data, [[1.5, 1.5, 1.5], [2.0, 0.0, 9.0]])
    assert t._version == 3
    with pytest.raises(DTypeError, match=r"value is float32, x is float64"):
        t[0] = np.ones(3, np.float32)
    with pytest.raises(DTypeError, match=r"value is float64, x is int64"):
        itn.tensor(np.zeros(2, np.int64))[0] = 0.5
    with pytest.raises(ShapeError, match=r"value of shape \(2,\) does not fit"):
        t[0] = [1.0, 2.0]
    w = itn.tensor(np.zeros(3), requires_grad=True)
    with pytest.raises(GraphError, match=r"leaf tensor that requires grad.*no_grad"):
        w[0] = 1.0
    h = w * 2
    with pytest.raises(GraphError, match=r"itn\.where"):
        h[0] = 1.0
    with itn.no_grad():
        w[1] = 4.0
    np.testing.assert_array_equal(w.data, [0.0, 4.0, 0.0])


# ----- empty tensors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [lambda x: x.sum(), lambda x: (x * 2).sum(), lambda x: itn.exp(x).sum(axis=0).sum(),
                                lambda x: (x @ itn.tensor(np.ones((3, 2)))).sum(),
                                lambda x: itn.einsum("nj,nj->", x, x)],
                         ids=["sum", "mul", "sum_axis0", "matmul", "einsum"])
def test_empty_tensors_get_zero_gradients_of_their_shape(fn):
    x = itn.tensor(np.ones((0, 3)), requires_grad=True)
    fn(x).backward()
    assert x.grad is not None and x.grad.shape == (0, 3)


def test_matmul_with_an_empty_inner_dimension_gives_zero_gradients():
    a = itn.tensor(np.ones((2, 0)), requires_grad=True)
    b = itn.tensor(np.ones((0, 3)), requires_grad=True)
    w = itn.tensor(np.ones((2, 3)), requires_grad=True)
    ((a @ b) * w).sum().backward()  # a @ b is zeros (2, 3): dL/dw = 0
    assert a.grad.shape == (2, 0) and b.grad.shape == (0, 3)
    np.testing.assert_array_equal(w.grad.data, np.zeros((2, 3)))
