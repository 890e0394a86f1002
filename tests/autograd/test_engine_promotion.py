"""The promotion rule (issue 7, defects 1, 3 and 15): Python numbers, integer and bool operands take
the float tensor's dtype, on NumPy 1.26 and 2.x alike; float32 never meets float64 silently; shape
and data errors are the project's, naming the op, the inputs and what was expected.

The oracle for values is NumPy in float64 on the same numbers; dtypes are compared exactly.
"""
import numpy as np
import pytest

import itnet_np as itn
from itnet_np import nn
from itnet_np.errors import DTypeError, ShapeError
from itnet_np.nn import functional as F

F32 = np.float32

# Operands that carry no float dtype of their own; each must take the tensor's dtype.
OTHERS = {
    "py_int": 2, "py_float": 0.5, "py_bool": True, "np_int64": np.int64(3), "np_uint8": np.uint8(4),
    "int_array": np.array([1, 3, 2]), "bool_array": np.array([True, True, True]),
    "int_tensor": itn.tensor(np.array([3, 1, 2], dtype=np.int32)), "int_list": [1, 2, 3],
    "float_list": [0.25, 0.5, 2.0],
}
BINARY = {"add": (lambda a, b: a + b, np.add), "rsub": (lambda a, b: b - a, lambda a, b: b - a),
          "multiply": (lambda a, b: a * b, np.multiply), "divide": (lambda a, b: a / b, np.divide),
          "rdivide": (lambda a, b: b / a, lambda a, b: b / a), "power": (lambda a, b: a ** b, np.power),
          "maximum": (itn.maximum, np.maximum)}


def _f64(v):
    return np.asarray(v.data if isinstance(v, itn.Tensor) else v, dtype=np.float64)


@pytest.mark.parametrize("shape", [(), (3,)], ids=["0d", "1d"])
@pytest.mark.parametrize("other", OTHERS, ids=list(OTHERS))
@pytest.mark.parametrize("op", BINARY, ids=list(BINARY))
def test_non_float_operands_take_the_float32_dtype(op, other, shape):
    if shape == () and isinstance(OTHERS[other], (np.ndarray, list, itn.Tensor)):
        shape = (3,)  # a length-3 operand needs a length-3 tensor
    xv = np.linspace(0.5, 1.5, 3).reshape(-1)[:int(np.prod(shape))].reshape(shape).astype(F32)
    x = itn.tensor(xv, requires_grad=True)
    fn, ref = BINARY[op]
    y = fn(x, OTHERS[other])
    assert y.dtype == F32
    np.testing.assert_allclose(y.data, ref(_f64(xv), _f64(OTHERS[other])), rtol=1e-6)
    y.sum().backward()
    assert x.grad.dtype == F32 and x.grad.shape == xv.shape


def test_the_reproducers_of_defects_1_and_3():
    x = itn.tensor(np.ones(3, F32), requires_grad=True)
    (x * np.array([1, 0, 1])).sum().backward()
    assert x.grad.dtype == F32
    np.testing.assert_array_equal(x.grad.data, [1, 0, 1])
    v = itn.tensor(np.array([0.5, 2.0], F32), requires_grad=True)
    s = v.sum()
    for r in (s + 1, s * 2, 2 - s, s / 3, s ** 2, 1 + s * 2):
        assert r.dtype == F32
    (s + 1).backward()
    assert v.grad.dtype == F32


UNARY_0D = {  # VJPs that build constants from Python numbers: 0-d float32 inputs on NumPy 1.26
    "sqrt": (itn.sqrt, lambda x: 0.5 / np.sqrt(x)), "tanh": (itn.tanh, lambda x: 1 - np.tanh(x) ** 2),
    "log1p": (itn.log1p, lambda x: 1 / (1 + x)), "expm1": (itn.expm1, np.exp),
    "mean": (itn.mean, lambda x: 1.0), "var_ddof0": (lambda t: itn.var(t * itn.tensor(np.ones(2, F32))),
                                                     lambda x: 0.0),
    "pow_int": (lambda t: t ** 3, lambda x: 3 * x * x), "rpow": (lambda t: 2 ** t, lambda x: np.log(2) * 2 ** x),
    "sigmoid": (F.sigmoid, lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2),
    "relu": (F.relu, lambda x: float(x > 0)), "divide_int": (lambda t: t / 4, lambda x: 0.25),
    "where": (lambda t: itn.where(t > 0, t * 2, 0), lambda x: 2.0), "sign": (itn.sign, lambda x: 0.0),
}


@pytest.mark.parametrize("name", UNARY_0D, ids=list(UNARY_0D))
def test_zero_dim_float32_keeps_its_dtype_forward_and_backward(name):
    fn, deriv = UNARY_0D[name]
    x = itn.tensor(F32(0.7), requires_grad=True)
    y = fn(x)
    assert y.dtype == F32 and y.shape == ()
    y.backward()
    assert x.grad.dtype == F32
    np.testing.assert_allclose(x.grad.data, deriv(0.7), rtol=2e-6, atol=1e-7)


def test_cross_entropy_on_float32_logits_is_float32():
    logits = itn.tensor(np.array([[1.0, -0.5, 0.2], [0.3, 0.1, -1.0]], F32), requires_grad=True)
    loss = F.cross_entropy(logits, np.array([0, 2]))
    assert loss.dtype == F32
    loss.backward()
    assert logits.grad.dtype == F32
    z = logits.data.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    want = -np.log(p[[0, 1], [0, 2]]).mean()
    assert loss.item() == pytest.approx(want, rel=1e-6)


