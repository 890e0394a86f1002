"""Fused rowwise and elementwise CPU kernels (Numba) for the raw fast paths of nn.functional.

Each kernel does in one pass over memory what its NumPy reference does in several, on
numba.get_num_threads() threads (``run_tasks``: nogil kernels on a small Python thread pool, each
task a contiguous block of rows), or on the calling thread below ``PARALLEL_SIZE`` elements. Every
kernel reads C-contiguous float32 or float64 arrays and
computes in their dtype (constants go through ``typed``: a Python float literal would turn float32
arithmetic into float64). ``_fast.kernels`` decides when they run; the NumPy reference of each one
is the code beside its call, and tests/nn/test_cpu_kernels.py holds them equal to float rounding.

Rows: x of shape (..., n) is read as (R, n), R = x.size // n.

    gelu_tanh       x sigmoid(z),  z = 2 sqrt(2/pi) (x + 0.044715 x^3)   (= x/2 (1 + tanh(z/2)))
    gelu_tanh_grad  g s (1 + x z' (1 - s)),  s = sigmoid(z), x z' = x (a + 3 b x^2)
    softmax         e_j / sum_k e_k,  e_j = exp(x_j - m),  m = max_k x_k        reference: softmax._softmax
    softmax_grad    y_j g_j - y_j sum_k g_k y_k                                 softmax._softmax_vjp
    log_softmax     x_j - m - log sum_k exp(x_k - m)                            softmax._log_softmax
    log_softmax_grad  g_j - exp(y_j) sum_k g_k                                  softmax._log_softmax_vjp
    layer_norm      (x_j - mu) r w_j + b_j,  r = 1 / sqrt(var + eps)            normalization._normalize
    layer_norm_grad_x  r (h_j - mean(h) - xhat_j mean(h xhat)),  h = g w      normalization._normalize_vjp
    layer_norm_grad_w  sum over rows of g xhat                                   (columns)

exp is ``fexp`` (transform/fused/_tiles.py): at most 1 ulp from libm in the normal range, results
below the smallest normal flushed to 0; a softmax row whose max is not finite (+inf, -inf, NaN) goes
through libm's exp with the reference's shift of 0, so NaN and inf propagate exactly as in NumPy.
"""
import math

import numba as nb
import numpy as np
from numba import types
from numba.extending import overload

from ...transform.fused._notice import announce
from ...transform.fused._tiles import JIT, fexp, run_tasks

_A = 2.0 * math.sqrt(2.0 / math.pi)  # z = x (A + B x^2) = 2u, u the tanh-GELU argument
_B = _A * 0.044715


def typed(value, like):
    """``value`` in the dtype of the array ``like`` (compiled: a constant of that float type)."""
    return like.dtype.type(value)


@overload(typed, jit_options={"fastmath": JIT["fastmath"]})
def _typed(value, like):
    cast = np.float32 if like.dtype == types.float32 else np.float64
    return lambda value, like: cast(value)


@nb.njit(inline="always", **JIT)
def _span(t, n_tasks, n):
    """Rows [lo, hi) of task t when n rows are split into n_tasks contiguous blocks."""
    return t * n // n_tasks, (t + 1) * n // n_tasks


# Below this many elements a kernel runs on the calling thread alone: handing tasks to the pool
# costs 30 to 130 µs on this 2-core machine (more under load), more than a second thread saves on
# a layer norm of 2048 x 128 (0.14 ms on one thread); GELU and softmax at 16 x 128 x 512 (about
# 1 ms on one thread) gain from it.
PARALLEL_SIZE = 1 << 19


def _tasks(size, rows):
    """How many tasks: one per thread (at most one per row), or 1 below PARALLEL_SIZE elements."""
    return 1 if size < PARALLEL_SIZE else max(1, min(nb.get_num_threads(), rows))


def _run(kernel, tasks, family, *args):
    """``kernel(first, step, tasks, *args)``: on the pool, or directly on this thread for one task
    (run_tasks would also hold the BLAS at one thread: 20 µs for nothing)."""
    if tasks == 1:
        announce(family, kernel, (0, 1, 1) + args)
        kernel(0, 1, 1, *args)
    else:
        run_tasks(kernel, tasks, *args, family=family)


