"""The selective (Mamba S6 / SSD) scan on the GPU: the recurrence of SelectiveKernel through the chunked
linear scan (linear_scan.py), the per-step products and the reductions over the state as array ops of
the data's module (CuPy on a device, NumPy under the simulator). Same arguments and results as the CPU
kernels ``itnet_np.transform.fused.scan_numba.selective_forward / selective_backward`` (the reference
it must match; formulas there). Per (b, h), with a_t = exp(loga_t) (S,), u_t = B_t v_t^T (S, d),
keep = 0 when strictly causal, else 1:

    H_t = a_t H_{t-1} + u_t,   O_t = H_t - (1 - keep) u_t,   y_t = C_t^T O_t
    backward: z_t = a_t z_{t+1} + a_t G_t (reverse scan), G_t = C_t gy_t^T, lam_t = z_{t+1}, R_t = lam_t + G_t,
    gv_t = B_t^T (lam_t + keep G_t),  gB_t = sum_{h,k} (lam_t + keep G_t) v_t,
    gC_t = sum_{h,k} (a_t H_{t-1} + keep u_t) gy_t,  gloga_t = a_t sum_k H_{t-1} R_t.

Memory O(B H N S d) (the states), nothing N x N.
"""
from .linear_scan import linear_scan


def _xp(a):
    from itnet_np.autograd.backend import xp_of
    return xp_of(a)


def _scan(xp, a, u, reverse=False):
    """linear_scan over the time axis 2 of (B, H, N, S, d) arrays (a broadcast over d)."""
    shape = u.shape
    a = xp.broadcast_to(a[..., None], shape)
    tm = (2, 0, 1, 3, 4)
    h = linear_scan(a.transpose(tm).reshape(shape[2], -1), u.transpose(tm).reshape(shape[2], -1), reverse)
    return h.reshape((shape[2],) + shape[:2] + shape[3:]).transpose(1, 2, 0, 3, 4)


def _states(xp, loga, Bm, v):
    a = xp.exp(loga)
    u = Bm[:, None, :, :, None] * v[:, :, :, None, :]
    return a, u, _scan(xp, a, u)


def selective_forward(loga, Bm, Cm, v, strict):
    """y (B, H, N, d) for loga (B, H, N, S), Bm, Cm (B, N, S), v (B, H, N, d)."""
    xp = _xp(v)
    _, u, states = _states(xp, loga, Bm, v)
    out = states - u if strict else states
    return xp.einsum("bhnsk,bns->bhnk", out, Cm)


def selective_backward(loga, Bm, Cm, v, gy, strict):
    """(gloga, gB, gC, gv) of selective_forward for the upstream gradient gy (B, H, N, d)."""
    xp = _xp(v)
    a, u, states = _states(xp, loga, Bm, v)
    prev = xp.zeros_like(states)
    prev[:, :, 1:] = states[:, :, :-1]
    G = Cm[:, None, :, :, None] * gy[:, :, :, None, :]
    z = _scan(xp, a, a[..., None] * G, reverse=True)
    lam = xp.zeros_like(z)
    lam[:, :, :-1] = z[:, :, 1:]
    du = lam if strict else lam + G
    gv = xp.einsum("bhnsk,bns->bhnk", du, Bm)
    gB = xp.einsum("bhnsk,bhnk->bns", du, v)
    carried = a[..., None] * prev
    gC = xp.einsum("bhnsk,bhnk->bns", carried if strict else carried + u, gy)
    gloga = a * xp.einsum("bhnsk,bhnsk->bhns", prev, lam + G)
    return gloga, gB, gC, gv
