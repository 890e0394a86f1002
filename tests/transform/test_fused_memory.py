"""No allocation of N x M elements on a fused path (issue 8): the peak traced allocation of a fused
IntegralTransform call is O(N d), measured with tracemalloc (NumPy's allocations are traced; Numba's
own scratch inside the kernels is not, and is O(tile) anyway).

Budget, in units of one (N, d) array of the dtype, U = N d itemsize, for B = H = 1, Cin = Cout = d:
the forward holds x, q, k, v, the kernel's padded / tile-transposed copies of q, k, v, out, the merged
heads and y: about 6 U at once (measured 6.1), so 8 U. Forward plus backward adds dout, dq, the
per-thread copies of dk and dv (2 threads here), and the gradients of q, k, v, x: about 13 U
(measured 13.2), so 16 U. A single N x N bool mask (the support as a dense matrix, as the operator
built before) is N^2 bytes = 16 U at N = 4096, d = 64, and the (N, N, 1) offsets it came from 64 U,
so either breaks the budget. The comparison with N^2 bytes is asserted too.
"""
import tracemalloc

import numpy as np
import pytest

import itnet_np as itn
from itnet_np.transform import DotProductKernel, IntegralTransform, MLPKernel

numba = pytest.importorskip("numba")


@pytest.fixture
def two_threads():
    """Fix the thread count (the backward keeps one copy of dk, dv per thread)."""
    before = numba.get_num_threads()
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    yield numba.get_num_threads()
    numba.set_num_threads(before)


def _peak(layer, x, backward, positions=None):
    """Peak traced bytes of one call (warm: compiled on a short prefix first)."""
    small = itn.Tensor(x[:, :256], requires_grad=backward)
    warm = layer(small, positions=None if positions is None else positions[:256])
    (warm.sum().backward() if backward else None)
    xt = itn.Tensor(x, requires_grad=backward)
    tracemalloc.start()
    try:
        y = layer(xt, positions=positions)
        if backward:
            y.sum().backward()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.isfinite(y.data).all()
    return peak


@pytest.mark.parametrize("support", [{"support": "causal"}, {"window": 64}, {"radius": 64.5},
                                     {"support": "causal", "window": 100}, {"support": "strict_causal"},
                                     {"support": "causal", "positions": "sorted"}])
@pytest.mark.parametrize("backward", [False, True])
def test_dot_product_fused_path_allocates_o_n_d(support, backward, two_threads):
    N, d, dtype = 4096, 64, np.float32
    support = dict(support)
    positions = None                                   # the index grid, or sorted points off it
    if support.pop("positions", None) == "sorted":
        positions = np.sort(np.random.default_rng(4).uniform(0, N, (N, 1)), axis=0).astype(dtype)
    layer = IntegralTransform(d, d, DotProductKernel(d, heads=1, rng=0, dtype=dtype), normalization="softmax",
                              backend="numba", rng=1, dtype=dtype, **support)
    x = np.random.default_rng(2).standard_normal((1, N, d)).astype(dtype)
    peak = _peak(layer, x, backward, positions)
    unit = N * d * x.itemsize
    assert peak < (16 if backward else 8) * unit, peak / unit
    assert peak < N * N, peak / (N * N)


@pytest.mark.parametrize("backward", [False, True])
def test_mlp_fused_path_allocates_o_n_d(backward, two_threads):
    """The MLP kernel (hidden 16, one head). Besides the U-sized arrays above it
    holds the per-point factors a, b (N, K) and x, y (N, R), R < d, about 1 U more: budget 10 U / 18 U."""
    N, d, dtype = 4096, 64, np.float32
    kernel = MLPKernel(d, heads=1, hidden=16, inputs=("dp", "fi", "fj"), position_dim=1, rng=0, dtype=dtype)
    layer = IntegralTransform(d, d, kernel, normalization="softmax", support="causal", backend="numba",
                              rng=1, dtype=dtype)
    x = np.random.default_rng(3).standard_normal((1, N, d)).astype(dtype)
    peak = _peak(layer, x, backward)
    unit = N * d * x.itemsize
    assert peak < (18 if backward else 10) * unit, peak / unit
    assert peak < N * N, peak / (N * N)
