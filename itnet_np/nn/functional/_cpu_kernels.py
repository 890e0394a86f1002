"""Fused rowwise and elementwise CPU kernels (Numba) for the raw fast paths of nn.functional.

Each kernel does in one pass over memory what its NumPy reference does in several, on
numba.get_num_threads() threads (``run_tasks``: nogil kernels on a small Python thread pool, each
task a contiguous block of rows), or on the calling thread below ``PARALLEL_WORK``. Every
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

exp is ``fexp`` (itnet_np/_numba.py): at most 1 ulp from libm in the normal range, results
below the smallest normal flushed to 0; a softmax row whose max is not finite (+inf, -inf, NaN) goes
through libm's exp with the reference's shift of 0, so NaN and inf propagate exactly as in NumPy.
"""
import math

import numba as nb
import numpy as np

from ..._numba import JIT, announce, fexp, run_tasks, typed

_A = 2.0 * math.sqrt(2.0 / math.pi)  # z = x (A + B x^2) = 2u, u the tanh-GELU argument
_B = _A * 0.044715


@nb.njit(inline="always", **JIT)
def _span(t, n_tasks, n):
    """Rows [lo, hi) of task t when n rows are split into n_tasks contiguous blocks."""
    return t * n // n_tasks, (t + 1) * n // n_tasks


# Below PARALLEL_WORK a kernel runs on the calling thread alone: handing tasks to the pool costs
# 30 to 130 µs on this 2-core machine (more under load). Work = elements x a rough cost per element:
# EXP for the kernels with an exp per element (GELU, softmax: about 1 ms per 10^6 elements on one
# thread, which a second thread nearly halves when the machine is idle), 1 for the memory-bound ones
# (softmax VJP, layer norm: 0.1 to 0.25 ms per 10^6, where the pool was a loss even at 10^6).
PARALLEL_WORK = 1 << 21
EXP = 4


def _tasks(size, rows, cost=1):
    """How many tasks: one per thread (at most one per row) from PARALLEL_WORK on, else 1."""
    return 1 if size * cost < PARALLEL_WORK else max(1, min(nb.get_num_threads(), rows))


def _run(kernel, tasks, family, *args):
    """``kernel(first, step, tasks, *args)``: on the pool, or directly on this thread for one task
    (no pool hand-off for a single task)."""
    if tasks == 1:
        announce(family, kernel, (0, 1, 1) + args)
        kernel(0, 1, 1, *args)
    else:
        run_tasks(kernel, tasks, *args, family=family)


