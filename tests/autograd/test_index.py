"""Indexing: getitem for every NumPy index kind, its adjoint index_put, and scatter_add.

The oracle for every gradient is a loop: index ``arange(x.size).reshape(x.shape)`` with the same
index to learn which element of x each output element copies, then add g there one element at a
time. It never calls np.add.at or the scatter under test, and repeated indices must accumulate.
"""
import weakref

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import itnet_np as itn
from tests.strategies import arrays, nonempty_shapes

TOL = {"rtol": 1e-10, "atol": 1e-10}
STEPS = st.none() | st.sampled_from([-3, -2, -1, 1, 2, 3])


def loop_index_grad(x, index, g):
    """d/dx sum(g * x[index]) by an explicit loop over output elements."""
    source = np.arange(x.size).reshape(x.shape)[index]
    grad = np.zeros(x.size)
    for flat, gv in zip(np.ravel(source), np.ravel(g)):
        grad[flat] += gv
    return grad.reshape(x.shape)


def check_index(x, index, second=True):
    """Forward vs NumPy, gradient vs the loop, gradcheck and gradgradcheck, for x[index]."""
    want = x[index]
    y = itn.getitem(itn.tensor(x), index)
    assert isinstance(y.data, np.ndarray)
    np.testing.assert_array_equal(y.numpy(), want)
    t = itn.tensor(x, requires_grad=True)
    g = np.random.default_rng(0).standard_normal(np.shape(want))
    t[index].backward(g)
    np.testing.assert_allclose(t.grad.numpy(), loop_index_grad(x, index, g), **TOL)
    assert itn.gradcheck(lambda a: a[index], [x])
    if second:
        assert itn.gradgradcheck(lambda a: a[index], [x])


@st.composite
def basic_indices(draw, shape):
    """ints (negative too), slices with any start/stop/step (negative steps), then None and Ellipsis."""
    parts = []
    for n in shape:
        kind = draw(st.sampled_from(["int", "slice", "all"]))
        if kind == "int":
            parts.append(draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            ends = st.none() | st.integers(-n - 2, n + 2)
            parts.append(slice(draw(ends), draw(ends), draw(STEPS)))
        else:
            parts.append(slice(None))
    if draw(st.booleans()):  # an Ellipsis standing for a run of axes i..j-1 (maybe none)
        i = draw(st.integers(0, len(parts)))
        j = draw(st.integers(i, len(parts)))
        parts = parts[:i] + [Ellipsis] + parts[j:]
    else:  # trailing axes may be left implicit
        parts = parts[:draw(st.integers(0, len(parts)))]
    for _ in range(draw(st.integers(0, 2))):
        parts.insert(draw(st.integers(0, len(parts))), None)
    return tuple(parts)


@given(st.data())
def test_basic_indices(data):
    x = data.draw(arrays(data.draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=5))))
    check_index(x, data.draw(basic_indices(x.shape)))


@st.composite
def advanced_indices(draw):
    """(x, index): integer arrays (repeats likely) mixed with ints, slices and None, in any position."""
    x = draw(arrays(draw(nonempty_shapes)))
    common = draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=4))
    parts, n_arrays = [], 0
    for n in x.shape:
        kind = draw(st.sampled_from(["array", "array", "slice", "int"]))
        if kind == "array":
            # sometimes a broadcastable (1, ...) shape instead of the common one
            shape = common if draw(st.booleans()) else (1,) * len(common)
            parts.append(draw(hnp.arrays(np.intp, shape, elements=st.integers(-n, n - 1))))
            n_arrays += 1
        elif kind == "slice":
            parts.append(slice(None, None, draw(STEPS)))
        else:
            parts.append(draw(st.integers(-n, n - 1)))
    if n_arrays == 0:
        parts[0] = draw(hnp.arrays(np.intp, common, elements=st.integers(-x.shape[0], x.shape[0] - 1)))
    if draw(st.booleans()):
        parts.insert(draw(st.integers(0, len(parts))), None)
    return x, tuple(parts)


@given(advanced_indices())
def test_advanced_indices(xi):
    check_index(*xi)


def test_repeated_indices_accumulate():
    x = np.arange(12.0).reshape(3, 4)
    for index in [np.array([1, 1, 1, 0]), ([2, 2, -1], [0, 0, 3]), (slice(None), [3, 3, 0, 3]),
                  (np.array([[0, 0], [0, 2]]), slice(None, None, -1)), (0, [1, 1, 1, 1])]:
        check_index(x, index)
    t = itn.tensor(np.zeros(3), requires_grad=True)
    t[[1, 1, 1, 2]].backward(np.array([1.0, 2.0, 4.0, 8.0]))
    np.testing.assert_array_equal(t.grad.numpy(), [0.0, 7.0, 8.0])


