"""Elementwise ops: forwards against Python's math module, gradients against hand-written derivatives,
and the dot-product gradient checks (first and second order) on hypothesis-drawn shapes.

The oracles are scalar functions from ``math`` applied element by element (np.vectorize), so they
share no code with the NumPy ufuncs behind the ops. Un-broadcasting of the expected gradients is done
here by an explicit sum over axes, independently of the engine's ``unbroadcast``.
"""
import math
import operator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import arrays, broadcastable_shapes, small_shapes

import itnet_np as itn


def _vec(f):
    return np.vectorize(f, otypes=[np.float64])


def _sign(v):
    return 0.0 if v == 0 else math.copysign(1.0, v)


def _reduce_to(a, shape):
    """Sum a broadcast gradient down to ``shape`` (leading axes, then stretched length-1 axes)."""
    a = np.asarray(a)
    while a.ndim > len(shape):
        a = a.sum(axis=0)
    for i, n in enumerate(shape):
        if n == 1 and a.shape[i] != 1:
            a = a.sum(axis=i, keepdims=True)
    return a


def _close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-13)


def _draw(rng, shape, domain):
    """Continuous random values on ``domain``: 'any' (-2, 2), 'pos' (0.3, 2), 'away' (|x| in (0.3, 2)),
    'gt-1' (-0.6, 2). Ties and points within eps of a kink have probability zero."""
    if domain == "any":
        return rng.uniform(-2, 2, shape)
    if domain == "pos":
        return rng.uniform(0.3, 2, shape)
    if domain == "gt-1":
        return rng.uniform(-0.6, 2, shape)
    return rng.uniform(0.3, 2, shape) * rng.choice([-1.0, 1.0], shape)


# name: (op, oracle, first derivative, second derivative, domain for derivative checks)
UNARY = {
    "negative": (itn.negative, operator.neg, lambda x: -1.0, lambda x: 0.0, "any"),
    "exp": (itn.exp, math.exp, math.exp, math.exp, "any"),
    "expm1": (itn.expm1, math.expm1, math.exp, math.exp, "any"),
    "log": (itn.log, math.log, lambda x: 1 / x, lambda x: -1 / x**2, "pos"),
    "log1p": (itn.log1p, math.log1p, lambda x: 1 / (1 + x), lambda x: -1 / (1 + x) ** 2, "gt-1"),
    "sqrt": (itn.sqrt, math.sqrt, lambda x: 0.5 / math.sqrt(x), lambda x: -0.25 * x**-1.5, "pos"),
    "sin": (itn.sin, math.sin, math.cos, lambda x: -math.sin(x), "any"),
    "cos": (itn.cos, math.cos, lambda x: -math.sin(x), lambda x: -math.cos(x), "any"),
    "tanh": (itn.tanh, math.tanh, lambda x: 1 / math.cosh(x) ** 2,
             lambda x: -2 * math.tanh(x) / math.cosh(x) ** 2, "any"),
    "sign": (itn.sign, _sign, lambda x: 0.0, lambda x: 0.0, "away"),
    "abs": (itn.abs, abs, _sign, lambda x: 0.0, "away"),
}
# Forward domains (hypothesis arrays): where the oracle is defined, zeros included where allowed.
FORWARD_RANGE = {"log": (1e-3, 5.0), "sqrt": (0.0, 5.0), "log1p": (-0.9, 5.0)}

