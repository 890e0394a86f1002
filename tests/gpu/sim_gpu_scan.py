"""The GPU chunked linear scan and the selective and decay scans under numba's CUDA simulator (run by
test_gpu_kernels_sim.py in a child process with NUMBA_ENABLE_CUDASIM=1): the scan against the
sequential loop, each scan's forward against its recurrence written as a loop from the formula, its
gradients against central differences in float64 (random directions and cotangent) and, one by one,
against the CPU scan kernels.
Sizes cross the 64-step chunk boundary and are not multiples of the 32-row tile."""
import os

import numpy as np
import pytest

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("run through test_gpu_kernels_sim.py (needs NUMBA_ENABLE_CUDASIM=1 before numba loads)",
                allow_module_level=True)

from itnet_np.gpu.linear_scan import linear_scan
from itnet_np.gpu.selective_scan import selective_backward, selective_forward


def _loop_scan(a, u, reverse):
    h, acc = np.zeros_like(u), np.zeros(u.shape[1], u.dtype)
    for t in (range(len(u) - 1, -1, -1) if reverse else range(len(u))):
        acc = a[t] * acc + u[t]
        h[t] = acc
    return h


@pytest.mark.parametrize("dtype", [np.float64, np.complex128, np.float32])
@pytest.mark.parametrize("reverse", [False, True])
def test_linear_scan_matches_the_sequential_loop(dtype, reverse):
    rng = np.random.default_rng(0)
    n, rows = 150, 37
    a = rng.uniform(0.5, 1.05, (n, rows))
    u = rng.standard_normal((n, rows))
    if dtype == np.complex128:
        a = a * np.exp(1j * rng.uniform(-1, 1, (n, rows)))
        u = u + 1j * rng.standard_normal((n, rows))
    a, u = a.astype(dtype), u.astype(dtype)
    want = _loop_scan(a.astype(np.complex128), u.astype(np.complex128), reverse)
    got = linear_scan(a, u, reverse)
    assert got.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())


def _selective_loop(loga, Bm, Cm, v, strict):
    """y from the module formula, one step at a time."""
    B, H, N, S = loga.shape
    y = np.zeros(v.shape)
    for b in range(B):
        for h in range(H):
            state = np.zeros((S, v.shape[3]))
            for t in range(N):
                u = np.outer(Bm[b, t], v[b, h, t])
                carried = np.exp(loga[b, h, t])[:, None] * state
                state = carried + u
                y[b, h, t] = Cm[b, t] @ (carried + (0 if strict else 1) * u)
    return y


def _inputs(rng, B=1, H=2, N=70, S=3, d=2):
    return [-rng.uniform(0.01, 0.5, (B, H, N, S)), rng.standard_normal((B, N, S)),
            rng.standard_normal((B, N, S)), rng.standard_normal((B, H, N, d))]


@pytest.mark.parametrize("strict", [False, True])
def test_selective_scan_forward_and_gradients(strict):
    rng = np.random.default_rng(1 + strict)
    args = _inputs(rng)
    y = selective_forward(*args, strict)
    np.testing.assert_allclose(y, _selective_loop(*args, strict), rtol=1e-11, atol=1e-12)
    gy = rng.standard_normal(y.shape)
    grads = selective_backward(*args, gy, strict)
    eps = 1e-6
    for trial in range(2):
        dirs = [rng.standard_normal(x.shape) for x in args]
        plus = selective_forward(*[x + eps * e for x, e in zip(args, dirs)], strict)
        minus = selective_forward(*[x - eps * e for x, e in zip(args, dirs)], strict)
        numeric = np.sum(gy * (plus - minus)) / (2 * eps)
        analytic = sum(np.sum(g * e) for g, e in zip(grads, dirs))
        assert abs(analytic - numeric) <= 1e-6 * (1 + abs(numeric)), (trial, analytic, numeric)
    from itnet_np.transform.fused.scan_numba import selective_backward as cpu_backward
    for g, want, x in zip(grads, cpu_backward(*args, gy, strict), args):   # each gradient, by name
        assert g.shape == x.shape
        np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-11)


def _decay_loop(v, log_rate, coef, log_mod, angle, coef_re, coef_im, strict):
    """y from DecayKernel's recurrence, one step at a time, in complex arithmetic."""
    keep = 0 if strict else 1
    mu = np.concatenate([np.exp(log_rate), np.exp(log_mod) * np.exp(1j * angle)], axis=1)
    c = np.concatenate([coef, 2 * (coef_re + 1j * coef_im)], axis=1)
    B, H, N, d = v.shape
    y = np.zeros(v.shape)
    for b in range(B):
        for h in range(H):
            z = np.zeros((mu.shape[1], d), complex)
            for t in range(N):
                carried = mu[h][:, None] * z
                z = carried + v[b, h, t]
                y[b, h, t] = (c[h][:, None] * (carried + keep * v[b, h, t])).real.sum(0)
    return y


@pytest.mark.parametrize("strict, nr, nc", [(False, 2, 2), (True, 1, 3), (False, 0, 2), (True, 2, 0)])
def test_decay_scan_forward_and_gradients(strict, nr, nc):
    from itnet_np.gpu.decay_scan import decay_backward, decay_forward

    from itnet_np.transform.fused.scan_numba import decay_backward as cpu_backward
    rng = np.random.default_rng(10 * nr + nc)
    H = 2
    args = [rng.standard_normal((1, H, 70, 3)), -rng.uniform(0.05, 0.5, (H, nr)), rng.standard_normal((H, nr)),
            -rng.uniform(0.05, 0.5, (H, nc)), rng.uniform(-1, 1, (H, nc)), rng.standard_normal((H, nc)),
            rng.standard_normal((H, nc))]
    y = decay_forward(*args, strict)
    np.testing.assert_allclose(y, _decay_loop(*args, strict), rtol=1e-11, atol=1e-12)
    gy = rng.standard_normal(y.shape)
    grads = decay_backward(*args, gy, strict)
    eps = 1e-6
    for trial in range(2):
        dirs = [rng.standard_normal(x.shape) for x in args]
        plus = decay_forward(*[x + eps * e for x, e in zip(args, dirs)], strict)
        minus = decay_forward(*[x - eps * e for x, e in zip(args, dirs)], strict)
        numeric = np.sum(gy * (plus - minus)) / (2 * eps)
        analytic = sum(np.sum(g * e) for g, e in zip(grads, dirs))
        assert abs(analytic - numeric) <= 1e-6 * (1 + abs(numeric)), (trial, analytic, numeric)
    for g, want, x in zip(grads, cpu_backward(*args, gy, strict), args):
        assert g.shape == x.shape and g.dtype == x.dtype
        np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-11)