@given(st.data())
def test_boolean_masks(data):
    x = data.draw(arrays(data.draw(nonempty_shapes)))
    k = data.draw(st.integers(1, x.ndim))
    mask = data.draw(hnp.arrays(bool, x.shape[:k]))
    tail = tuple(slice(None, None, data.draw(STEPS)) for _ in range(x.ndim - k))
    check_index(x, mask)
    check_index(x, (mask,) + tail)
    if x.ndim > 1:  # a mask after a slice, and a mask next to an integer array
        inner = data.draw(hnp.arrays(bool, x.shape[1:2]))
        check_index(x, (slice(None, None, -1), inner))
        rows = np.resize(np.array([0, -1, 0], np.intp), int(inner.sum()))  # one row per True, repeats
        check_index(x, (rows, inner))


def test_index_kinds_from_python_and_tensors():
    x = np.arange(24.0).reshape(2, 3, 4)
    check_index(x, (Ellipsis, None, 1))
    check_index(x, (None, Ellipsis, slice(None, None, -2), None))
    check_index(x, (1, Ellipsis, None))
    check_index(x, (True,))
    t = itn.tensor(x, requires_grad=True)
    for index, as_numpy in [
        ([1, 1, 0], np.array([1, 1, 0])),                                   # list
        ([[0, 1], [1, 1]], np.array([[0, 1], [1, 1]])),                     # nested list
        ([], np.array([], dtype=np.intp)),                                  # empty list
        ((slice(None), [2, 0, 2]), (slice(None), np.array([2, 0, 2]))),      # list in a tuple
        ([True, False], np.array([True, False])),                            # bool list
        (itn.tensor(np.array([1, 0, 1])), np.array([1, 0, 1])),              # Tensor index
        ((0, itn.tensor(np.array([2, 2]))), (0, np.array([2, 2]))),          # Tensor in a tuple
        (t > 10.0, x > 10.0),                                                # bool Tensor
        ((np.int64(1), np.intp(-1)), (1, -1)),                               # NumPy integers
    ]:
        np.testing.assert_array_equal(t[index].numpy(), x[as_numpy])
        t.grad = None
        g = np.random.default_rng(0).standard_normal(x[as_numpy].shape)
        t[index].backward(g)
        np.testing.assert_allclose(t.grad.numpy(), loop_index_grad(x, as_numpy, g), **TOL)


def test_full_integer_index_gives_array():
    y = itn.tensor(np.arange(6.0).reshape(2, 3))[1, -1]
    assert isinstance(y.data, np.ndarray) and y.shape == () and y.item() == 5.0
    assert isinstance(itn.tensor(np.array(2.0))[()].data, np.ndarray)


def test_index_put_is_the_adjoint():
    # <x[index], g> == <x, index_put(g, shape, index)> for random x and g.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 3))
    index = (np.array([0, 3, 3, 3, -4]), slice(None, None, -1))
    g = rng.standard_normal(x[index].shape)
    lhs = np.sum(x[index] * g)
    rhs = np.sum(x * itn.index_put(g, x.shape, index))
    np.testing.assert_allclose(lhs, rhs, **TOL)
    assert itn.gradgradcheck(lambda a: itn.index_put(a, (4, 3), index), [g])


# ----- scatter_add ------------------------------------------------------------------------------
def loop_scatter_add(target, indices, values):
    """target + values added one element at a time at the positions named by indices."""
    out = target.astype(float).copy()
    source = np.arange(target.size).reshape(target.shape)[indices]
    vals = np.broadcast_to(values, source.shape)
    for flat, v in zip(source.ravel(), vals.ravel()):
        out.flat[flat] += v
    return out


@st.composite
def scatter_cases(draw):
    target = draw(arrays(draw(nonempty_shapes)))
    k = draw(st.integers(1, target.ndim))
    ishape = draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=5))
    idx = tuple(draw(hnp.arrays(np.intp, ishape, elements=st.integers(-n, n - 1))) for n in target.shape[:k])
    indices = idx[0] if k == 1 and draw(st.booleans()) else idx
    full = target[indices].shape
    vshape = full if draw(st.booleans()) else tuple(1 if draw(st.booleans()) else s for s in full)[
        draw(st.integers(0, len(full))):]
    return target, indices, draw(arrays(vshape))