# name: (op, oracle, d/dx, d/dy, domain of x, domain of y)
BINARY = {
    "add": (itn.add, operator.add, lambda x, y: 1.0, lambda x, y: 1.0, "any", "any"),
    "subtract": (itn.subtract, operator.sub, lambda x, y: 1.0, lambda x, y: -1.0, "any", "any"),
    "multiply": (itn.multiply, operator.mul, lambda x, y: y, lambda x, y: x, "any", "any"),
    "divide": (itn.divide, operator.truediv, lambda x, y: 1 / y, lambda x, y: -x / y**2, "any", "pos"),
    "power": (itn.power, math.pow, lambda x, y: y * x ** (y - 1), lambda x, y: x**y * math.log(x),
              "pos", "any"),
    "maximum": (itn.maximum, max, lambda x, y: float(x > y), lambda x, y: float(y > x), "any", "any"),
    "minimum": (itn.minimum, min, lambda x, y: float(x < y), lambda x, y: float(y < x), "any", "any"),
    # arctan2(y, x) = atan2(y, x): here the first argument is the ordinate
    "arctan2": (itn.arctan2, math.atan2, lambda y, x: x / (x * x + y * y), lambda y, x: -y / (x * x + y * y),
                "any", "any"),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(data=st.data())
def test_unary_forward_matches_math(name, data):
    op, oracle = UNARY[name][:2]
    low, high = FORWARD_RANGE.get(name, (-5.0, 5.0))
    x = data.draw(arrays(small_shapes, low, high))
    before = x.copy()
    out = op(itn.tensor(x))
    assert isinstance(out, itn.Tensor) and out.dtype == np.float64 and out.shape == x.shape
    np.testing.assert_allclose(out.data, _vec(oracle)(x), rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(x, before)
    # Raw arrays in, raw array out (the fast path VJPs run on).
    assert not isinstance(op(x), itn.Tensor)


@pytest.mark.parametrize("name", sorted(UNARY))
@given(shape=small_shapes, seed=st.integers(0, 2**32 - 1))
def test_unary_gradients(name, shape, seed):
    op, _, d1, d2, domain = UNARY[name]
    rng = np.random.default_rng(seed)
    x = _draw(rng, shape, domain)
    u = rng.standard_normal(shape)
    t = itn.tensor(x, requires_grad=True)
    op(t).backward(u)
    np.testing.assert_allclose(t.grad.data, u * _vec(d1)(x), rtol=1e-12, atol=1e-14)
    # The Hessian of sum(op(x)) is diagonal with entries op''(x).
    second = itn.grad(lambda z: itn.sum(itn.grad(lambda w: itn.sum(op(w)))(z)))(x)
    np.testing.assert_allclose(second.data, _vec(d2)(x), rtol=1e-12, atol=1e-14)
    assert itn.gradcheck(op, [x], seed=seed % 1000)
    assert itn.gradgradcheck(op, [x], seed=seed % 1000)


@pytest.mark.parametrize("name", sorted(BINARY))
@given(data=st.data())
def test_binary_forward_matches_math(name, data):
    op, oracle = BINARY[name][:2]
    shapes = data.draw(broadcastable_shapes()).input_shapes
    lx = (0.01, 5.0) if name == "power" else (-5.0, 5.0)
    ly = (0.01, 5.0) if name == "divide" else (-3.0, 3.0) if name == "power" else (-5.0, 5.0)
    x = data.draw(arrays(shapes[0], *lx))
    y = data.draw(arrays(shapes[1], *ly))
    out = op(itn.tensor(x), itn.tensor(y))
    expect = _vec(oracle)(x, y)
    assert out.shape == expect.shape and out.dtype == np.float64
    np.testing.assert_allclose(out.data, expect, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", sorted(BINARY))
@given(shapes=broadcastable_shapes(), seed=st.integers(0, 2**32 - 1))
def test_binary_gradients_with_broadcasting(name, shapes, seed):
    op, _, dx, dy, domx, domy = BINARY[name]
    rng = np.random.default_rng(seed)
    sx, sy = shapes.input_shapes
    x, y = _draw(rng, sx, domx), _draw(rng, sy, domy)
    u = rng.standard_normal(shapes.result_shape)
    tx, ty = itn.tensor(x, requires_grad=True), itn.tensor(y, requires_grad=True)
    op(tx, ty).backward(u)
    assert tx.grad.shape == sx and ty.grad.shape == sy
    np.testing.assert_allclose(tx.grad.data, _reduce_to(u * _vec(dx)(x, y), sx), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(ty.grad.data, _reduce_to(u * _vec(dy)(x, y), sy), rtol=1e-12, atol=1e-13)
    assert itn.gradcheck(op, [x, y], seed=seed % 1000)
    assert itn.gradgradcheck(op, [x, y], seed=seed % 1000)


def test_maximum_minimum_split_ties_evenly():
    x = np.array([1.0, 2.0, 3.0, -1.0])
    y = np.array([1.0, 0.0, 5.0, -1.0])
    u = np.array([2.0, 3.0, 5.0, 7.0])
    for op, gx, gy in [(itn.maximum, [1.0, 3.0, 0.0, 3.5], [1.0, 0.0, 5.0, 3.5]),
                       (itn.minimum, [1.0, 0.0, 5.0, 3.5], [1.0, 3.0, 0.0, 3.5])]:
        tx, ty = itn.tensor(x, requires_grad=True), itn.tensor(y, requires_grad=True)
        op(tx, ty).backward(u)
        np.testing.assert_array_equal(tx.grad.data, gx)
        np.testing.assert_array_equal(ty.grad.data, gy)
    # A Python scalar on either side: the tensor keeps its share of the ties.
    t = itn.tensor(np.array([-1.0, 0.0, 2.0]), requires_grad=True)
    itn.sum(itn.maximum(0.0, t)).backward()
    np.testing.assert_array_equal(t.grad.data, [0.0, 0.5, 1.0])


def test_power_at_zero_base_has_finite_gradients():
    # d(x^y)/dy = x^y log x -> 0 as x -> 0+ for y > 0; d(x^y)/dx = y x^(y-1).
    tx = itn.tensor(np.array([0.0, 0.0, 2.0]), requires_grad=True)
    ty = itn.tensor(np.array([2.0, 3.0, 3.0]), requires_grad=True)
    itn.sum(tx ** ty).backward()
    np.testing.assert_allclose(ty.grad.data, [0.0, 0.0, 8 * math.log(2)], rtol=1e-14)
    np.testing.assert_allclose(tx.grad.data, [0.0, 0.0, 12.0], rtol=1e-14)
    # Second derivative in y at x = 0 stays finite too.
    hy = itn.grad(lambda y: itn.sum(itn.grad(lambda w: itn.sum(tx.detach() ** w))(y)))(ty.detach())
    assert np.all(np.isfinite(hy.data))


@pytest.mark.parametrize("exponent", [0, 0.0, "tensor"])
def test_power_with_zero_exponent_at_zero_base_has_zero_gradient(exponent):
    # x^0 = 1 is flat: d/dx = 0 everywhere, also at x = 0 where y x^(y-1) would be 0 * inf (torch: 0).
    x = itn.tensor(np.array([0.0, 0.0, 2.0]), requires_grad=True)
    y = itn.tensor(np.zeros(3), requires_grad=True) if exponent == "tensor" else exponent
    itn.sum(x ** y).backward(create_graph=True)
    np.testing.assert_array_equal(x.grad.data, [0.0, 0.0, 0.0])
    if exponent == "tensor":
        # d/dy x^y = x^y log x: 0 at x = 0 (torch's value for y >= 0), log 2 at x = 2.
        np.testing.assert_allclose(y.grad.data, [0.0, 0.0, math.log(2.0)], rtol=1e-15)
    # The second derivative d2/dx2 x^0 = 0 stays finite as well.
    g = x.grad
    x.grad = None
    itn.sum(g).backward()
    np.testing.assert_array_equal(x.grad.data, [0.0, 0.0, 0.0])


def test_power_gradients_at_zero_base_follow_torch():
    # x = 0: y = 2 -> dx = 2 * 0 = 0, dy = 0; y = 0.5 -> dx = 0.5 * 0^-0.5 = inf; y = 1 -> dx = 1.
    x = itn.tensor(np.zeros(3), requires_grad=True)
    y = itn.tensor(np.array([2.0, 0.5, 1.0]), requires_grad=True)
    with np.errstate(divide="ignore"):
        itn.sum(x ** y).backward()
    np.testing.assert_array_equal(x.grad.data, [0.0, np.inf, 1.0])
    np.testing.assert_array_equal(y.grad.data, [0.0, 0.0, 0.0])


@pytest.mark.parametrize("base", [2.0, 0.0])
def test_power_with_python_scalar_base_keeps_float32(base):
    t = itn.tensor(np.array([0.5, 1.0, 2.0], dtype=np.float32), requires_grad=True)
    y = base ** t
    assert y.dtype == np.float32
    itn.sum(y).backward()
    assert t.grad.dtype == np.float32
    expect = base ** t.data.astype(np.float64) * (math.log(base) if base else 0.0)
    np.testing.assert_allclose(t.grad.data, expect, rtol=1e-6)


@given(shapes=broadcastable_shapes(3), seed=st.integers(0, 2**32 - 1))
def test_where(shapes, seed):
    rng = np.random.default_rng(seed)
    sc, sx, sy = shapes.input_shapes
    c = rng.random(sc) < 0.5
    x, y = rng.standard_normal(sx), rng.standard_normal(sy)
    u = rng.standard_normal(shapes.result_shape)
    tx, ty = itn.tensor(x, requires_grad=True), itn.tensor(y, requires_grad=True)
    out = itn.where(itn.tensor(c), tx, ty)
    np.testing.assert_array_equal(out.data, _vec(lambda ci, xi, yi: xi if ci else yi)(c, x, y))
    out.backward(u)
    _close(tx.grad.data, _reduce_to(np.where(c, u, 0.0), sx))
    _close(ty.grad.data, _reduce_to(np.where(c, 0.0, u), sy))
    f = lambda a, b: itn.where(c, a, b)
    assert itn.gradcheck(f, [x, y]) and itn.gradgradcheck(f, [x, y])


@pytest.mark.parametrize("bounds", [(-0.5, 0.5), (None, 0.5), (-0.5, None), (0.5, -0.5)])
@given(shape=small_shapes, seed=st.integers(0, 2**32 - 1))
def test_clip_with_constant_bounds(bounds, shape, seed):
    lo, hi = bounds
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, shape)
    u = rng.standard_normal(shape)
    t = itn.tensor(x, requires_grad=True)
    out = itn.clip(t, lo, hi)
    low = -np.inf if lo is None else lo
    high = np.inf if hi is None else hi
    expect = _vec(lambda v: min(max(v, low), high))(x)
    np.testing.assert_array_equal(out.data, expect)
    out.backward(u)
    np.testing.assert_array_equal(t.grad.data, np.where((x >= low) & (x <= high), u, 0.0))
    f = lambda a: itn.clip(a, lo, hi)
    assert itn.gradcheck(f, [x]) and itn.gradgradcheck(f, [x])


def test_clip_ties_pass_the_gradient_to_x():
    t = itn.tensor(np.array([-1.0, 0.0, 1.0, 2.0]), requires_grad=True)
    itn.sum(itn.clip(t, -1.0, 1.0)).backward()
    np.testing.assert_array_equal(t.grad.data, [1.0, 1.0, 1.0, 0.0])


@given(shapes=broadcastable_shapes(3), seed=st.integers(0, 2**32 - 1))
def test_clip_with_tensor_bounds(shapes, seed):
    rng = np.random.default_rng(seed)
    sx, sl, sh = shapes.input_shapes
    x = rng.uniform(-2, 2, sx)
    lo, hi = rng.uniform(-1, 0, sl), rng.uniform(0.1, 1, sh)
    u = rng.standard_normal(shapes.result_shape)
    ts = [itn.tensor(a, requires_grad=True) for a in (x, lo, hi)]
    out = itn.clip(*ts)
    np.testing.assert_array_equal(out.data, np.minimum(np.maximum(x, lo), hi))
    out.backward(u)
    xb = np.broadcast_to(x, u.shape)
    _close(ts[0].grad.data, _reduce_to(np.where((xb >= lo) & (xb <= hi), u, 0), sx))
    _close(ts[1].grad.data, _reduce_to(np.where(xb < lo, u, 0), sl))
    _close(ts[2].grad.data, _reduce_to(np.where(xb > hi, u, 0), sh))
    assert itn.gradcheck(itn.clip, [x, lo, hi]) and itn.gradgradcheck(itn.clip, [x, lo, hi])


def test_clip_with_crossed_tensor_bounds_matches_numpy():
    # lo > hi: NumPy returns hi everywhere, so only hi receives gradient.
    ts = [itn.tensor(np.array(v), requires_grad=True) for v in ([-1.0, 0.0, 3.0], [1.0, 1.0, 1.0],
                                                                 [0.0, 0.0, 0.0])]
    out = itn.clip(*ts)
    np.testing.assert_array_equal(out.data, np.clip(*[t.data for t in ts]))
    itn.sum(out).backward()
    np.testing.assert_array_equal(ts[0].grad.data, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(ts[1].grad.data, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(ts[2].grad.data, [1.0, 1.0, 1.0])


def _unary_of(op):
    return lambda a, b: op(a)


def _float32_cases():
    cases = [(name, _unary_of(v[0])) for name, v in UNARY.items()]
    cases += [(name, v[0]) for name, v in BINARY.items()]
    cases += [("where", lambda a, b: itn.where(a > b, a, b)), ("clip", lambda a, b: itn.clip(a, 0.7, b))]
    return cases


@pytest.mark.parametrize("name,f", _float32_cases(), ids=[c[0] for c in _float32_cases()])
def test_float32_stays_float32(name, f):
    x = np.array([0.5, 1.0, 2.0], dtype=np.float32)
    y = np.array([1.5, 0.5, 2.5], dtype=np.float32)
    tx, ty = itn.tensor(x, requires_grad=True), itn.tensor(y, requires_grad=True)
    out = f(tx, ty)
    assert out.dtype == np.float32
    itn.sum(out).backward()
    for t in (tx, ty):
        assert t.grad is None or t.grad.dtype == np.float32


def test_expm1_is_accurate_where_exp_minus_one_cancels():
    x = np.array([1e-12, -3e-9, 1e-5])
    np.testing.assert_allclose(itn.expm1(itn.tensor(x)).data, [math.expm1(v) for v in x], rtol=1e-15)
    t = itn.tensor(x, requires_grad=True)
    itn.sum(itn.expm1(t)).backward()
    np.testing.assert_allclose(t.grad.data, np.exp(x), rtol=1e-15)


def test_arctan2_covers_all_four_quadrants():
    y, x = np.array([1.0, 1.0, -1.0, -1.0, 0.0]), np.array([1.0, -1.0, -1.0, 1.0, -2.0])
    np.testing.assert_allclose(itn.arctan2(itn.tensor(y), itn.tensor(x)).data,
                               [math.pi / 4, 3 * math.pi / 4, -3 * math.pi / 4, -math.pi / 4, math.pi],
                               rtol=1e-15)
