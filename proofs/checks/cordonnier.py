"""Suite checks for :mod:`itnet_np.proofs.cordonnier`: the error of the alpha-attention against conv2d
stays under the derived bound."""
from itnet_np.verify import Measurement, directional_gradient_error, max_abs, reduction

from .. import reference as R
from ..cordonnier import conv_as_attention, cordonnier_bound, cordonnier_value_bound

CORDONNIER_ALPHAS = (1.0, 2.0, 3.0, 5.0, 8.0, 12.0, 16.0, 20.0, 25.0, 30.0)


@reduction("Cordonnier conv-as-attention (α bound)")
def _verify_cordonnier(rng):
    """K^2-head attention with score -alpha||delta - Delta_h||^2 -> conv2d: error <= the derived bound at
    every alpha in CORDONNIER_ALPHAS (a violation fails the check); forward = the error at alpha*, the
    smallest integer alpha whose bound is <= 1e-12, so the 1e-10 tolerance is the usual exactness one."""
    kh, kw, groups = int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 3))
    c_in, c_out = groups * int(rng.integers(1, 3)), groups * int(rng.integers(1, 3))
    stride, dilation = int(rng.integers(1, 3)), int(rng.integers(1, 3))
    padding = "same" if stride == 1 and rng.random() < 0.5 else int(rng.integers(0, 3))
    H, W = int(rng.integers(3, 7)) + dilation * (kh - 1), int(rng.integers(3, 7)) + dilation * (kw - 1)
    x, w = rng.standard_normal((2, c_in, H, W)), rng.standard_normal((c_out, c_in // groups, kh, kw))
    b = rng.standard_normal(c_out)
    opts = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    conv = R.conv2d_ref(x, w, b, **opts)
    layer, M = conv_as_attention(w, b, **opts), cordonnier_value_bound(x, w, groups)
    for alpha in CORDONNIER_ALPHAS:
        err, bound = max_abs(layer(x, alpha=alpha), conv), cordonnier_bound(alpha, kh * kw, M)
        if not err <= bound:
            raise AssertionError(f"alpha={alpha}: error {err:.3e} exceeds the bound {bound:.3e}")
    alpha_star = next(a for a in range(1, 800) if cordonnier_bound(a, kh * kw, M) <= 1e-12)

    def itnet(x, w, b):
        return conv_as_attention(w, b, alpha=alpha_star, **opts)(x)
    return Measurement(forward=max_abs(layer(x, alpha=alpha_star), conv),
                       gradient=directional_gradient_error(itnet, lambda x, w, b: R.conv2d_ref(x, w, b, **opts),
                                                           [x, w, b], rng))