def test_integer_input_to_layers_takes_the_weight_dtype():
    layer = nn.Linear(2, 2, rng=0)
    xi = np.array([[1, 2], [-3, 0]])
    y = layer(xi)
    assert y.dtype == F32
    np.testing.assert_allclose(y.data, xi @ layer.weight.data.T.astype(np.float64) + layer.bias.data, rtol=1e-6)
    y.sum().backward()
    np.testing.assert_allclose(layer.weight.grad.data, np.ones((2, 1)) * xi.sum(0), rtol=1e-6)

    from itnet_np.transform import IntegralTransform
    from itnet_np.transform.kernels import MLPKernel
    rng = np.random.default_rng(0)
    op = IntegralTransform(2, 2, MLPKernel(2, heads=1, hidden=4, inputs=("dp", "fi", "fj"), rng=rng),
                           normalization="softmax", support="causal", rng=rng)
    positions = np.array([[[1, 2], [3, 4], [0, 1]]])
    np.testing.assert_array_equal(op(positions).data, op(positions.astype(F32)).data)


def test_a_real_float_conflict_names_each_input_and_its_dtype():
    x32 = itn.tensor(np.ones(2, F32))
    x64 = itn.tensor(np.ones(2, np.float64))
    with pytest.raises(DTypeError, match=r"add: cannot mix float32 and float64: input 0\b.* is float32, "
                                         r"input 1\b.* is float64"):
        x32 + x64
    with pytest.raises(DTypeError, match=r"cannot mix float64 and float32: input 0 \(x\) is float64, "
                                         r"input 1 \((y|weight)\) is float32"):
        nn.Linear(2, 2)(np.ones((1, 2)))  # a float64 input x against the float32 weight
    with pytest.raises(DTypeError, match=r"cannot mix float32 and float64"):
        x32 * np.float64(2.0)  # a NumPy float64 scalar is float64 data, not a weak Python float


def test_without_a_float_input_a_float_result_takes_the_default_dtype():
    i = itn.tensor([1, 2, 3])
    assert (i + 1).dtype == i.dtype  # integer arithmetic stays integer
    for r in (i / 2, i * 0.5, itn.sqrt(i), i + [0.5, 0.5, 0.5]):
        assert r.dtype == itn.get_default_dtype()
    np.testing.assert_allclose((i / 2).data, [0.5, 1.0, 1.5])
    assert itn.astype(i, np.float64).dtype == np.float64  # an explicit cast is kept


# ----- defect 15 (engine part): the project's errors, not NumPy's ------------------------------------
def test_matmul_and_broadcast_shape_mismatches_raise_shape_error_naming_the_shapes():
    a, b = itn.tensor(np.ones((2, 3))), itn.tensor(np.ones((4, 5)))
    with pytest.raises(ShapeError, match=r"matmul: x of shape \(2, 3\) and y of shape \(4, 5\).*last axis of x "
                                         r"\(3\) must equal the second-to-last axis of y \(4\)") as err:
        a @ b
    assert "gufunc" not in str(err.value) and "signature" not in str(err.value)
    with pytest.raises(ShapeError, match=r"matmul: .*batch dimensions \(2,\) and \(3,\) do not broadcast"):
        itn.tensor(np.ones((2, 4, 3))) @ itn.tensor(np.ones((3, 3, 5)))
    with pytest.raises(ShapeError, match=r"add: inputs of shapes \(2, 3\) and \(4,\)"):
        itn.tensor(np.ones((2, 3))) + itn.tensor(np.ones(4))
    with pytest.raises(ShapeError, match=r"einsum 'i,i->': label 'i' has length 2 in one operand and 3"):
        itn.einsum("i,i->", np.ones(2), itn.tensor(np.ones(3)))


@pytest.mark.parametrize("bad,kind", [
    (None, "NoneType"), ("abc", "str"), (np.array(["a", "b"]), "<U1"), (np.array([1, None], dtype=object), "object"),
    (1j, "complex"), ([1.0, "x"], "<U"), ({"a": 1}, "dict")])
def test_tensor_refuses_non_numeric_data(bad, kind):
    with pytest.raises(DTypeError, match=rf"tensor: got .*{kind}.*expected bool, integer or float data"):
        itn.tensor(bad)


def test_ragged_lists_raise_shape_error():
    with pytest.raises(ShapeError, match="ragged"):
        itn.tensor([[1.0, 2.0], [3.0]])
    with pytest.raises(ShapeError, match="multiply: input 1.*ragged"):
        itn.tensor(np.ones(2)) * [[1.0], [2.0, 3.0]]


@pytest.mark.parametrize("bad", ["a", 1j, np.array(["x"]), [None, None]], ids=["str", "complex", "str_array", "nones"])
def test_ops_refuse_non_numeric_operands(bad):
    x = itn.tensor(np.ones(2, F32), requires_grad=True)
    with pytest.raises(DTypeError, match=r"multiply: input 1.*expected bool, integer or float data"):
        x * bad
    with pytest.raises(DTypeError, match=r"tensor: dtype=.*not supported"):
        itn.tensor([1.0], dtype=str)
