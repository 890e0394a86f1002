"""No allocation of N x M elements on a fused path (issue 8): the peak traced allocation of a fused
IntegralTransform call is O(N d), measured with tracemalloc (NumPy's allocations are traced; Numba's
own scratch inside the kernels is not, and is O(tile) anyway).

Budget, in units of one (N, d) array of the dtype, U = N d itemsize, for B = H = 1, Cin = Cout = d:
the forward holds x, q, k, v, the kernel's padded / tile-transposed copies of q, k, v, out, the merged
heads and y: about 6 U at once (measured 6.1), so 8 U. Forward plus backward adds dout, dq, the
per-thread copies of dk and dv (2 threads here), and the gradients of q, k, v, x: about 13 U
(measured 13.2), so 16 U. A single N x N bool mask (the support as a dense matrix, as the operator
built before) is N^2 bytes = 16 U at N = 4096, d = 64, and the (N, N, 1) offsets it came from 64 U,
so either breaks the budget. The comparison with N^2 bytes is asserted too. A radius support on a
2-D point cloud (CSR neighbour lists, O(N k)) has its own budget below.
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


@pytest.mark.parametrize("kind", ["dot", "mlp"])
@pytest.mark.parametrize("backward", [False, True])
def test_radius_on_a_2d_cloud_allocates_o_nk_plus_nd(kind, backward, two_threads):
    """A radius support on a 2-D point cloud (about k = 32 neighbours per point) goes as CSR
    neighbour lists: besides the U-sized arrays above, the lists cost O(nnz), nnz = N k: the k-d tree's
    query result (Python lists, about 36 bytes per pair, freed once the CSR is built), the CSR
    indices and, in the backward, the transposed CSR (8 bytes per pair each). Budget: 8 U / 16 U plus
    48 bytes per listed pair (measured 10.6 to 12.2 U forward, 12.5 to 15.4 U with the backward,
    11 to 16 MB; the points are permuted into cell order first, locality.py),
    and at most a quarter of one N x M array of the dtype (67 MB here)."""
    N, d, dtype = 4096, 64, np.float32
    rng = np.random.default_rng(4)
    positions = rng.uniform(0, np.sqrt(N), (N, 2)).astype(dtype)          # unit density
    radius = float(np.sqrt(32 / np.pi))                                  # pi r^2 = 32 points per ball
    kernel = DotProductKernel(d, heads=1, rng=0, dtype=dtype) if kind == "dot" else \
        MLPKernel(d, heads=1, hidden=16, inputs=("dp", "fi", "fj"), position_dim=2, rng=0, dtype=dtype)
    layer = IntegralTransform(d, d, kernel, normalization="softmax", radius=radius, backend="numba", rng=1,
                              dtype=dtype)
    x = rng.standard_normal((1, N, d)).astype(dtype)
    nnz = layer.support.plan(positions[None], positions[None]).neighbours().indices.size
    assert 25 * N < nnz < 40 * N
    peak = _peak(layer, x, backward, positions)
    unit = N * d * x.itemsize
    assert peak < (16 if backward else 8) * unit + 48 * nnz, (peak / unit, peak / nnz)
    assert peak < N * N * x.itemsize / 4, peak / (N * N * x.itemsize)
