"""Suite checks for :mod:`itnet_np.proofs.mamba`: Mamba's selective scan and Mamba-2's SSD against
their references."""
from itnet_np.verify import Measurement, directional_gradient_error, max_abs, reduction

from ..mamba import selective_scan_as_itnet, ssd_as_itnet
from ..reference import selective_scan_ref, ssd_ref


@reduction("Mamba selective scan")
def _verify_selective_scan(rng):
    """SelectiveKernel transforms == mamba selective_scan_ref (groups, D, z, delta_bias, softplus, real A)."""
    n_batch, dim, N, L = (int(v) for v in rng.integers(1, [2, 4, 3, 10], endpoint=True))
    groups = int(rng.choice([g for g in range(1, dim + 1) if dim % g == 0]))
    softplus = bool(rng.random() < 0.5)
    seq = (n_batch, dim, L)
    delta = rng.uniform(-2.0, 1.0, seq) if softplus else rng.uniform(0.05, 1.0, seq)
    A = -rng.uniform(0.1, 2.0, (dim, N)) if rng.random() < 0.7 else rng.uniform(-1.0, 0.3, (dim, N))
    inputs = [rng.standard_normal(seq), delta, A, rng.standard_normal((n_batch, groups, N, L)),
              rng.standard_normal((n_batch, N, L)), rng.standard_normal(dim), rng.standard_normal(seq),
              0.1 * rng.standard_normal(dim)]

    def run(fn):
        return lambda u, delta, A, B, C, D, z, bias: fn(u, delta, A, B, C, D, z, bias, softplus)
    itnet, reference = run(selective_scan_as_itnet), run(selective_scan_ref)
    return Measurement(forward=max_abs(itnet(*inputs), reference(*inputs)),
                       gradient=directional_gradient_error(itnet, reference, inputs, rng))


@reduction("Mamba-2 SSD")
def _verify_ssd(rng):
    """Per-head selective transforms (unit quadrature) == Mamba-2 SSD Y = (L o C B^T) X."""
    n_batch, L, H, P, N = (int(v) for v in rng.integers(1, [2, 10, 3, 3, 3], endpoint=True))
    inputs = [rng.standard_normal((n_batch, L, H, P)), -rng.uniform(0.0, 1.0, (n_batch, L, H)),
              rng.standard_normal((n_batch, L, H, N)), rng.standard_normal((n_batch, L, H, N))]
    return Measurement(forward=max_abs(ssd_as_itnet(*inputs), ssd_ref(*inputs)),
                       gradient=directional_gradient_error(ssd_as_itnet, ssd_ref, inputs, rng))
