"""Helpers shared by the proof tests in this folder.

Imported as ``from _proof_helpers import ...``: tests/ has no __init__.py, so pytest puts this folder on
sys.path before it imports a test module from it.
"""
import numpy as np
from hypothesis import strategies as st

from itnet_np.autograd.tensor import Tensor
from itnet_np.verify import directional_gradient_error

TOL = {"rtol": 1e-10, "atol": 1e-10}
seeds = st.integers(0, 2**16)


def arr(a):
    """The array of a Tensor, or the array itself (ops on raw arrays return raw arrays)."""
    return a.data if isinstance(a, Tensor) else np.asarray(a)


def close(a, b):
    np.testing.assert_allclose(arr(a), arr(b), **TOL)


def grad_check(itnet_fn, ref_fn, args, seed, eps=1e-6, tol=1e-6):
    """For each argument k: <engine VJP_k(u), v> == d/dt <u, ref(args_k + t v)> by central differences."""
    rng = np.random.default_rng(seed)
    xs = [Tensor(np.asarray(a, dtype=np.float64), requires_grad=True) for a in args]
    y = itnet_fn(*xs)
    u = rng.standard_normal(y.shape)
    (y * u).sum().backward()
    for k, a in enumerate(args):
        v = rng.standard_normal(np.shape(a))
        shift = [np.asarray(b) + (eps * v if i == k else 0) for i, b in enumerate(args)]
        back = [np.asarray(b) - (eps * v if i == k else 0) for i, b in enumerate(args)]
        numeric = float(np.sum(u * (ref_fn(*shift) - ref_fn(*back)))) / (2 * eps)
        analytic = 0.0 if xs[k].grad is None else float(np.sum(xs[k].grad.data * v))
        assert abs(analytic - numeric) <= tol * max(1.0, abs(numeric)), (k, analytic, numeric)


def assert_gradients_match(itnet_fn, ref_fn, inputs, tol=1e-6):
    """All inputs at once: the engine's VJP of ``itnet_fn`` against central differences of ``ref_fn``
    along two random directions (seeds 0 and 1) within ``tol``, and every input receives a finite
    gradient from ``itnet_fn(*inputs).sum()``."""
    for seed in range(2):
        assert directional_gradient_error(itnet_fn, ref_fn, inputs, np.random.default_rng(seed)) < tol
    tensors = [Tensor(a, requires_grad=True) for a in inputs]
    itnet_fn(*tensors).sum().backward()
    assert all(t.grad is not None and np.all(np.isfinite(t.grad.data)) for t in tensors)