def _rows(a, n):
    return a.reshape(a.size // n, n)


# Each kernel is a task driver (rows [lo, hi) of task t) calling a separately compiled function on
# that block: LLVM vectorises its simple loops, where the same loops nested inside the driver came
# out 1.5 to 2x slower, and one call per block instead of one per row halved the time of the
# row kernels (measured).

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
    _run(_gelu_tanh_k, _tasks(x.size, x.size, EXP), "gelu", x.reshape(-1), out.reshape(-1))
    return out


def gelu_tanh_grad(g, x):
    """g * d gelu_tanh(x) / dx; reference: activations._gelu_tanh_grad_raw."""
    out = np.empty_like(x)
    _run(_gelu_tanh_grad_k, _tasks(x.size, x.size, EXP), "gelu", g.reshape(-1), x.reshape(-1),
         out.reshape(-1))
    return out


# ----------------------------------------------------------------------------- softmax, log_softmax
@nb.njit(**JIT)
def _softmax_block(x, out, log):
    for i in range(x.shape[0]):
        m = x[i, 0]
        for j in range(1, x.shape[1]):
            m = max(m, x[i, j])  # a NaN may be skipped here: it still turns the sum, so the row, into NaN
        s = typed(0.0, x)
        if math.isfinite(m):
            for j in range(x.shape[1]):
                e = fexp(x[i, j] - m)
                out[i, j] = e
                s += e
        else:  # the reference's shift of 0 and libm's exp: inf and NaN propagate as in NumPy
            m = typed(0.0, x)
            for j in range(x.shape[1]):
                e = math.exp(x[i, j])
                out[i, j] = e
                s += e
        if log:
            ls = math.log(s)
            for j in range(x.shape[1]):
                out[i, j] = (x[i, j] - m) - ls
        else:
            for j in range(x.shape[1]):
                out[i, j] = out[i, j] / s


@nb.njit(**JIT)
def _softmax_grad_block(g, y, out, log):
    for i in range(y.shape[0]):
        s = typed(0.0, y)
        if log:
            for j in range(y.shape[1]):
                s += g[i, j]
            for j in range(y.shape[1]):
                out[i, j] = g[i, j] - fexp(y[i, j]) * s
        else:
            for j in range(y.shape[1]):
                s += g[i, j] * y[i, j]
            for j in range(y.shape[1]):
                out[i, j] = g[i, j] * y[i, j] - y[i, j] * s


@nb.njit(**JIT)
def _softmax_k(first, step, n_tasks, x, out, log):
    for t in range(first, n_tasks, step):
        lo, hi = _span(t, n_tasks, x.shape[0])
        _softmax_block(x[lo:hi], out[lo:hi], log)


@nb.njit(**JIT)
def _softmax_grad_k(first, step, n_tasks, g, y, out, log):
    for t in range(first, n_tasks, step):
        lo, hi = _span(t, n_tasks, y.shape[0])
        _softmax_grad_block(g[lo:hi], y[lo:hi], out[lo:hi], log)


def softmax(x, log=False):
    """softmax (log=False) or log_softmax (log=True) of x along its last axis."""
    n = x.shape[-1]
    out = np.empty_like(x)
    _run(_softmax_k, _tasks(x.size, x.size // n, EXP), "softmax", _rows(x, n), _rows(out, n), log)
    return out


def softmax_grad(g, y, log=False):
    """The VJP of softmax (log_softmax when log) along the last axis, from its output y."""
    n = y.shape[-1]
    out = np.empty_like(y)
    _run(_softmax_grad_k, _tasks(y.size, y.size // n, EXP if log else 1), "softmax", _rows(g, n),
         _rows(y, n), _rows(out, n), log)
    return out


# ----------------------------------------------------------------------------- layer norm
@nb.njit(inline="always", **JIT)
def _row_stats(x, i, eps):
    """(mu, r) of row i: its mean and 1 / sqrt(biased variance + eps), two passes as the reference."""
    nf = typed(x.shape[1], x)
    s = typed(0.0, x)
    for j in range(x.shape[1]):
        s += x[i, j]
    mu = s / nf
    v = typed(0.0, x)
    for j in range(x.shape[1]):
        c = x[i, j] - mu
        v += c * c
    return mu, typed(1.0, x) / np.sqrt(v / nf + eps)


@nb.njit(**JIT)
def _layer_norm_block(x, w, b, out, eps):
    for i in range(x.shape[0]):
        mu, r = _row_stats(x, i, eps)
        if w.shape[0] > 0:
            for j in range(x.shape[1]):
                out[i, j] = (x[i, j] - mu) * r * w[j] + b[j]
        else:
            for j in range(x.shape[1]):
                out[i, j] = (x[i, j] - mu) * r


@nb.njit(**JIT)
def _layer_norm_grad_x_block(x, g, w, out, eps):
    nf = typed(x.shape[1], x)
    for i in range(x.shape[0]):
        mu, r = _row_stats(x, i, eps)
        if w.shape[0] > 0:
            for j in range(x.shape[1]):
                out[i, j] = g[i, j] * w[j]  # h = g w, kept in out until the last pass
        else:
            for j in range(x.shape[1]):
                out[i, j] = g[i, j]
        s1 = typed(0.0, x)
        s2 = typed(0.0, x)
        for j in range(x.shape[1]):
            s1 += out[i, j]
            s2 += out[i, j] * ((x[i, j] - mu) * r)
        m1, m2 = s1 / nf, s2 / nf
        for j in range(x.shape[1]):
            out[i, j] = r * (out[i, j] - m1 - ((x[i, j] - mu) * r) * m2)


@nb.njit(**JIT)
def _layer_norm_grad_w_block(acc, g, x, eps):
    """acc += sum over the rows of g * normalised(x)."""
    for i in range(x.shape[0]):
        mu, r = _row_stats(x, i, eps)
        for j in range(x.shape[1]):
            acc[j] += g[i, j] * ((x[i, j] - mu) * r)


@nb.njit(**JIT)
def _layer_norm_k(first, step, n_tasks, x, w, b, out, eps):
    for t in range(first, n_tasks, step):
        lo, hi = _span(t, n_tasks, x.shape[0])
        _layer_norm_block(x[lo:hi], w, b, out[lo:hi], eps)


@nb.njit(**JIT)
def _layer_norm_grad_x_k(first, step, n_tasks, x, g, w, out, eps):
    for t in range(first, n_tasks, step):
        lo, hi = _span(t, n_tasks, x.shape[0])
        _layer_norm_grad_x_block(x[lo:hi], g[lo:hi], w, out[lo:hi], eps)


@nb.njit(**JIT)
def _layer_norm_grad_w_k(first, step, n_tasks, part, g, x, eps):
    """part[t] = sum over task t's rows of g * normalised(x)."""
    for t in range(first, n_tasks, step):
        lo, hi = _span(t, n_tasks, g.shape[0])
        _layer_norm_grad_w_block(part[t], g[lo:hi], x[lo:hi], eps)


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
