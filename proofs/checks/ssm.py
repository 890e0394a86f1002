"""Suite checks for :mod:`itnet_np.proofs.ssm`: S4D with ZOH and bilinear discretisation against
the recurrence."""
from itnet_np.verify import Measurement, directional_gradient_error, max_abs, reduction

from ..reference import s4d_recurrent_ref
from ..ssm import s4d_as_itnet


def _check_s4d(rng, discretization):
    n_batch, H, N, L = (int(v) for v in rng.integers(1, [3, 4, 4, 12], endpoint=True))
    cplx, conj = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
    shapes = [(n_batch, H, L)] + [(H, N)] * (6 if cplx else 3)
    inputs = [rng.standard_normal(s) for s in shapes] + [rng.standard_normal(H), rng.uniform(0.05, 0.5, H)]
    inputs[1] = -rng.uniform(0.1, 1.5, (H, N))                         # stable real parts of A

    def weights(ws, pair):
        if not cplx:
            return ws[:3]
        return [(ws[k], ws[k + 1]) if pair else ws[k] + 1j * ws[k + 1] for k in (0, 2, 4)]

    def itnet(u, *ws):
        return s4d_as_itnet(*weights(ws, True), ws[-2], ws[-1], discretization, conj)(u)

    def reference(u, *ws):
        return s4d_recurrent_ref(u, *weights(ws, False), ws[-2], ws[-1], discretization, conj)
    return Measurement(forward=max_abs(itnet(*inputs), reference(*inputs)),
                       gradient=directional_gradient_error(itnet, reference, inputs, rng))


@reduction("S4D (ZOH)")
def _verify_s4d_zoh(rng):
    """ITNet DecayKernel layer == S4D recurrence, ZOH, real or complex modes, conjugate pairs or not."""
    return _check_s4d(rng, "zoh")


@reduction("S4D (bilinear)")
def _verify_s4d_bilinear(rng):
    """ITNet DecayKernel layer == S4D recurrence, bilinear, real or complex modes, conjugate pairs or not."""
    return _check_s4d(rng, "bilinear")
