"""conv1d / conv2d against explicit loops written from torch's formula (every stride, padding kind,
dilation and group count), against scipy.signal.correlate (stride 1, one group), unfold/fold
adjointness, gradcheck / gradgradcheck, torch cross-check, and the argument errors.

torch's formula (cross-correlation), zero padding lo on the left/top:
    out[n, o, i] = b[o] + sum_{c < C_in/G} sum_a W[o, c, a] x[n, g(o) C_in/G + c, s i + d a - lo]
"""
import numpy as np
import pytest
import scipy.signal
from hypothesis import assume, given
from hypothesis import strategies as st

import itnet_np as itn
import itnet_np.nn.functional as F
from itnet_np.errors import ConfigError, DTypeError, ShapeError
from itnet_np.nn.functional.conv import fold, unfold


def conv1d_loops(x, w, b, stride, pad_lo, pad_hi, dilation, groups):
    n_batch, _, length = x.shape
    c_out, per_group, k = w.shape
    l_out = (length + pad_lo + pad_hi - dilation * (k - 1) - 1) // stride + 1
    out = np.zeros((n_batch, c_out, l_out))
    outs_per_group = c_out // groups
    for n in range(n_batch):
        for o in range(c_out):
            g = o // outs_per_group
            for i in range(l_out):
                acc = 0.0 if b is None else b[o]
                for c in range(per_group):
                    for a in range(k):
                        t = stride * i + dilation * a - pad_lo
                        if 0 <= t < length:
                            acc += w[o, c, a] * x[n, g * per_group + c, t]
                out[n, o, i] = acc
    return out


def conv2d_loops(x, w, b, stride, pads, dilation, groups):
    n_batch, _, height, width = x.shape
    c_out, per_group, kh, kw = w.shape
    (lo_h, hi_h), (lo_w, hi_w) = pads
    h_out = (height + lo_h + hi_h - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    w_out = (width + lo_w + hi_w - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n_batch, c_out, h_out, w_out))
    outs_per_group = c_out // groups
    for n in range(n_batch):
        for o in range(c_out):
            g = o // outs_per_group
            for i in range(h_out):
                for j in range(w_out):
                    acc = 0.0 if b is None else b[o]
                    for c in range(per_group):
                        for a in range(kh):
                            for e in range(kw):
                                r = stride[0] * i + dilation[0] * a - lo_h
                                q = stride[1] * j + dilation[1] * e - lo_w
                                if 0 <= r < height and 0 <= q < width:
                                    acc += w[o, c, a, e] * x[n, g * per_group + c, r, q]
                    out[n, o, i, j] = acc
    return out