@given(scatter_cases())
def test_scatter_add(case):
    target, indices, values = case
    before = (target.copy(), values.copy())
    out = itn.scatter_add(itn.tensor(target), indices, itn.tensor(values))
    np.testing.assert_allclose(out.numpy(), loop_scatter_add(target, indices, values), **TOL)
    np.testing.assert_array_equal(target, before[0])
    np.testing.assert_array_equal(values, before[1])
    f = lambda t, v: itn.scatter_add(t, indices, v)
    assert itn.gradcheck(f, [target, values])
    assert itn.gradgradcheck(f, [target, values])
    # d values = g gathered at the indices (summed over broadcast axes of values)
    g = np.random.default_rng(0).standard_normal(target.shape)
    t, v = itn.tensor(target, requires_grad=True), itn.tensor(values, requires_grad=True)
    itn.scatter_add(t, indices, v).backward(g)
    np.testing.assert_array_equal(t.grad.numpy(), g)
    gathered = np.ravel(g)[np.arange(target.size).reshape(target.shape)[indices]]
    lead = gathered.ndim - values.ndim
    want_v = gathered.sum(axis=tuple(range(lead)) + tuple(
        lead + i for i, s in enumerate(values.shape) if s == 1 and gathered.shape[lead + i] != 1))
    np.testing.assert_allclose(v.grad.numpy(), want_v.reshape(values.shape), **TOL)
    assert not np.shares_memory(t.grad.data, g) and not np.shares_memory(v.grad.data, g)


def test_scatter_add_repeats_and_mixed_index():
    target = np.zeros((2, 3))
    out = itn.scatter_add(target, (np.array([1, 1, 0]), np.array([2, 2, 2])), np.array([1.0, 2.0, 4.0]))
    np.testing.assert_array_equal(out, [[0, 0, 4.0], [0, 0, 3.0]])
    out = itn.scatter_add(target, (slice(None), np.array([0, 0])), np.array([[1.0, 2.0], [3.0, 4.0]]))
    np.testing.assert_array_equal(out, [[3.0, 0, 0], [7.0, 0, 0]])
    assert not target.any()
    # values broadcast against a 2-D index into a 1-D target (np.add.at alone gets this wrong in
    # NumPy 2.4: [1, 2, 0] instead of [2, 4, 0])
    out = itn.scatter_add(np.zeros(3), np.array([[0, 1], [0, 1]]), np.array([1.0, 2.0]))
    np.testing.assert_array_equal(out, [2.0, 4.0, 0.0])
    out = itn.scatter_add(np.zeros(3, np.float32), [2, 2], 1.5)  # a Python scalar takes target's dtype
    assert out.dtype == np.float32 and out.tolist() == [0.0, 0.0, 3.0]


def test_scatter_add_errors():
    with pytest.raises(itn.ShapeError, match=r"scatter_add.*\(3,\).*\(2,\)"):
        itn.scatter_add(np.zeros(4), np.array([0, 1]), np.ones(3))
    with pytest.raises(itn.DTypeError):
        itn.scatter_add(itn.tensor(np.zeros(4)), np.array([0]), itn.tensor(np.ones(1, np.float32)))


# ----- invariants -------------------------------------------------------------------------------
@pytest.mark.parametrize("index", [
    (slice(None, None, -1), 1), (np.array([0, 0, 1]),), (np.array([[True, False, True], [False, True, True]]),),
    (Ellipsis, None, [2, 2]),
])
def test_invariants(index):
    x = np.arange(6.0).reshape(2, 3)
    before = x.copy()
    t = itn.tensor(x, requires_grad=True)
    out = t[index]
    u = np.random.default_rng(0).standard_normal(out.shape)
    u_before = u.copy()
    out.backward(u)
    np.testing.assert_array_equal(x, before)
    np.testing.assert_array_equal(u, u_before)
    assert not np.shares_memory(t.grad.data, u) and not np.shares_memory(t.grad.data, x)
    # two reads of one tensor: one gradient, accumulated, aliasing neither upstream gradient
    a = itn.tensor(x, requires_grad=True)
    b = itn.tensor(x + 1.0, requires_grad=True)
    y = a[index] * b[index]
    y.backward(u)
    assert not np.shares_memory(a.grad.data, b.grad.data)
    # the graph is freed once backward has used it
    mid = t * 2.0
    ref = weakref.ref(mid)
    out = mid[index]
    node = out.node
    del mid
    out.backward(u)
    assert node.inputs is None and ref() is None