def _rows(a, n):
    return a.reshape(a.size // n, n)


# Each kernel is a task driver (rows [lo, hi) of task t) calling a separately compiled function on
# one block or one row: LLVM vectorises those simple loops where the same loop nested inside the
# driver came out 1.5 to 2x slower (measured).

# ----------------------------------------------------------------------------- tanh-GELU
@nb.njit(**JIT)
def _gelu_tanh_block(x, out):
    a, b, one = typed(_A, x), typed(_B, x), typed(1.0, x)
    for i in range(x.shape[0]):
        v = x[i]
        out[i] = v / (one + fexp(-(v * (a + b * v * v))))


@nb.njit(**JIT)
def _gelu_tanh_grad_block(g, x, out):
    a, b, b3, one = typed(_A, x), typed(_B, x), typed(3.0 * _B, x), typed(1.0, x)
    for i in range(x.shape[0]):
        v = x[i]
        v2 = v * v
        s = one / (one + fexp(-(v * (a + b * v2))))
        out[i] = g[i] * (s * (one + (one - s) * (v * (a + b3 * v2))))


@nb.njit(**JIT)
def _gelu_tanh_k(first, step, n_tasks, x, out):
    for t in range(first, n_tasks, step):
        lo, hi = _span(t, n_tasks, x.shape[0])
        _gelu_tanh_block(x[lo:hi], out[lo:hi])


@nb.njit(**JIT)
def _gelu_tanh_grad_k(first, step, n_tasks, g, x, out):
    for t in range(first, n_tasks, step):
        lo, hi = _span(t, n_tasks, x.shape[0])
        _gelu_tanh_grad_block(g[lo:hi], x[lo:hi], out[lo:hi])


def gelu_tanh(x):
    """tanh-GELU of x (any shape), elementwise; reference: activations._gelu_tanh_raw."""
    out = np.empty_like(x)
    _run(_gelu_tanh_k, _tasks(x.size, x.size), "gelu", x.reshape(-1), out.reshape(-1))
    return out


def gelu_tanh_grad(g, x):
    """g * d gelu_tanh(x) / dx; reference: activations._gelu_tanh_grad_raw."""
    out = np.empty_like(x)
    _run(_gelu_tanh_grad_k, _tasks(x.size, x.size), "gelu", g.reshape(-1), x.reshape(-1), out.reshape(-1))
    return out


# ----------------------------------------------------------------------------- softmax, log_softmax
@nb.njit(**JIT)
def _softmax_row(row, o, log):
    m = row[0]
    for j in range(1, row.shape[0]):
        m = max(m, row[j])  # a NaN may be skipped here: it still turns the sum, so the row, into NaN
    s = typed(0.0, row)
    if math.isfinite(m):
        for j in range(row.shape[0]):
            e = fexp(row[j] - m)
            o[j] = e
            s += e
    else:  # the reference's shift of 0 and libm's exp: inf and NaN propagate as in NumPy
        m = typed(0.0, row)
        for j in range(row.shape[0]):
            e = math.exp(row[j])
            o[j] = e
            s += e
    if log:
        ls = math.log(s)
        for j in range(row.shape[0]):
            o[j] = (row[j] - m) - ls
    else:
        for j in range(row.shape[0]):
            o[j] = o[j] / s


@nb.njit(**JIT)
def _softmax_grad_row(g, y, o, log):
    s = typed(0.0, y)
    if log:
        for j in range(y.shape[0]):
            s += g[j]
        for j in range(y.shape[0]):
            o[j] = g[j] - fexp(y[j]) * s
    else:
        for j in range(y.shape[0]):
            s += g[j] * y[j]
        for j in range(y.shape[0]):
            o[j] = g[j] * y[j] - y[j] * s


@nb.njit(**JIT)
def _softmax_k(first, step, n_tasks, x, out, log):
    for t in range(first, n_tasks, step):
        lo, hi = _span(t, n_tasks, x.shape[0])
        for i in range(lo, hi):
            _softmax_row(x[i], out[i], log)


@nb.njit(**JIT)
def _softmax_grad_k(first, step, n_tasks, g, y, out, log):
    for t in range(first, n_tasks, step):
        lo, hi = _span(t, n_tasks, y.shape[0])
        for i in range(lo, hi):
            _softmax_grad_row(g[i], y[i], out[i], log)


def softmax(x, log=False):
    """softmax (log=False) or log_softmax (log=True) of x along its last axis."""
    n = x.shape[-1]
    out = np.empty_like(x)
    _run(_softmax_k, _tasks(x.size, x.size // n), "softmax", _rows(x, n), _rows(out, n), log)
    return out


def softmax_grad(g, y, log=False):
    """The VJP of softmax (log_softmax when log) along the last axis, from its output y."""
    n = y.shape[-1]
    out = np.empty_like(y)
    _run(_softmax_grad_k, _tasks(y.size, y.size // n), "softmax", _rows(g, n), _rows(y, n), _rows(out, n),
         log)
    return out


# ----------------------------------------------------------------------------- layer norm
@nb.njit(**JIT)
def _row_stats(row, eps):
    """(mu, r): the row's mean and 1 / sqrt(biased variance + eps), two passes as the reference."""
    nf = typed(row.shape[0], row)
    s = typed(0.0, row)
    for j in range(row.shape[0]):
        s += row[j]
    mu = s / nf
    v = typed(0.0, row)
    for j in range(row.shape[0]):
        c = row[j] - mu
        v += c * c
    return mu, typed(1.0, row) / np.sqrt(v / nf + eps)


@nb.njit(**JIT)
def _layer_norm_row(row, w, b, o, eps):
    mu, r = _row_stats(row, eps)
    if w.shape[0] > 0:
        for j in range(row.shape[0]):
            o[j] = (row[j] - mu) * r * w[j] + b[j]
    else:
        for j in range(row.shape[0]):
            o[j] = (row[j] - mu) * r


@nb.njit(**JIT)
def _layer_norm_grad_x_row(row, g, w, o, eps):
    mu, r = _row_stats(row, eps)
    if w.shape[0] > 0:
        for j in range(row.shape[0]):
            o[j] = g[j] * w[j]  # h = g w, kept in o until the last pass
    else:
        for j in range(row.shape[0]):
            o[j] = g[j]
    s1 = typed(0.0, row)
    s2 = typed(0.0, row)
    for j in range(row.shape[0]):
        s1 += o[j]
        s2 += o[j] * ((row[j] - mu) * r)
    nf = typed(row.shape[0], row)
    m1, m2 = s1 / nf, s2 / nf
    for j in range(row.shape[0]):
        o[j] = r * (o[j] - m1 - ((row[j] - mu) * r) * m2)


@nb.njit(**JIT)
def _add_normalised_row(acc, g, row, eps):
    """acc += g * normalised(row)."""
    mu, r = _row_stats(row, eps)
    for j in range(g.shape[0]):
        acc[j] += g[j] * ((row[j] - mu) * r)


@nb.njit(**JIT)
def _layer_norm_k(first, step, n_tasks, x, w, b, out, eps):
    for t in range(first, n_tasks, step):
        lo, hi = _span(t, n_tasks, x.shape[0])
        for i in range(lo, hi):
            _layer_norm_row(x[i], w, b, out[i], eps)


@nb.njit(**JIT)
def _layer_norm_grad_x_k(first, step, n_tasks, x, g, w, out, eps):
    for t in range(first, n_tasks, step):
        lo, hi = _span(t, n_tasks, x.shape[0])
        for i in range(lo, hi):
            _layer_norm_grad_x_row(x[i], g[i], w, out[i], eps)


@nb.njit(**JIT)
def _layer_norm_grad_w_k(first, step, n_tasks, part, g, x, eps):
    """part[t] = sum over task t's rows of g * normalised(x)."""
    for t in range(first, n_tasks, step):
        lo, hi = _span(t, n_tasks, g.shape[0])
        for i in range(lo, hi):
            _add_normalised_row(part[t], g[i], x[i], eps)


def _none(x):
    return np.empty(0, x.dtype)


def layer_norm(x, n, eps, w=None, b=None):
    """Normalise each row of n trailing elements, then (when w, b are given, flat (n,)) scale and
    shift; reference: normalization._normalize (and * w + b)."""
    out = np.empty_like(x)
    w, b = (_none(x), _none(x)) if w is None else (w, b)
    _run(_layer_norm_k, _tasks(x.size, x.size // n), "layer_norm", _rows(x, n), w, b, _rows(out, n),
         x.dtype.type(eps))
    return out


def layer_norm_grad_x(g, x, n, eps, w=None):
    """dL/dx of layer_norm from g = dL/d out (w: the flat (n,) scale or None)."""
    out = np.empty_like(x)
    _run(_layer_norm_grad_x_k, _tasks(x.size, x.size // n), "layer_norm", _rows(x, n), _rows(g, n),
         _none(x) if w is None else w, _rows(out, n), x.dtype.type(eps))
    return out


def layer_norm_grad_w(g, x, n, eps):
    """sum over rows of g * normalised(x): dL/d weight of layer_norm, flat (n,)."""
    return _partial_sums(_layer_norm_grad_w_k, g, n, _rows(x, n), g.dtype.type(eps))


def _partial_sums(kernel, g, n, *args):
    """Sum over rows by tasks: task t adds its block of rows into part[t] (no races), then the few
    rows of part are added up. ``kernel(first, step, n_tasks, part, g_rows, *args)``."""
    part = np.zeros((_tasks(g.size, g.size // n), n), g.dtype)
    _run(kernel, part.shape[0], "layer_norm", part, _rows(g, n), *args)
    return part.sum(axis=0)
