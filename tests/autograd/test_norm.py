"""std and norm: forwards against NumPy (np.std, np.linalg.norm and the p-norm formula by loops),
gradients against their closed forms, the subgradient 0 where std or the norm vanishes (not NaN),
gradcheck / gradgradcheck, float32 and the errors."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import shape_and_axis

import itnet_np as itn
from itnet_np.errors import ConfigError


def _axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    return tuple(sorted(a % ndim for a in ((axis,) if isinstance(axis, int) else axis)))


def _expand(a, axis, ndim, keepdims):
    return np.asarray(a) if keepdims else np.expand_dims(a, _axes(axis, ndim))


def _close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-11, atol=1e-13)


# ----- std -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ddof", [0, 1])
@given(sak=shape_and_axis(), seed=st.integers(0, 2**32 - 1))
def test_std_forward_and_gradient(ddof, sak, seed):
    shape, axis, keepdims = sak
    n = int(np.prod([shape[a] for a in _axes(axis, len(shape))]))
    if n <= ddof:
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    t = itn.tensor(x, requires_grad=True)
    out = itn.std(t, axis=axis, keepdims=keepdims, ddof=ddof)
    expect = np.std(x, axis=axis, keepdims=keepdims, ddof=ddof)
    assert out.shape == np.shape(expect)
    _close(out.data, expect)
    u = np.asarray(rng.standard_normal(out.shape))
    out.backward(u)
    if n == 1:  # std of one value is 0: the subgradient 0, not 0/0
        np.testing.assert_array_equal(t.grad.data, 0.0)
        return
    # d std = d sqrt(var) = d var / (2 std), d var = 2 (x - mean) / (n - ddof)
    s = np.std(x, axis=axis, keepdims=True, ddof=ddof)
    want = _expand(u, axis, len(shape), keepdims) * (x - x.mean(axis=axis, keepdims=True)) / ((n - ddof) * s)
    _close(t.grad.data, want)
    f = lambda a: itn.std(a, axis=axis, keepdims=keepdims, ddof=ddof)
    assert itn.gradcheck(f, [x], seed=seed % 1000) and itn.gradgradcheck(f, [x], seed=seed % 1000)


def test_std_of_a_constant_slice_has_zero_gradient():
    x = np.array([[2.0, 2.0, 2.0], [1.0, 2.0, 4.0]])
    t = itn.tensor(x, requires_grad=True)
    itn.std(t, axis=1, ddof=1).backward(np.array([1.0, 1.0]))
    assert np.all(np.isfinite(t.grad.data))
    np.testing.assert_array_equal(t.grad.data[0], 0.0)
    c = x[1] - x[1].mean()
    _close(t.grad.data[1], c / (2 * np.std(x[1], ddof=1)))


# ----- norm ------------------------------------------------------------------------------------------
def _pnorm_loops(x, p, axes):
    """(sum |x|^p)^(1/p), max |x| or min |x| over ``axes`` by an explicit loop per output."""
    rest = [a for a in range(x.ndim) if a not in axes]
    moved = np.transpose(x, rest + list(axes)).reshape([x.shape[a] for a in rest] + [-1])
    out = np.empty(moved.shape[:-1])
    for pos in np.ndindex(*out.shape):
        vals = [abs(v) for v in moved[pos]]
        if p == math.inf:
            out[pos] = max(vals)
        elif p == -math.inf:
            out[pos] = min(vals)
        else:
            out[pos] = sum(v ** p for v in vals) ** (1 / p)
    return out


ORDS = [1, 2, 3, 1.5, math.inf, -math.inf, "fro", None]


@pytest.mark.parametrize("ord", ORDS)
@given(sak=shape_and_axis(), seed=st.integers(0, 2**32 - 1))
def test_norm_forward_and_gradient(ord, sak, seed):
    shape, axis, keepdims = sak
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    p = 2 if ord in ("fro", None) else ord
    axes = _axes(axis, len(shape))
    t = itn.tensor(x, requires_grad=True)
    out = itn.norm(t, ord=ord, axis=axis, keepdims=keepdims)
    expect = _pnorm_loops(x, p, axes)
    expect = np.expand_dims(expect, axes) if keepdims else expect
    assert out.shape == np.shape(expect)
    _close(out.data, expect)
    if p == 2 and len(axes) == 1:
        _close(out.data, np.linalg.norm(x, axis=axes[0], keepdims=keepdims))
    u = np.asarray(rng.standard_normal(out.shape))
    out.backward(u)
    nk = _expand(out.data, axis, len(shape), keepdims)
    uk = _expand(u, axis, len(shape), keepdims)
    if abs(p) == math.inf:   # continuous draws: one extreme per slice gets the whole cotangent
        want = np.where(np.abs(x) == nk, uk * np.sign(x), 0.0)
    else:                    # sign(x) |x|^(p-1) / ||x||^(p-1)
        want = uk * np.sign(x) * np.abs(x) ** (p - 1) / nk ** (p - 1)
    _close(t.grad.data, want)
    f = lambda a: itn.norm(a, ord=ord, axis=axis, keepdims=keepdims)
    assert itn.gradcheck(f, [x], seed=seed % 1000) and itn.gradgradcheck(f, [x], seed=seed % 1000)


@pytest.mark.parametrize("ord", ORDS)
def test_norm_gradient_at_zero_is_zero_not_nan(ord):
    x = np.array([[0.0, 0.0, 0.0], [3.0, 0.0, -4.0]])
    t = itn.tensor(x, requires_grad=True)
    itn.norm(t, ord=ord, axis=1).backward(np.array([1.0, 1.0]))
    np.testing.assert_array_equal(t.grad.data[0], 0.0)
    assert np.all(np.isfinite(t.grad.data))


def test_norm_inf_splits_ties_evenly():
    t = itn.tensor(np.array([3.0, -3.0, 1.0]), requires_grad=True)
    itn.norm(t, ord=math.inf).backward()
    _close(t.grad.data, [0.5, -0.5, 0.0])


def test_norm_errors_and_float32():
    for bad in (0, 0.5, -1, "nuc", True, math.nan, [2]):
        with pytest.raises(ConfigError, match="norm: ord must be"):
            itn.norm(np.ones(3), ord=bad)
    x = itn.tensor(np.array([[0.5, -1.0], [2.0, 0.0]], np.float32), requires_grad=True)
    for ord in ORDS:
        for axis in (None, 1):
            out = itn.norm(x, ord=ord, axis=axis)
            assert out.dtype == np.float32
            x.grad = None
            itn.sum(out).backward()
            assert x.grad.dtype == np.float32
    s = itn.std(x, axis=0, ddof=1)
    assert s.dtype == np.float32
    x.grad = None
    itn.sum(s).backward()
    assert x.grad.dtype == np.float32
    # 0-d results (axis=None) on NumPy < 2 promoted float32 with Python numbers to float64.
    for f in (lambda a: itn.norm(a, ord=3), lambda a: itn.std(a, ddof=1), lambda a: itn.norm(a)):
        x.grad = None
        out = f(x)
        out.backward()
        assert out.dtype == x.grad.dtype == np.float32
