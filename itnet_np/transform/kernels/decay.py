"""DecayKernel: a sum of decaying (and oscillating) exponentials, the kernel of a diagonal SSM.

For 1-D positions and k = p_i - p_j (query minus source; an integer lag on a grid):

    s^h_ij = 1[k >= 0] ( sum_n c_hn lam_hn^k  +  sum_m 2 Re(g_hm mu_hm^k) )

Real modes lam = exp(log_rate) > 0 with coefficients c. Complex modes stand for a conjugate pair
(g mu^k + conj(g mu)^k), written in real arithmetic with mu = r e^{i theta}, r = exp(log_modulus):

    2 Re(g mu^k) = 2 r^k (g_re cos(k theta) - g_im sin(k theta)) = 2 |g| r^k cos(k theta + arg g).

This is the convolution kernel C diag(A)^k B of a diagonal linear SSM (S4D) with c = C B (per mode);
``strict=True`` drops lag 0 (a strictly causal kernel). A negative real eigenvalue lam < 0 is a
complex mode with theta = pi and coefficient c / 2. Powers are exp(k log r) with the exponent of the
masked (k < 0) pairs set to 0 before exp, so nothing overflows there.
"""
import numpy as np

from ...autograd import ops
from ...autograd.ops._util import raw
from ...errors import ConfigError
from .._config import flag, integer
from .base import Kernel, Projection, generator, new_parameter


class DecayKernel(Kernel):
    """``DecayKernel(heads=1, real_modes=1, complex_modes=0, strict=False, rng=None, dtype=None)``.

    Parameters (H, n_real): ``coef``, ``log_rate``; (H, n_complex): ``coef_re``, ``coef_im``,
    ``log_modulus``, ``angle``. Random init: rates/moduli in [0.5, 0.95], angles in [0, pi].
    Use :meth:`from_modes` to set given eigenvalues and coefficients.
    """

    position_dim = 1

    def __init__(self, heads=1, real_modes=1, complex_modes=0, strict=False, rng=None, dtype=None):
        super().__init__(heads)
        name = "DecayKernel"
        nr, nc = integer(name, "real_modes", real_modes, 0), integer(name, "complex_modes", complex_modes, 0)
        if nr + nc < 1:
            raise ConfigError(f"{name}: needs at least one mode, got real_modes={real_modes}, "
                              f"complex_modes={complex_modes}")
        rng = generator(rng, name)
        H = self.heads
        self.strict = flag(name, "strict", strict)
        self.real_modes, self.complex_modes = nr, nc
        unit = 1.0 / np.sqrt(nr + nc)
        if nr:
            self.coef = new_parameter((H, nr), rng, dtype, scale=unit)
            self.log_rate = new_parameter((H, nr), rng, dtype, value=np.log(rng.uniform(0.5, 0.95, (H, nr))))
        if nc:
            self.coef_re = new_parameter((H, nc), rng, dtype, scale=unit)
            self.coef_im = new_parameter((H, nc), rng, dtype, scale=unit)
            self.log_modulus = new_parameter((H, nc), rng, dtype, value=np.log(rng.uniform(0.5, 0.95, (H, nc))))
            self.angle = new_parameter((H, nc), rng, dtype, value=rng.uniform(0, np.pi, (H, nc)))

    @classmethod
    def from_modes(cls, real=None, complex=None, strict=False, dtype=None):
        """Kernel with given modes: ``real=(lam, c)`` with lam > 0 real, ``complex=(mu, g)`` complex,
        each array (H, n); each complex mode adds 2 Re(g mu^k) (itself plus its conjugate)."""
        shapes = [np.shape(m[0]) for m in (real, complex) if m is not None]
        if not shapes or any(len(s) != 2 for s in shapes) or len({s[0] for s in shapes}) != 1:
            raise ConfigError(f"DecayKernel.from_modes: give (H, n) arrays, got shapes {shapes}")
        nr = 0 if real is None else shapes[0][1]
        nc = 0 if complex is None else shapes[-1][1]
        k = cls(shapes[0][0], nr, nc, strict=strict, dtype=dtype)
        if real is not None:
            lam = np.asarray(real[0], dtype=np.float64)
            if np.any(lam <= 0):
                raise ConfigError("DecayKernel.from_modes: real eigenvalues must be > 0 (pass a negative "
                                  "one as a complex mode with angle pi and half the coefficient)")
            k.log_rate.data[...] = np.log(lam)
            k.coef.data[...] = np.asarray(real[1], dtype=np.float64)
        if complex is not None:
            mu, g = np.asarray(complex[0], dtype=np.complex128), np.asarray(complex[1], dtype=np.complex128)
            k.log_modulus.data[...] = np.log(np.abs(mu))
            k.angle.data[...] = np.angle(mu)
            k.coef_re.data[...] = g.real
            k.coef_im.data[...] = g.imag
        return k

    def extra_repr(self):
        return f"heads={self.heads}, real_modes={self.real_modes}, complex_modes={self.complex_modes}, " \
               f"strict={self.strict}"

    def project(self, query, source):
        for name, p in (("query", query.positions), ("source", source.positions)):
            if p.shape[-1] != 1:
                raise ConfigError(f"DecayKernel: {name} positions must be 1-D (D = 1), got D = {p.shape[-1]}")
        return Projection({"p": query.positions}, {"p": source.positions})

    def scores(self, proj):
        lag = ops.expand_dims(proj.query["p"][..., 0], 2) - ops.expand_dims(proj.source["p"][..., 0], 1)
        keep = raw(lag) > 0 if self.strict else raw(lag) >= 0
        lag = ops.where(keep, lag, 0.0)[:, None, :, :, None]        # (1|B, 1, N, M, 1)
        total = 0.0
        if self.real_modes:
            power = ops.exp(lag * self.log_rate[None, :, None, None, :])
            total = total + ops.einsum("bhnmr,hr->bhnm", power, self.coef)
        if self.complex_modes:
            radius = ops.exp(lag * self.log_modulus[None, :, None, None, :])
            phase = lag * self.angle[None, :, None, None, :]
            total = total + 2.0 * (ops.einsum("bhnmr,hr->bhnm", radius * ops.cos(phase), self.coef_re)
                                   - ops.einsum("bhnmr,hr->bhnm", radius * ops.sin(phase), self.coef_im))
        return ops.where(keep[:, None], total, 0.0)
