"""batch_norm (training with running-statistic updates, eval) and group_norm: forwards, running
statistics and gradients against explicit loops over channels / groups written from the
formulas, gradcheck and gradgradcheck, float32 and the errors."""
import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import itnet_np as itn
import itnet_np.nn.functional as F
from itnet_np.errors import ConfigError, DTypeError, ShapeError


def _stats(values):
    """Mean, biased and unbiased variance of a list, by loops."""
    n = len(values)
    mu = sum(values) / n
    ss = sum((v - mu) ** 2 for v in values)
    return mu, ss / n, ss / (n - 1) if n > 1 else float("nan")


def _normalize_groups(x, groups, eps, g):
    """y and dL/dx for y = (x - mu) / sqrt(v + eps) over each group (a list of index tuples),
    with dx = r (g - mean(g) - y mean(g y)) per group, by loops."""
    y, dx = np.zeros_like(x), np.zeros_like(x)
    for members in groups:
        vals = [x[i] for i in members]
        mu, var, _ = _stats(vals)
        r = 1 / np.sqrt(var + eps)
        ys = [(v - mu) * r for v in vals]
        gs = [g[i] for i in members]
        mg = sum(gs) / len(gs)
        mgy = sum(a * b for a, b in zip(gs, ys)) / len(gs)
        for i, yi, gi in zip(members, ys, gs):
            y[i] = yi
            dx[i] = r * (gi - mg - yi * mgy)
    return y, dx


def _channel_groups(shape):
    """Batch norm: one group per channel c, holding every (n, c, *) position."""
    rest = [range(s) for s in shape[2:]]
    return [[(n, c) + tuple(p) for n in range(shape[0]) for p in itertools.product(*rest)]
            for c in range(shape[1])]


@st.composite
def bn_case(draw):
    n = draw(st.integers(1, 3))
    c = draw(st.integers(1, 3))
    spatial = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    if n * int(np.prod(spatial)) < 2:
        n = 2
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((n, c) + spatial) * 2 + 1
    affine = draw(st.booleans())
    w, b = (rng.standard_normal(c), rng.standard_normal(c)) if affine else (None, None)
    return x, w, b, draw(st.sampled_from([1e-5, 0.3])), draw(st.sampled_from([0.1, 0.5, 1.0]))


def _per_channel(v, ndim):
    return 1.0 if v is None else v.reshape((1, -1) + (1,) * (ndim - 2))


@given(bn_case(), st.integers(0, 2**16))
def test_batch_norm_training_matches_loops(case, seed):
    x, w, b, eps, momentum = case
    c = x.shape[1]
    rm0, rv0 = np.random.default_rng(seed).standard_normal(c), np.random.default_rng(seed).uniform(0.5, 2, c)
    rm, rv = rm0.copy(), rv0.copy()
    t = itn.tensor(x, requires_grad=True)
    out = F.batch_norm(t, rm, rv, w, b, training=True, momentum=momentum, eps=eps)
    g = np.random.default_rng(seed + 1).standard_normal(x.shape)
    groups = _channel_groups(x.shape)
    y, _ = _normalize_groups(x, groups, eps, g)
    want = y * _per_channel(w, x.ndim) + (0.0 if b is None else _per_channel(b, x.ndim))
    np.testing.assert_allclose(out.data, want, rtol=1e-12, atol=1e-12)
    # Running statistics: (1 - m) old + m batch, with the unbiased batch variance (torch). Each is a
    # sum of two terms: rtol 1e-13 of the result, and, where the terms cancel (a mean near 0), the
    # rounding of the terms themselves, a few ulp of |(1 - m) old| + |m batch|.
    ulp = np.finfo(np.float64).eps
    for ch, members in enumerate(groups):
        mu, _, unbiased = _stats([x[i] for i in members])
        for got, old, batch in ((rm[ch], rm0[ch], mu), (rv[ch], rv0[ch], unbiased)):
            terms = abs((1 - momentum) * old) + abs(momentum * batch)
            np.testing.assert_allclose(got, (1 - momentum) * old + momentum * batch, rtol=1e-13, atol=8 * ulp * terms)
    out.backward(g)
    _, dx = _normalize_groups(x, groups, eps, g * _per_channel(w, x.ndim))
    np.testing.assert_allclose(t.grad.data, dx, rtol=1e-10, atol=1e-11)


