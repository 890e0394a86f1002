"""argmax / argmin / sort / topk: positions against NumPy and against Python's (stable) sorted(),
values and their gradients against explicit loops (each value's cotangent lands on the element
it came from), gradcheck / gradgradcheck, ties, NaN, float32 and the errors."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from strategies import nonempty_shapes

import itnet_np as itn
from itnet_np.errors import ConfigError, ShapeError


@st.composite
def shape_axis_values(draw, min_dims=1):
    """(shape, one axis, x) with many ties: values drawn from a small set."""
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=3, min_side=1, max_side=5))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    x = draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([-1.5, 0.0, 0.5, 2.0, 3.25])))
    return shape, axis, x


def _lines(x, axis):
    """Every 1-D slice along ``axis``: (index tuple with a slice at axis, the slice)."""
    moved = np.moveaxis(x, axis, -1)
    for pos in np.ndindex(*moved.shape[:-1]):
        yield pos, moved[pos]


def _stable_order(line, descending):
    """sorted() is stable; for descending, sort by the negated key to keep ties in their order."""
    return sorted(range(len(line)), key=lambda i: -line[i] if descending else line[i])


# ----- argmax / argmin ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["argmax", "argmin"])
@given(case=shape_axis_values(), keepdims=st.booleans(), flat=st.booleans())
def test_arg_extremes_match_numpy(name, case, keepdims, flat):
    _, axis, x = case
    axis = None if flat else axis
    t = itn.tensor(x, requires_grad=True)
    out = getattr(itn, name)(t, axis=axis, keepdims=keepdims)
    expect = getattr(np, name)(x, axis=axis, keepdims=keepdims)
    assert out.dtype.kind == "i" and not out.requires_grad and out.shape == np.shape(expect)
    np.testing.assert_array_equal(out.data, expect)
    # The first extreme wins: check against an explicit scan for the flat case.
    if axis is None and not keepdims:
        best = 0
        for i, v in enumerate(x.ravel()):
            if (v > x.ravel()[best]) if name == "argmax" else (v < x.ravel()[best]):
                best = i
        assert int(out.item()) == best
    raw = getattr(itn, name)(x, axis=axis, keepdims=keepdims)
    assert isinstance(raw, np.ndarray)


def test_arg_extremes_nan_and_errors():
    x = np.array([1.0, np.nan, 3.0, np.nan])
    assert itn.argmax(itn.tensor(x)).item() == 1 and itn.argmin(x) == 1   # NaN propagates (NumPy, torch)
    with pytest.raises(ShapeError, match="argmax: the reduced axis 1 of shape \\(2, 0\\) is empty"):
        itn.argmax(np.zeros((2, 0)), axis=1)
    with pytest.raises(ShapeError, match="argmin: axis 2 is out of range"):
        itn.argmin(np.zeros((2, 3)), axis=2)
    with pytest.raises(ConfigError, match="axis must be an int"):
        itn.argmax(np.zeros((2, 3)), axis=(0, 1))


# ----- sort -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("descending", [False, True])
@given(case=shape_axis_values(), seed=st.integers(0, 2**16))
def test_sort_matches_stable_sorted_and_scatters_gradient(descending, case, seed):
    _, axis, x = case
    t = itn.tensor(x, requires_grad=True)
    values, indices = itn.sort(t, axis=axis, descending=descending)
    u = np.random.default_rng(seed).standard_normal(x.shape)
    values.backward(u)
    ax = axis % x.ndim
    expect_grad = np.zeros_like(x)
    for (pos, line), (_, uline) in zip(_lines(x, ax), _lines(u, ax)):
        order = _stable_order(line, descending)
        np.testing.assert_array_equal(np.moveaxis(indices.data, ax, -1)[pos], order)
        np.testing.assert_array_equal(np.moveaxis(values.data, ax, -1)[pos], line[order])
        for j, i in enumerate(order):          # value j came from element i
            np.moveaxis(expect_grad, ax, -1)[pos][i] += uline[j]
    np.testing.assert_array_equal(t.grad.data, expect_grad)
    if not descending:
        np.testing.assert_array_equal(values.data, np.sort(x, axis=axis))


def test_sort_gradcheck_gradgradcheck_and_raw_arrays():
    x = np.random.default_rng(1).standard_normal((3, 4, 2))
    for axis in (0, 1, -1):
        for descending in (False, True):
            f = lambda a, axis=axis, descending=descending: itn.sort(a, axis=axis, descending=descending).values
            assert itn.gradcheck(f, [x]) and itn.gradgradcheck(f, [x])
    values, indices = itn.sort(x, axis=1)
    assert isinstance(values, np.ndarray) and isinstance(indices, np.ndarray)
    np.testing.assert_array_equal(np.take_along_axis(x, indices, 1), values)


def test_sort_nan_is_largest():
    x = np.array([2.0, np.nan, -1.0])
    np.testing.assert_array_equal(itn.sort(x).indices, [2, 0, 1])
    np.testing.assert_array_equal(itn.sort(x, descending=True).indices, [1, 0, 2])


# ----- topk ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("largest", [True, False])
@given(case=shape_axis_values(), seed=st.integers(0, 2**16), data=st.data())
def test_topk_matches_loops(largest, case, seed, data):
    shape, axis, x = case
    ax = axis % x.ndim
    k = data.draw(st.integers(0, shape[ax]))
    t = itn.tensor(x, requires_grad=True)
    values, indices = itn.topk(t, k, axis=axis, largest=largest)
    assert values.shape == indices.shape == shape[:ax] + (k,) + shape[ax + 1:]
    u = np.random.default_rng(seed).standard_normal(values.shape)
    itn.sum(values * u).backward()
    expect_grad = np.zeros_like(x)
    for (pos, line), (_, uline) in zip(_lines(x, ax), _lines(u, ax)):
        order = _stable_order(line, largest)[:k]
        np.testing.assert_array_equal(np.moveaxis(indices.data, ax, -1)[pos], order)
        np.testing.assert_array_equal(np.moveaxis(values.data, ax, -1)[pos], line[order])
        np.moveaxis(expect_grad, ax, -1)[pos][order] += uline
    np.testing.assert_array_equal(t.grad.data, expect_grad)


def test_topk_gradcheck_gradgradcheck():
    x = np.random.default_rng(2).standard_normal((4, 5))
    for k, axis, largest in [(2, 1, True), (3, 0, False), (5, -1, True)]:
        f = lambda a, k=k, axis=axis, largest=largest: itn.topk(a, k, axis=axis, largest=largest).values
        assert itn.gradcheck(f, [x]) and itn.gradgradcheck(f, [x])


def test_sort_and_topk_errors():
    x = np.zeros((2, 3))
    for k in (-1, 4, 1.5, True):
        with pytest.raises(ConfigError, match=r"topk: k must be an int in \[0, 3\]"):
            itn.topk(x, k)
    with pytest.raises(ShapeError, match="at least 1 dimension"):
        itn.sort(np.array(1.0))
    with pytest.raises(ShapeError, match="sort: axis 2 is out of range"):
        itn.sort(x, axis=2)
    with pytest.raises(ConfigError, match="axis must be an int"):
        itn.topk(x, 1, axis=None)


@given(shape=nonempty_shapes)
def test_float32_stays_float32(shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    t = itn.tensor(x, requires_grad=True)
    values = itn.sort(t, axis=0).values
    top = itn.topk(t, 1, axis=-1).values
    assert values.dtype == top.dtype == np.float32
    itn.sum(values).backward()
    assert t.grad.dtype == np.float32
