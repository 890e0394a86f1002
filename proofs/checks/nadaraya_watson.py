"""Suite checks for :mod:`itnet_np.proofs.nadaraya_watson`: the Gaussian smoother with key-norm
weights equals softmax attention."""
import numpy as np

from itnet_np.verify import Measurement, directional_gradient_error, max_abs, reduction

from .. import reference as R
from ..nadaraya_watson import attention_as_nadaraya_watson


@reduction("attention = Nadaraya–Watson")
def _verify_nadaraya_watson(rng):
    """Gaussian NW smoother (sites k_j, weights e^{tau|k_j|^2/2}, 'sum') == softmax(tau q.k) v, tau learnable."""
    B, L, S, d, dv = (int(rng.integers(1, n)) for n in (3, 6, 6, 4, 4))
    args = [rng.uniform(-1.5, 1.5, s) for s in ((B, L, d), (B, S, d), (B, S, dv))] + [np.array(rng.uniform(0.1, 1.5))]

    def itnet(q, k, v, tau):
        return attention_as_nadaraya_watson(d, dv, tau=tau)(q, k, v)

    def ref(q, k, v, tau):
        return R.sdpa_ref(q, k, v, scale=float(tau))
    return Measurement(forward=max_abs(itnet(*args), ref(*args)),
                       gradient=directional_gradient_error(itnet, ref, args, rng))