@given(bn_case())
def test_batch_norm_eval_uses_running_statistics(case):
    x, w, b, eps, _ = case
    c = x.shape[1]
    rm, rv = np.linspace(-1, 1, c), np.linspace(0.5, 2, c)
    before = rm.copy(), rv.copy()
    t = itn.tensor(x, requires_grad=True)
    out = F.batch_norm(t, rm, rv, w, b, training=False, eps=eps)
    want = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        ch = idx[1]
        v = (x[idx] - rm[ch]) / np.sqrt(rv[ch] + eps)
        want[idx] = v * (1.0 if w is None else w[ch]) + (0.0 if b is None else b[ch])
    np.testing.assert_allclose(out.data, want, rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(rm, before[0])
    np.testing.assert_array_equal(rv, before[1])
    out.backward(np.ones(x.shape))
    np.testing.assert_allclose(t.grad.data, np.broadcast_to(
        _per_channel(w, x.ndim) / np.sqrt(rv + eps).reshape(_per_channel(rv, x.ndim).shape), x.shape), rtol=1e-13)


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_gradcheck_and_gradgradcheck(training):
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((3, 2, 4)), rng.standard_normal(2), rng.standard_normal(2)
    rm, rv = np.array([0.5, -0.2]), np.array([1.5, 0.7])
    f = lambda x_, w_, b_: F.batch_norm(x_, rm.copy(), rv.copy(), w_, b_, training=training)
    assert itn.gradcheck(f, [x, w, b]) and itn.gradgradcheck(f, [x, w, b])


@given(st.data())
def test_group_norm_matches_loops(data):
    n, groups, per = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    spatial = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2)))
    c = groups * per
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    x = rng.standard_normal((n, c) + spatial) * 3
    w, b = rng.standard_normal(c), rng.standard_normal(c)
    eps = data.draw(st.sampled_from([1e-5, 0.5]))
    t = itn.tensor(x, requires_grad=True)
    out = F.group_norm(t, groups, w, b, eps=eps)
    rest = [range(s) for s in spatial]
    members = [[(i, ch) + tuple(p) for ch in range(k * per, (k + 1) * per) for p in itertools.product(*rest)]
               for i in range(n) for k in range(groups)]
    g = rng.standard_normal(x.shape)
    y, dx = _normalize_groups(x, members, eps, g * _per_channel(w, x.ndim))
    np.testing.assert_allclose(out.data, y * _per_channel(w, x.ndim) + _per_channel(b, x.ndim),
                               rtol=1e-12, atol=1e-12)
    out.backward(g)
    np.testing.assert_allclose(t.grad.data, dx, rtol=1e-10, atol=1e-11)


def test_group_norm_gradcheck_and_gradgradcheck():
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((2, 4, 3)), rng.standard_normal(4), rng.standard_normal(4)
    f = lambda x_, w_, b_: F.group_norm(x_, 2, w_, b_)
    assert itn.gradcheck(f, [x, w, b]) and itn.gradgradcheck(f, [x, w, b])
    assert itn.gradgradcheck(lambda x_: F.group_norm(x_, 4, eps=0.1), [x])


def test_float32_stays_float32():
    x = itn.tensor(np.random.default_rng(4).standard_normal((4, 2, 3)).astype(np.float32), requires_grad=True)
    rm, rv = np.zeros(2, np.float32), np.ones(2, np.float32)
    for out in (F.batch_norm(x, rm, rv, np.ones(2, np.float32), np.zeros(2, np.float32), training=True),
                F.batch_norm(x, rm, rv, training=False), F.group_norm(x, 2, np.ones(2, np.float32))):
        assert out.dtype == np.float32
        x.grad = None
        itn.sum(out * out).backward()
        assert x.grad.dtype == np.float32
    assert rm.dtype == rv.dtype == np.float32


@pytest.mark.parametrize("error,message,call", [
    (ShapeError, "more than one value per channel", lambda: F.batch_norm(np.zeros((1, 3)), None, None, training=True)),
    (ShapeError, r"input must be \(N, C, \*\)", lambda: F.batch_norm(np.zeros(3), None, None)),
    (ConfigError, "needs running_mean and running_var", lambda: F.batch_norm(np.zeros((2, 3)), None, None)),
    (ConfigError, "both running_mean and running_var", lambda: F.batch_norm(np.zeros((2, 3)), np.zeros(3), None)),
    (ShapeError, r"running_var has shape \(2,\), expected \(3,\)",
     lambda: F.batch_norm(np.zeros((2, 3)), np.zeros(3), np.ones(2))),
    (DTypeError, "running_mean is float32 but the input is float64",
     lambda: F.batch_norm(np.zeros((2, 3)), np.zeros(3, np.float32), np.ones(3, np.float32))),
    (ConfigError, "momentum", lambda: F.batch_norm(np.zeros((2, 3)), None, None, training=True, momentum=1.5)),
    (ConfigError, "eps must be a number > 0", lambda: F.batch_norm(np.zeros((2, 3)), None, None, training=True, eps=0)),
    (ShapeError, r"weight has shape \(2,\)", lambda: F.group_norm(np.zeros((2, 4)), 2, np.ones(2))),
    (ConfigError, "num_groups must be a positive int dividing the 4 channels",
     lambda: F.group_norm(np.zeros((2, 4, 3)), 3)),
    (DTypeError, "must be a Tensor or an array, got list", lambda: F.group_norm([[1.0, 2.0]], 1)),
])
def test_errors(error, message, call):
    with pytest.raises(error, match=message):
        call()