def _pads(padding, k, dilation):
    """(lo, hi) per axis from the torch padding argument, written from torch's documentation."""
    if padding == "valid":
        return [(0, 0)] * len(k)
    if padding == "same":
        return [(d * (kk - 1) // 2, d * (kk - 1) - d * (kk - 1) // 2) for kk, d in zip(k, dilation)]
    if isinstance(padding, int):
        return [(padding, padding)] * len(k)
    return [(p, p) for p in padding]


@st.composite
def conv_case(draw, nd):
    groups = draw(st.integers(1, 3))
    per_group = draw(st.integers(1, 2))
    outs_per_group = draw(st.integers(1, 2))
    k = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    lengths = tuple(draw(st.integers(1, 7 if nd == 1 else 5)) for _ in range(nd))
    kind = draw(st.sampled_from(["int", "tuple", "same", "valid"]))
    if kind == "int":
        padding = draw(st.integers(0, 2))
    elif kind == "tuple":
        padding = tuple(draw(st.integers(0, 2)) for _ in range(nd))
    else:
        padding = kind
    if padding == "same":
        stride = (1,) * nd
    pads = _pads(padding, k, dilation)
    for i in range(nd):
        assume(lengths[i] + sum(pads[i]) - dilation[i] * (k[i] - 1) - 1 >= 0)
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    n = draw(st.integers(1, 2))
    x = rng.standard_normal((n, groups * per_group) + lengths)
    w = rng.standard_normal((groups * outs_per_group, per_group) + k)
    b = rng.standard_normal(groups * outs_per_group) if draw(st.booleans()) else None
    # Scalars where the argument is the same on every axis, sometimes, to exercise both spellings.
    as_int = lambda t: t[0] if len(set(t)) == 1 and draw(st.booleans()) else t
    return x, w, b, as_int(stride), padding, as_int(dilation), groups, pads, stride, dilation


@given(conv_case(1))
def test_conv1d_matches_loops(case):
    x, w, b, stride, padding, dilation, groups, pads, s, d = case
    got = F.conv1d(itn.tensor(x), w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    want = conv1d_loops(x, w, b, s[0], pads[0][0], pads[0][1], d[0], groups)
    assert got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)


@given(conv_case(2))
def test_conv2d_matches_loops(case):
    x, w, b, stride, padding, dilation, groups, pads, s, d = case
    got = F.conv2d(itn.tensor(x), w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
    want = conv2d_loops(x, w, b, s, pads, d, groups)
    assert got.shape == want.shape
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("padding", [0, 2, "same"])
def test_stride1_single_group_matches_scipy_correlate(padding):
    rng = np.random.default_rng(3)
    x1, w1 = rng.standard_normal((2, 3, 9)), rng.standard_normal((4, 3, 3))
    x2, w2 = rng.standard_normal((2, 3, 6, 7)), rng.standard_normal((4, 3, 3, 2))
    for x, w, f in ((x1, w1, F.conv1d), (x2, w2, F.conv2d)):
        pads = _pads(padding, w.shape[2:], (1,) * (x.ndim - 2))
        xp = np.pad(x, [(0, 0), (0, 0)] + list(pads))
        want = np.stack([np.stack([sum(scipy.signal.correlate(xp[n, c], w[o, c], mode="valid")
                                       for c in range(x.shape[1])) for o in range(w.shape[0])])
                         for n in range(x.shape[0])])
        np.testing.assert_allclose(f(x, w, padding=padding), want, rtol=1e-12, atol=1e-12)


def test_same_padding_puts_the_extra_zero_on_the_right():
    # k = 2, d = 1: total padding 1 goes right, so out[i] = w0 x[i] + w1 x[i + 1], x[L] = 0.
    x = np.array([[[1.0, 2.0, 3.0, 4.0]]])
    w = np.array([[[10.0, 1.0]]])
    np.testing.assert_allclose(F.conv1d(x, w, padding="same")[0, 0], [12.0, 23.0, 34.0, 40.0])
    # k = 2, d = 3: total 3 -> 1 left, 2 right: out[i] = 10 x[i - 1] + x[i + 2].
    np.testing.assert_allclose(F.conv1d(x, w, padding="same", dilation=3)[0, 0], [3.0, 14.0, 20.0, 30.0])


def test_unbatched_input():
    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((2, 5, 4)), rng.standard_normal((3, 2, 2, 2)), rng.standard_normal(3)
    got = F.conv2d(itn.tensor(x), w, b, padding=1)
    assert got.shape == (3, 6, 5)
    np.testing.assert_allclose(got.numpy(), conv2d_loops(x[None], w, b, (1, 1), [(1, 1)] * 2, (1, 1), 1)[0],
                               rtol=1e-12, atol=1e-12)
    x1, w1 = rng.standard_normal((2, 6)), rng.standard_normal((4, 1, 3))
    np.testing.assert_allclose(F.conv1d(x1, w1, groups=2), conv1d_loops(x1[None], w1, None, 1, 0, 0, 1, 2)[0],
                               rtol=1e-12, atol=1e-12)


def test_unfold_and_fold_are_adjoint():
    rng = np.random.default_rng(5)
    for shape, k, s, d in [((2, 3, 9), (3,), (2,), (2,)), ((1, 2, 6, 7), (2, 3), (2, 1), (1, 2))]:
        x = rng.standard_normal(shape)
        cols = unfold(x, kernel=k, stride=s, dilation=d)
        c = rng.standard_normal(cols.shape)
        back = fold(c, shape=shape, kernel=k, stride=s, dilation=d)
        np.testing.assert_allclose(np.sum(cols * c), np.sum(x * back), rtol=1e-12)
        # Each column entry is one input sample: cols[n, c, a, i] = x[n, c, s i + d a] (1-D case).
        if len(k) == 1:
            for a in range(k[0]):
                np.testing.assert_array_equal(cols[:, :, a], x[:, :, d[0] * a::s[0]][:, :, :cols.shape[-1]])


CONFIGS = [
    {},
    {"stride": 2, "padding": 1, "dilation": 2, "groups": 2},
    {"padding": "same", "dilation": 2},
    {"padding": (1, 0), "stride": (1, 2), "groups": 2},
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_gradcheck_and_gradgradcheck(cfg):
    rng = np.random.default_rng(6)
    groups = cfg.get("groups", 1)
    if "padding" in cfg and isinstance(cfg["padding"], tuple):
        x, w = rng.standard_normal((1, 2, 4, 5)), rng.standard_normal((2, 2 // groups, 2, 2))
        f = F.conv2d
    else:
        x, w = rng.standard_normal((2, 2, 6)), rng.standard_normal((4, 2 // groups, 3))
        f = F.conv1d
    b = rng.standard_normal(w.shape[0])
    g = lambda x_, w_, b_: f(x_, w_, b_, **cfg)
    assert itn.gradcheck(g, [x, w, b])
    assert itn.gradgradcheck(g, [x, w, b])


def test_conv2d_gradgradcheck_strided_dilated_same():
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((1, 2, 5, 4)), rng.standard_normal((2, 1, 2, 3))
    assert itn.gradgradcheck(lambda x_, w_: F.conv2d(x_, w_, padding="same", dilation=(2, 1), groups=2), [x, w])
    assert itn.gradgradcheck(lambda x_, w_: F.conv2d(x_, w_, stride=(2, 3), padding=1), [x, np.repeat(w, 2, 1)])


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_torch_cross_check_values_and_gradients():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(8)
    cases = [(F.conv1d, torch.nn.functional.conv1d, (2, 4, 11), (6, 2, 3),
              {"stride": 2, "padding": 2, "dilation": 2, "groups": 2}),
             (F.conv1d, torch.nn.functional.conv1d, (1, 3, 8), (3, 1, 4), {"padding": "same", "groups": 3}),
             (F.conv2d, torch.nn.functional.conv2d, (2, 4, 7, 6), (4, 2, 3, 2),
              {"stride": (2, 1), "padding": (1, 2), "dilation": (1, 2), "groups": 2}),
             (F.conv2d, torch.nn.functional.conv2d, (1, 2, 5, 6), (3, 2, 2, 2), {"padding": "same", "dilation": 3})]
    for ours, theirs, xs, ws, cfg in cases:
        x, w, b = rng.standard_normal(xs), rng.standard_normal(ws), rng.standard_normal(ws[0])
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        ty = theirs(tx, tw, tb, **cfg)
        g = rng.standard_normal(tuple(ty.shape))
        ty.backward(torch.tensor(g))
        ix, iw, ib = (itn.tensor(a, requires_grad=True) for a in (x, w, b))
        y = ours(ix, iw, ib, **cfg)
        y.backward(g)
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-12)
        for mine, ref in ((ix, tx), (iw, tw), (ib, tb)):
            np.testing.assert_allclose(mine.grad.numpy(), ref.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_float32_stays_float32():
    x = itn.tensor(np.ones((1, 2, 5), dtype=np.float32), requires_grad=True)
    y = F.conv1d(x, np.ones((3, 2, 2), dtype=np.float32), padding=1)
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


ERRORS = [
    (ConfigError, r"in_channels=3 \(input shape \(1, 3, 5\)\) is not divisible by groups=2",
     lambda: F.conv1d(np.zeros((1, 3, 5)), np.zeros((2, 1, 2)), groups=2)),
    (ConfigError, r"out_channels=3 \(weight shape \(3, 1, 2\)\) is not divisible by groups=2",
     lambda: F.conv1d(np.zeros((1, 2, 5)), np.zeros((3, 1, 2)), groups=2)),
    (ShapeError, r"weight of shape \(2, 3, 2\) with groups=1 expects 3 input channels.*C_in=2",
     lambda: F.conv1d(np.zeros((1, 2, 5)), np.zeros((2, 3, 2)))),
    (ShapeError, r"output size would be \(0, 4\) for input shape \(2, 5\)",
     lambda: F.conv2d(np.zeros((1, 1, 2, 5)), np.zeros((1, 1, 3, 2)))),
    (ShapeError, r"output size would be \(-3,\)",
     lambda: F.conv1d(np.zeros((1, 1, 3)), np.zeros((1, 1, 3)), dilation=3)),
    (ConfigError, r"padding='same' needs stride 1, got stride=\(2,\)",
     lambda: F.conv1d(np.zeros((1, 1, 5)), np.zeros((1, 1, 3)), stride=2, padding="same")),
    (ConfigError, "padding must be an int, a tuple of 2 ints, 'same' or 'valid', got 'full'",
     lambda: F.conv2d(np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 3, 3)), padding="full")),
    (ConfigError, r"padding must be an int >= 0 or a tuple of 2 such ints, got \(1, 2, 3\)",
     lambda: F.conv2d(np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 3, 3)), padding=(1, 2, 3))),
    (ConfigError, "padding must be an int >= 0", lambda: F.conv1d(np.zeros((1, 1, 5)), np.zeros((1, 1, 3)),
                                                                   padding=-1)),
    (ConfigError, "stride must be an int >= 1", lambda: F.conv1d(np.zeros((1, 1, 5)), np.zeros((1, 1, 3)),
                                                                  stride=0)),
    (ConfigError, "dilation must be an int >= 1", lambda: F.conv2d(np.zeros((1, 1, 5, 5)),
                                                                    np.zeros((1, 1, 3, 3)), dilation=1.5)),
    (ConfigError, "groups must be a positive int", lambda: F.conv1d(np.zeros((1, 1, 5)), np.zeros((1, 1, 3)),
                                                                     groups=0)),
    (ShapeError, r"input must be \(N, C_in, H, W\) or \(C_in, H, W\), got shape \(5, 5\)",
     lambda: F.conv2d(np.zeros((5, 5)), np.zeros((1, 1, 3, 3)))),
    (ShapeError, r"weight must be \(C_out, C_in/groups, kL\), got shape \(1, 3\)",
     lambda: F.conv1d(np.zeros((1, 1, 5)), np.zeros((1, 3)))),
    (ShapeError, r"bias has shape \(2,\), expected \(1,\)",
     lambda: F.conv1d(np.zeros((1, 1, 5)), np.zeros((1, 1, 3)), np.zeros(2))),
    (DTypeError, "conv1d: inputs must share one dtype, got input float32, weight float64",
     lambda: F.conv1d(np.zeros((1, 1, 5), np.float32), np.zeros((1, 1, 3)))),
]


@pytest.mark.parametrize("error,message,call", ERRORS, ids=[e[1][:40] for e in ERRORS])
def test_errors(error, message, call):
    with pytest.raises(error, match=message):
        call()
