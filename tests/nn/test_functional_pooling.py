"""max_pool / avg_pool / adaptive_avg_pool (1-D and 2-D): forwards and gradients against explicit
loops over output positions and window taps written from torch's formulas, gradcheck and
gradgradcheck, unbatched input, float32 and the errors."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import itnet_np as itn
import itnet_np.nn.functional as F
from itnet_np.errors import ConfigError, DTypeError, ShapeError


def pool_loops(x, kernel, stride, padding, kind, count_include_pad=True):
    """Output and d(sum(out * u))/dx by loops: windows W_i = {s i - p + a, a < k} per axis.

    max: the first maximum in row-major tap order gets the cotangent (torch); padding is -inf.
    avg: the window mean, dividing by prod(k) or by the taps inside the input.
    Returns (out, grad_fn(u)).
    """
    nd = len(kernel)
    sizes = x.shape[2:]
    out_sizes = tuple((sizes[d] + 2 * padding[d] - kernel[d]) // stride[d] + 1 for d in range(nd))
    out = np.zeros(x.shape[:2] + out_sizes)
    picks = {}
    for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        for i in itertools.product(*(range(o) for o in out_sizes)):
            best, best_at, total, inside = -math.inf, None, 0.0, []
            for a in itertools.product(*(range(k) for k in kernel)):
                pos = tuple(stride[d] * i[d] - padding[d] + a[d] for d in range(nd))
                if all(0 <= pos[d] < sizes[d] for d in range(nd)):
                    v = x[(n, c) + pos]
                    inside.append(pos)
                    total += v
                    if v > best:
                        best, best_at = v, pos
            if kind == "max":
                out[(n, c) + i] = best
                picks[(n, c) + i] = [((n, c) + best_at, 1.0)]
            else:
                div = math.prod(kernel) if count_include_pad else len(inside)
                out[(n, c) + i] = total / div
                picks[(n, c) + i] = [((n, c) + pos, 1.0 / div) for pos in inside]

    def grad(u):
        g = np.zeros_like(x)
        for o, targets in picks.items():
            for pos, w in targets:
                g[pos] += w * u[o]
        return g
    return out, grad


@st.composite
def pool_case(draw, nd):
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    sizes = tuple(draw(st.integers(max(1, k - 2 * p), 6)) for k, p in zip(kernel, padding))
    n, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    seed = draw(st.integers(0, 2**16))
    # A few repeated values make ties inside windows; the first maximum must win.
    x = np.random.default_rng(seed).choice([-1.0, 0.5, 2.0, 0.25, -3.0, 1.5], (n, c) + sizes)
    x = x + draw(st.sampled_from([0.0, 1.0])) * np.random.default_rng(seed + 1).standard_normal(x.shape)
    return x, kernel, stride, padding, seed


FUNCTIONS = {(1, "max"): F.max_pool1d, (2, "max"): F.max_pool2d, (1, "avg"): F.avg_pool1d,
             (2, "avg"): F.avg_pool2d}


@pytest.mark.parametrize("nd,kind,count_include_pad", [(1, "max", True), (2, "max", True), (1, "avg", True),
                                                       (2, "avg", True), (1, "avg", False), (2, "avg", False)])
@given(data=st.data())
def test_pooling_matches_loops(nd, kind, count_include_pad, data):
    x, kernel, stride, padding, seed = data.draw(pool_case(nd))
    extra = {} if kind == "max" else {"count_include_pad": count_include_pad}
    want, grad = pool_loops(x, kernel, stride, padding, kind, count_include_pad)
    t = itn.tensor(x, requires_grad=True)
    out = FUNCTIONS[nd, kind](t, kernel, stride, padding, **extra)
    assert out.shape == want.shape
    np.testing.assert_allclose(out.data, want, rtol=1e-13, atol=1e-14)
    u = np.random.default_rng(seed + 2).standard_normal(want.shape)
    out.backward(u)
    np.testing.assert_allclose(t.grad.data, grad(u), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("call", [
    lambda a: F.max_pool1d(a, 3, 2, 1), lambda a: F.avg_pool1d(a, 3, 1, 1, count_include_pad=False),
    lambda a: F.max_pool2d(a.reshape(2, 3, 2, 2), (2, 1), 1, (1, 0)),
    lambda a: F.avg_pool2d(a.reshape(2, 3, 2, 2), 2, 1, 1, count_include_pad=False),
    lambda a: F.adaptive_avg_pool1d(a, 3), lambda a: F.adaptive_avg_pool2d(a.reshape(2, 3, 2, 2), (3, 1))])
def test_gradcheck_and_gradgradcheck(call):
    x = np.random.default_rng(3).standard_normal((2, 3, 4))
    assert itn.gradcheck(call, [x]) and itn.gradgradcheck(call, [x])


def test_max_pool_padding_under_detect_anomaly_and_all_minus_inf_windows():
    x = itn.tensor(np.random.default_rng(6).standard_normal((1, 2, 5, 4)), requires_grad=True)
    with itn.detect_anomaly():   # the -inf padding never passes through a recorded op
        itn.sum(F.max_pool2d(x, 3, 2, 1)).backward()
    assert np.all(np.isfinite(x.grad.data))
    # Windows [pad, x0], [x1, x2], [x3, pad]: the first holds only -inf inputs; its gradient goes to x0.
    t = itn.tensor(np.array([[[-np.inf, -np.inf, 1.0, 2.0]]]), requires_grad=True)
    y = F.max_pool1d(t, 2, 2, 1)
    np.testing.assert_array_equal(y.data, [[[-np.inf, 1.0, 2.0]]])
    y.backward(np.array([[[5.0, 6.0, 7.0]]]))
    np.testing.assert_array_equal(t.grad.data, [[[5.0, 0.0, 6.0, 7.0]]])


def adaptive_loops(x, out_sizes):
    """out[..., i, j] = mean of x over rows [floor(i H / oH), ceil((i+1) H / oH)) and the same for columns."""
    sizes = x.shape[2:]
    bins = [[(i * n // o, -(-(i + 1) * n // o)) for i in range(o)] for n, o in zip(sizes, out_sizes)]
    out = np.zeros(x.shape[:2] + tuple(out_sizes))
    weights = np.zeros(tuple(out_sizes) + sizes)       # d out[i] / d x[pos], the same for every (n, c)
    for i in itertools.product(*(range(o) for o in out_sizes)):
        box = tuple(slice(*bins[d][i[d]]) for d in range(len(sizes)))
        out[(slice(None), slice(None)) + i] = x[(slice(None), slice(None)) + box].mean(
            axis=tuple(range(2, x.ndim)))
        count = math.prod(b.stop - b.start for b in box)
        weights[i + box] = 1.0 / count
    return out, weights


@pytest.mark.parametrize("nd", [1, 2])
@given(data=st.data())
def test_adaptive_avg_pool_matches_bin_formula(nd, data):
    sizes = tuple(data.draw(st.integers(1, 7)) for _ in range(nd))
    out_sizes = tuple(data.draw(st.integers(1, 9)) for _ in range(nd))   # larger than the input too
    x = np.random.default_rng(data.draw(st.integers(0, 99))).standard_normal((2, 3) + sizes)
    want, weights = adaptive_loops(x, out_sizes)
    t = itn.tensor(x, requires_grad=True)
    out = (F.adaptive_avg_pool1d if nd == 1 else F.adaptive_avg_pool2d)(t, out_sizes if nd == 2 else out_sizes[0])
    np.testing.assert_allclose(out.data, want, rtol=1e-13, atol=1e-14)
    u = np.random.default_rng(5).standard_normal(want.shape)
    out.backward(u)
    spatial = "".join("ijkl"[d] for d in range(nd))
    expect = np.einsum(f"nc{spatial.upper()},{spatial.upper()}{spatial}->nc{spatial}", u, weights)
    np.testing.assert_allclose(t.grad.data, expect, rtol=1e-12, atol=1e-14)


def test_unbatched_and_float32():
    x2 = np.random.default_rng(4).standard_normal((3, 5, 4)).astype(np.float32)   # (C, H, W)
    for f, x in ((lambda a: F.max_pool2d(a, 2, 1, 1), x2), (lambda a: F.avg_pool2d(a, 3, 2, 1), x2),
                 (lambda a: F.adaptive_avg_pool2d(a, 2), x2), (lambda a: F.max_pool1d(a, 2), x2[0]),
                 (lambda a: F.avg_pool1d(a, 2), x2[0]), (lambda a: F.adaptive_avg_pool1d(a, 3), x2[0])):
        t = itn.tensor(x, requires_grad=True)
        single = f(t)
        batched = f(itn.tensor(x[None]))
        np.testing.assert_array_equal(single.data, batched.data[0])
        assert single.dtype == np.float32
        itn.sum(single).backward()
        assert t.grad.dtype == np.float32
        assert isinstance(f(x), np.ndarray)   # raw arrays in, raw array out


@pytest.mark.parametrize("error,message,call", [
    (ShapeError, r"kernel_size \(5,\) is larger than the input", lambda: F.max_pool1d(np.zeros((1, 1, 4)), 5)),
    (ShapeError, r"kernel_size \(3, 3\) is larger", lambda: F.avg_pool2d(np.zeros((1, 1, 2, 4)), 3)),
    (ShapeError, r"input must be \(N, C, L\) or \(C, L\), got shape \(4,\)", lambda: F.max_pool1d(np.zeros(4), 2)),
    (ShapeError, r"input must be \(N, C, H, W\)", lambda: F.max_pool2d(np.zeros((1, 1, 1, 2, 2)), 2)),
    (ConfigError, "padding .* at most half", lambda: F.max_pool1d(np.zeros((1, 1, 4)), 2, padding=2)),
    (ConfigError, "kernel_size must be an int >= 1", lambda: F.avg_pool1d(np.zeros((1, 1, 4)), 0)),
    (ConfigError, "stride must be", lambda: F.max_pool2d(np.zeros((1, 1, 4, 4)), 2, stride=(1, 2, 3))),
    (ConfigError, "output_size must be", lambda: F.adaptive_avg_pool1d(np.zeros((1, 1, 4)), 0)),
    (ShapeError, "empty spatial axis", lambda: F.adaptive_avg_pool2d(np.zeros((1, 1, 0, 3)), 2)),
    (DTypeError, "must be floating", lambda: F.max_pool1d(np.zeros((1, 1, 4), int), 2)),
    (DTypeError, "must be a Tensor or an array, got list", lambda: F.avg_pool1d([[[1.0, 2.0]]], 1)),
])
def test_errors(error, message, call):
    with pytest.raises(error, match=message):
        call()
