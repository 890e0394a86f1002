"""The fused CPU kernels (nn/functional/_cpu_kernels.py) against their NumPy references and against
independent formulas (SciPy, explicit float64 expressions), forward and VJPs, float64 and float32;
the gate (_fast.kernels): which inputs reach the kernels, the switch that turns them off; gradients
through the engine with the kernels on, first and second order.

``kernels_on(parallel)`` lowers the size threshold to 1 so that hypothesis' small shapes reach the
kernels (on the thread pool when ``parallel``, else on the calling thread), and counts the kernel
calls so that a parity test cannot pass by comparing NumPy with itself.
"""
import math
import os
import subprocess
import sys
from contextlib import contextmanager

import numpy as np
import pytest
import scipy.special as sp
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import itnet_np as itn
import itnet_np.nn.functional as F
from itnet_np.nn.functional import _cpu_kernels as K
from itnet_np.nn.functional import _fast

RTOL = {np.float64: 1e-12, np.float32: 1e-5}
PUBLIC = ("gelu_tanh", "gelu_tanh_grad", "softmax", "softmax_grad", "layer_norm", "layer_norm_grad_x",
          "layer_norm_grad_w")


@contextmanager
def kernels_on(parallel=False):
    """Kernels for every eligible size, split over the threads when ``parallel``; yields a dict
    counting the calls of each kernel."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_fast, "ENABLED", True)
        mp.setattr(_fast, "MIN_SIZE", 1)
        mp.setattr(K, "PARALLEL_WORK", 1 if parallel else 1 << 62)
        calls = dict.fromkeys(PUBLIC, 0)
        for name in PUBLIC:
            mp.setattr(K, name, _counted(calls, name, getattr(K, name)))
        yield calls


def _counted(calls, name, fn):
    def counted(*args, **kw):
        calls[name] += 1
        return fn(*args, **kw)
    return counted


def numpy_path(fn, *args, **kw):
    """fn with the kernels switched off: the NumPy reference."""
    old = _fast.ENABLED
    _fast.ENABLED = False
    try:
        return fn(*args, **kw)
    finally:
        _fast.ENABLED = old


def close(got, want, dtype, scale=None):
    """Equal to float rounding: rtol of the dtype, elementwise and on the scale of the terms."""
    rtol = RTOL[dtype]
    scale = np.max(np.abs(want), initial=0.0) if scale is None else scale
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale + np.finfo(dtype).tiny)


@st.composite
def data(draw, low=-6.0, high=6.0):
    """(x, g, dtype, parallel): an array of 1-3 dims (sides up to 40), a cotangent of the same shape,
    and whether the kernels split it over the threads."""
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.uniform(low, high, shape).astype(dtype)
    return x, rng.standard_normal(shape).astype(dtype), dtype, draw(st.booleans())


def _gelu_tanh_f64(x):
    """x/2 (1 + tanh u) = x expit(2u), u = sqrt(2/pi) (x + 0.044715 x^3), in float64 (SciPy's expit:
    the tanh form itself cancels to 0 for x < -8 even in float64)."""
    x = x.astype(np.float64)
    return x * sp.expit(2 * math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))


# ----------------------------------------------------------------------------- parity, forward and VJP
@given(data())
def test_gelu_tanh(case):
    x, g, dtype, parallel = case
    with kernels_on(parallel) as calls:
        y = F.gelu(x, approximate="tanh")
        close(y, numpy_path(F.gelu, x, approximate="tanh"), dtype)
        close(y, _gelu_tanh_f64(x), dtype)
        t = itn.tensor(x, requires_grad=True)
        F.gelu(t, approximate="tanh").backward(g)
        tr = itn.tensor(x, requires_grad=True)
        numpy_path(lambda: F.gelu(tr, approximate="tanh").backward(g))
        close(t.grad.numpy(), tr.grad.numpy(), dtype)
        assert calls["gelu_tanh"] == 2 and calls["gelu_tanh_grad"] == 1  # raw and Tensor forward


@pytest.mark.parametrize("log", [False, True])
@given(case=data(low=-20.0, high=20.0))
def test_softmax_and_log_softmax(log, case):
    x, g, dtype, parallel = case
    with kernels_on(parallel) as calls:
        f = F.log_softmax if log else F.softmax
        y = f(x, axis=-1)
        close(y, numpy_path(f, x, axis=-1), dtype)
        want = (sp.log_softmax if log else sp.softmax)(x.astype(np.float64), axis=-1)
        close(y, want, dtype, scale=np.abs(x).max() if log else None)
        t = itn.tensor(x, requires_grad=True)
        f(t, axis=-1).backward(g)
        tr = itn.tensor(x, requires_grad=True)
        numpy_path(lambda: f(tr, axis=-1).backward(g))
        close(t.grad.numpy(), tr.grad.numpy(), dtype, scale=np.abs(g).max() * x.shape[-1])
        assert calls["softmax"] == 2 and calls["softmax_grad"] == 1


@pytest.mark.parametrize("affine", [False, True])
@given(case=data())
def test_layer_norm(affine, case):
    x, g, dtype, parallel = case
    x = x * 3 + 1
    with kernels_on(parallel) as calls:
        k = 1 + (x.ndim > 1)  # normalise over the last one or two axes
        shape = x.shape[x.ndim - k:]
        rng = np.random.default_rng(0)
        w, b = (rng.standard_normal(shape).astype(dtype) for _ in range(2)) if affine else (None, None)
        y = F.layer_norm(x, shape, w, b)
        close(y, numpy_path(F.layer_norm, x, shape, w, b), dtype)
        axes = tuple(range(x.ndim - k, x.ndim))
        x64 = x.astype(np.float64)
        xhat = (x64 - x64.mean(axes, keepdims=True)) / np.sqrt(x64.var(axes, keepdims=True) + 1e-5)
        scale = np.abs(xhat).max() * (1 if w is None else np.abs(w).max() + 1)
        close(y, xhat if w is None else xhat * w + b, dtype, scale=scale)
        ts = [itn.tensor(a, requires_grad=True) if a is not None else None for a in (x, w, b)]
        F.layer_norm(ts[0], shape, ts[1], ts[2]).backward(g)
        rs = [itn.tensor(a, requires_grad=True) if a is not None else None for a in (x, w, b)]
        numpy_path(lambda: F.layer_norm(rs[0], shape, rs[1], rs[2]).backward(g))
        rows = x.size // math.prod(shape)
        for t, r in zip(ts, rs):
            if t is not None:
                want = r.grad.numpy()
                close(t.grad.numpy(), want, dtype, scale=np.abs(want).max() + np.abs(g).max() * rows)
        assert calls["layer_norm"] == 2 and calls["layer_norm_grad_x"] == 1
        assert calls["layer_norm_grad_w"] == affine


# ----------------------------------------------------------------------------- layouts, special values
@given(data(), st.sampled_from(["strided", "transposed"]))
def test_non_contiguous_inputs_take_the_numpy_path(case, view):
    x, _, dtype, parallel = case
    x = x[..., ::2] if view == "strided" or x.ndim == 1 else np.swapaxes(x, -1, -2)
    assume(not x.flags.c_contiguous)
    with kernels_on(parallel) as calls:
        for f in (F.softmax, lambda a: F.gelu(a, approximate="tanh"),
                  lambda a: F.layer_norm(a, a.shape[-1:])):
            np.testing.assert_array_equal(f(x), numpy_path(f, x))
        assert not any(calls.values())
    close(F.softmax(x), sp.softmax(x.astype(np.float64), axis=-1), dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_special_rows_match_numpy(dtype):
    with kernels_on() as calls:
        inf, nan = np.inf, np.nan
        x = np.array([[0.0, -inf, 1.0, -inf],      # masked entries: probability 0
                      [-inf, -inf, -inf, -inf],    # nothing left: nan (as NumPy and torch)
                      [1.0, inf, 0.0, 2.0],        # +inf: nan there, 0 elsewhere
                      [1.0, nan, 0.0, 2.0],        # nan propagates to the row
                      [nan, 1.0, 0.0, 2.0],
                      [1e30, -1e30, 0.0, 5.0]], dtype)
        for log in (False, True):
            f = F.log_softmax if log else F.softmax
            with np.errstate(all="ignore"):
                want = numpy_path(f, x)
            y = f(x)
            np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
            np.testing.assert_allclose(y, want, rtol=RTOL[dtype])
        assert calls["softmax"] == 2


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gelu_tanh_extremes(dtype):
    with kernels_on() as calls:
        x = np.array([-1e4, -800.0, -60.0, -20.0, -9.0, -1e-30, 0.0, 1e-30, 9.0, 60.0, 800.0, 1e4], dtype)
        g = np.ones_like(x)
        y, d = F.gelu(x, approximate="tanh"), K.gelu_tanh_grad(g, x)
        with np.errstate(over="raise", invalid="raise"):
            y_ref = numpy_path(F.gelu, x, approximate="tanh")
            d_ref = numpy_path(lambda: F.activations._gelu_tanh_grad_raw(g, x))
        # Past the exp's range the kernel's e^-z saturates where NumPy's overflows to inf: 1e-27
        # against 0 (the exact values are smaller still), equal on the scale of the arrays.
        close(y, y_ref, dtype)
        close(d, d_ref, dtype)
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(d)) and calls["gelu_tanh"] == 1


def test_gelu_tanh_float32_keeps_relative_accuracy_for_negative_inputs():
    # The tanh form 0.5 x (1 + tanh u) cancelled in float32: 30% off at x = -5, exactly 0 from x = -6.
    x = np.linspace(-9.0, -2.0, 29).astype(np.float32)
    want = _gelu_tanh_f64(x.astype(np.float64))
    for fn in (lambda: F.gelu(x, approximate="tanh"), lambda: numpy_path(F.gelu, x, approximate="tanh")):
        y = fn()
        assert y.dtype == np.float32
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=0)


# ----------------------------------------------------------------------------- the gate and the switch
def test_gate():
    big = np.ones((300, 128), np.float32)
    assert _fast.MIN_SIZE <= big.size
    assert _fast.kernels(big) is (K if _fast.ENABLED else None)
    assert _fast.kernels(big[:, ::2]) is None                          # not C-contiguous
    assert _fast.kernels(big.astype(np.float16)) is None               # not float32/float64
    assert _fast.kernels(big.astype(np.int64)) is None
    assert _fast.kernels(np.ones(8, np.float32)) is None               # below the threshold
    assert _fast.kernels(big, big[0].astype(np.float64)) is None       # dtypes differ
    assert _fast.kernels(big.view(type("Sub", (np.ndarray,), {}))) is None  # not a plain ndarray


def test_switch_off_by_environment_variable():
    code = "import itnet_np.nn.functional._fast as f; print(f.ENABLED)"
    for value, want in (("1", "False"), ("0", "True"), ("", "True")):
        env = dict(os.environ, ITNET_NO_NUMBA_ELEMENTWISE=value)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             check=True)
        assert out.stdout.strip() == want


def test_without_numba_the_numpy_passes_run(monkeypatch):
    x = np.random.default_rng(6).standard_normal((64, 128))
    want = numpy_path(F.softmax, x)
    monkeypatch.setattr(_fast, "_module", [])
    monkeypatch.delitem(sys.modules, K.__name__)     # as if the kernels had never been imported
    monkeypatch.delattr(F, "_cpu_kernels")
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` raises ImportError
    np.testing.assert_array_equal(F.softmax(x), want)
    assert _fast.kernels(x) is None


def test_switch_off_at_run_time():
    x = np.random.default_rng(3).standard_normal((4, 50))
    with kernels_on() as calls:
        _fast.ENABLED = False  # restored on leaving kernels_on()
        F.softmax(x)
        F.gelu(x, approximate="tanh")
        assert not any(calls.values())


# ----------------------------------------------------------------------------- through the engine
def test_gradcheck_and_gradgradcheck_with_kernels_on():
    with kernels_on() as calls:
        rng = np.random.default_rng(4)
        x, w, b = rng.standard_normal((3, 5, 6)), rng.standard_normal((6,)), rng.standard_normal((6,))
        W = rng.standard_normal((4, 6))
        def block(x_, w_, b_):
            h = F.gelu(F.layer_norm(x_, (6,), w_, b_), approximate="tanh")
            return F.softmax(F.linear(h, W, b_[:4]), axis=-1)

        assert itn.gradcheck(block, [x, w, b])
        assert itn.gradgradcheck(block, [x, w, b])
        assert itn.gradcheck(lambda x_: F.log_softmax(x_, axis=-1), [x])
        assert all(calls.values()), calls  # every kernel ran


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernels_keep_the_dtype(dtype):
    x = np.random.default_rng(5).standard_normal((7, 9)).astype(dtype)
    for y in (K.gelu_tanh(x), K.gelu_tanh_grad(x, x), K.softmax(x), K.softmax(x, log=True),
              K.softmax_grad(x, x), K.layer_norm(x, 9, 1e-5), K.layer_norm_grad_x(x, x, 9, 1e-5),
              K.layer_norm_grad_w(x, x, 9, 1e-5)):
        assert y.dtype == dtype
