"""The diagonal-SSM (DecayKernel) scan on the GPU: every mode's recurrence through the chunked linear
scan (linear_scan.py) in complex arithmetic, the mode sums as array ops of the data's module. Same
arguments and results as the CPU kernels ``itnet_np.transform.fused.scan_numba.decay_forward /
decay_backward`` (the reference it must match; formulas there). Real modes lam = exp(log_rate) with
coefficient c, complex modes mu = exp(log_mod) e^{i angle} with g = coef_re + i coef_im, taken together
as modes mu_m with weights c_m (c for real modes, 2 g for complex ones):

    z_t = mu z_{t-1} + v_t,   o_t = z_t - (1 - keep) v_t,   y_t = sum_m Re(c_m o_{t,m})
    backward (adjoints for the real inner product Re(conj(a) b)):
    G_t = conj(c) gy_t,  w_t = conj(mu) w_{t+1} + conj(mu) G_t (reverse scan),  lam_t = w_{t+1},
    gv_t = sum_m Re(lam_t + keep G_t),  g_mu = sum conj(z_{t-1}) (lam_t + G_t),  g_c = sum conj(o_t) gy_t
    then  g_log_rate = lam Re g_mu,  g_log_mod = Re(conj(g_mu) mu),  g_angle = -Im(mu conj(g_mu)),
          g_coef = Re g_c,  g_coef_re = 2 Re g_c,  g_coef_im = 2 Im g_c.
Memory O(B H N modes d), nothing N x N.
"""
from .linear_scan import linear_scan


def _modes(xp, log_rate, coef, log_mod, angle, coef_re, coef_im, complex_dtype):
    """(mu, c) (H, modes) complex: the real modes, then the complex ones."""
    mu = xp.concatenate([xp.exp(log_rate), xp.exp(log_mod) * xp.exp(1j * angle)], axis=1).astype(complex_dtype)
    c = xp.concatenate([coef, 2 * (coef_re + 1j * coef_im)], axis=1).astype(complex_dtype)
    return mu, c


def _scan(a, u, reverse=False):
    """linear_scan over the time axis 2 of (B, H, N, modes, d) arrays."""
    shape = u.shape
    tm = (2, 0, 1, 3, 4)
    h = linear_scan(a.transpose(tm).reshape(shape[2], -1), u.transpose(tm).reshape(shape[2], -1), reverse)
    return h.reshape((shape[2],) + shape[:2] + shape[3:]).transpose(1, 2, 0, 3, 4)


def _setup(v, params):
    from itnet_np.autograd.backend import xp_of
    xp = xp_of(v)
    cdt = xp.complex64 if v.dtype == xp.float32 else xp.complex128
    mu, c = _modes(xp, *params, cdt)
    B, H, N, d = v.shape
    full = (B, H, N, mu.shape[1], d)
    a = xp.broadcast_to(mu[None, :, None, :, None], full)
    u = xp.broadcast_to(v[:, :, :, None, :].astype(cdt), full)
    return xp, mu, c, a, u, _scan(a, u)


def decay_forward(v, log_rate, coef, log_mod, angle, coef_re, coef_im, strict):
    """y (B, H, N, d) for v (B, H, N, d), real modes (H, nr), complex modes (H, nc)."""
    xp, _, c, _, u, z = _setup(v, (log_rate, coef, log_mod, angle, coef_re, coef_im))
    o = z - u if strict else z
    return xp.einsum("bhnmk,hm->bhnk", o, c).real.astype(v.dtype)


def decay_backward(v, log_rate, coef, log_mod, angle, coef_re, coef_im, gy, strict):
    """(gv, glog_rate, gcoef, glog_mod, gangle, gcoef_re, gcoef_im) of decay_forward."""
    xp, mu, c, a, u, z = _setup(v, (log_rate, coef, log_mod, angle, coef_re, coef_im))
    nr = log_rate.shape[1]
    G = xp.conj(c)[None, :, None, :, None] * gy[:, :, :, None, :]
    ca = xp.conj(a)
    w = _scan(ca, ca * G, reverse=True)
    lam = xp.zeros_like(w)
    lam[:, :, :-1] = w[:, :, 1:]
    prev = xp.zeros_like(z)
    prev[:, :, 1:] = z[:, :, :-1]
    du = lam if strict else lam + G
    gv = du.real.sum(3).astype(v.dtype)
    g_mu = xp.einsum("bhnmk,bhnmk->hm", xp.conj(prev), lam + G)
    o = z - u if strict else z
    g_c = xp.einsum("bhnmk,bhnk->hm", xp.conj(o), gy)
    dt = v.dtype
    g_rate = (mu[:, :nr].real * g_mu[:, :nr].real).astype(dt)
    g_mod = (xp.conj(g_mu[:, nr:]) * mu[:, nr:]).real.astype(dt)
    g_angle = (-(mu[:, nr:] * xp.conj(g_mu[:, nr:])).imag).astype(dt)
    return (gv, g_rate, g_c[:, :nr].real.astype(dt), g_mod, g_angle, (2 * g_c[:, nr:].real).astype(dt),
            (2 * g_c[:, nr:].imag).astype(dt))
