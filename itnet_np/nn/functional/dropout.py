"""Inverted dropout: zero each element with probability p, scale the survivors by 1 / (1 - p).

    out = x * m / (1 - p),   m_i ~ Bernoulli(1 - p) independently,

so E[out] = x and evaluation (training=False) is the identity. The mask is a constant; the
gradient is g * m / (1 - p), through the multiply op.
"""
import numbers

from ...autograd.backend import default_rng, device_of, rng_device
from ...autograd.ops._util import raw
from ...errors import ConfigError, DeviceError


def dropout(x, p=0.5, training=True, rng=None):
    """Inverted dropout with drop probability ``p`` in [0, 1] (identity when not training or p = 0).

    ``rng``: a numpy (or cupy) Generator for reproducible masks; a fresh one when None.
    """
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
        raise ConfigError(f"dropout: p must be a probability in [0, 1], got {p!r}")
    if rng is not None and not hasattr(rng, "random"):
        raise ConfigError(f"dropout: rng must be a numpy Generator (np.random.default_rng(seed)), "
                          f"got {type(rng).__name__}")
    if not training or p == 0:
        return x
    p = float(p)  # a numpy scalar p would upcast a float32 mask under NEP 50
    data = raw(x)
    if p == 1:
        return x * 0
    if rng is None:
        rng = default_rng(None, device_of(data))
    if rng_device(rng) != device_of(data):      # no hidden host/device copy of the mask
        raise DeviceError(f"dropout: the data live on {device_of(data)} but rng is a "
                          f"{rng_device(rng)} generator; pass a generator of the data's device "
                          "(itnet_np.autograd.backend.default_rng(seed, device)) or move the module "
                          "with .to(device), which moves its generator")
    keep = rng.random(data.shape) >= p
    return x * (keep.astype(data.dtype) * (1.0 / (1.0 - p)))
