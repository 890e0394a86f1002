"""Raw Numba scans for the recurrence kernels: O(N state) forward, backward by a reverse scan.

Both kernels are causal convolutions with a state, evaluated by the recurrence instead of the dense
N x N scores. With s = 1 when strictly causal (the lag-0 term dropped), else 0:

Selective (Mamba S6 / SSD), per (b, h), state H_t (S, d):

    H_t = a_t * H_{t-1} + u_t,  u_t[n, k] = B_tn v_tk,  a_t[n] = exp(loga_tn)   (loga = A_hn Delta_th)
    O_t = a_t * H_{t-1} + (1 - s) u_t,                  y_tk = sum_n C_tn O_t[n, k]

Products of per-step factors exp(loga_t) replace exp(A (tau_t - tau_s)): only clock differences,
never exp(A tau_t) exp(-A tau_s), so strongly negative A underflows to 0 and never overflows.

Decay (diagonal SSM), per (b, h), a real state x (d,) per real mode lam = exp(log_rate) and a real
2-vector (x, y) per complex mode mu = r e^{i theta}, r = exp(log_modulus) (the rotation-scaling
[[p, -q], [q, p]] with p = r cos theta, q = r sin theta):

    real:    x_t = lam x_{t-1} + v_t,  o_t = lam x_{t-1} + (1 - s) v_t,  y_t += c o_t
    complex: z_t = mu z_{t-1} + v_t,   o_t = mu z_{t-1} + (1 - s) v_t,   y_t += 2 (g_re Re o_t - g_im Im o_t)

Backward (both): with G_t = dL/dO_t and lam_t = dL/dH_t through the future only, going t = N-1..0:
R = lam + G (adjoint of a_t H_{t-1}), dL/du_t = lam + (1 - s) G, dL/da_t = sum H_{t-1} R, and
lam_{t-1} = a_t R. The states H_{t-1} are recomputed per (b, h) (selective) or per mode (decay) into
an (N + 1) x state buffer: memory O(N state), nothing N x N.
"""
import numba as nb
import numpy as np

JIT = {"cache": True, "nogil": True}

__all__ = ["decay_backward", "decay_forward", "selective_backward", "selective_forward"]


@nb.njit(**JIT)
def _selective_states(loga, Bm, v, b, h):
    n, S, d = loga.shape[2], loga.shape[3], v.shape[3]
    hist = np.zeros((n + 1, S, d), v.dtype)
    for t in range(n):
        for i in range(S):
            a = np.exp(loga[b, h, t, i])
            for k in range(d):
                hist[t + 1, i, k] = a * hist[t, i, k] + Bm[b, t, i] * v[b, h, t, k]
    return hist


@nb.njit(**JIT)
def selective_forward(loga, Bm, Cm, v, strict):
    """y (B, H, N, d) for loga (B, H, N, S), Bm, Cm (B, N, S), v (B, H, N, d) (module docstring)."""
    nb_, nh, n, S = loga.shape
    d = v.shape[3]
    keep = 0.0 if strict else 1.0
    out = np.zeros((nb_, nh, n, d), v.dtype)
    state = np.zeros((S, d), v.dtype)
    for b in range(nb_):
        for h in range(nh):
            state[:] = 0
            for t in range(n):
                for i in range(S):
                    a = np.exp(loga[b, h, t, i])
                    bt, c = Bm[b, t, i], Cm[b, t, i]
                    for k in range(d):
                        u = bt * v[b, h, t, k]
                        carried = a * state[i, k]
                        state[i, k] = carried + u
                        out[b, h, t, k] += c * (carried + keep * u)
    return out


@nb.njit(**JIT)
def selective_backward(loga, Bm, Cm, v, gy, strict):
    """(gloga, gB, gC, gv) of selective_forward for the upstream gradient gy (B, H, N, d)."""
    nb_, nh, n, S = loga.shape
    d = v.shape[3]
    keep = 0.0 if strict else 1.0
    gloga = np.zeros_like(loga)
    gB = np.zeros_like(Bm)
    gC = np.zeros_like(Cm)
    gv = np.zeros_like(v)
    lam = np.zeros((S, d), v.dtype)
    for b in range(nb_):
        for h in range(nh):
            hist = _selective_states(loga, Bm, v, b, h)
            lam[:] = 0
            for t in range(n - 1, -1, -1):
                for i in range(S):
                    a = np.exp(loga[b, h, t, i])
                    bt, c = Bm[b, t, i], Cm[b, t, i]
                    acc_a = 0.0
                    acc_b = 0.0
                    acc_c = 0.0
                    for k in range(d):
                        g = c * gy[b, h, t, k]
                        r = lam[i, k] + g
                        du = lam[i, k] + keep * g
                        gv[b, h, t, k] += bt * du
                        acc_b += du * v[b, h, t, k]
                        acc_c += (a * hist[t, i, k] + keep * bt * v[b, h, t, k]) * gy[b, h, t, k]
                        acc_a += hist[t, i, k] * r
                        lam[i, k] = a * r
                    gB[b, t, i] += acc_b
                    gC[b, t, i] += acc_c
                    gloga[b, h, t, i] = a * acc_a
    return gloga, gB, gC, gv


@nb.njit(**JIT)
def decay_forward(v, log_rate, coef, log_mod, angle, coef_re, coef_im, strict):
    """y (B, H, N, d) for v (B, H, N, d), real modes (H, nr), complex modes (H, nc)."""
    nb_, nh, n, d = v.shape
    nr, nc = log_rate.shape[1], log_mod.shape[1]
    keep = 0.0 if strict else 1.0
    out = np.zeros_like(v)
    xr = np.zeros((nr, d), v.dtype)
    xc = np.zeros((nc, d), v.dtype)
    yc = np.zeros((nc, d), v.dtype)
    for b in range(nb_):
        for h in range(nh):
            xr[:] = 0
            xc[:] = 0
            yc[:] = 0
            for t in range(n):
                for m in range(nr):
                    lam, c = np.exp(log_rate[h, m]), coef[h, m]
                    for k in range(d):
                        carried = lam * xr[m, k]
                        xr[m, k] = carried + v[b, h, t, k]
                        out[b, h, t, k] += c * (carried + keep * v[b, h, t, k])
                for m in range(nc):
                    r = np.exp(log_mod[h, m])
                    p, q = r * np.cos(angle[h, m]), r * np.sin(angle[h, m])
                    gre, gim = coef_re[h, m], coef_im[h, m]
                    for k in range(d):
                        mx = p * xc[m, k] - q * yc[m, k]
                        my = q * xc[m, k] + p * yc[m, k]
                        xc[m, k] = mx + v[b, h, t, k]
                        yc[m, k] = my
                        out[b, h, t, k] += 2.0 * (gre * (mx + keep * v[b, h, t, k]) - gim * my)
    return out


@nb.njit(**JIT)
def decay_backward(v, log_rate, coef, log_mod, angle, coef_re, coef_im, gy, strict):
    """(gv, glog_rate, gcoef, glog_mod, gangle, gcoef_re, gcoef_im) of decay_forward."""
    nb_, nh, n, d = v.shape
    nr, nc = log_rate.shape[1], log_mod.shape[1]
    keep = 0.0 if strict else 1.0
    gv = np.zeros_like(v)
    g_rate, g_coef = np.zeros_like(log_rate), np.zeros_like(coef)
    g_mod, g_angle = np.zeros_like(log_mod), np.zeros_like(angle)
    g_re, g_im = np.zeros_like(coef_re), np.zeros_like(coef_im)
    hx = np.zeros((n + 1, d), v.dtype)
    hy = np.zeros((n + 1, d), v.dtype)
    ax = np.zeros(d, v.dtype)
    ay = np.zeros(d, v.dtype)
    for b in range(nb_):
        for h in range(nh):
            for m in range(nr):
                lam, c = np.exp(log_rate[h, m]), coef[h, m]
                for t in range(n):
                    for k in range(d):
                        hx[t + 1, k] = lam * hx[t, k] + v[b, h, t, k]
                ax[:] = 0
                acc_lam = 0.0
                acc_c = 0.0
                for t in range(n - 1, -1, -1):
                    for k in range(d):
                        g = c * gy[b, h, t, k]
                        r = ax[k] + g
                        gv[b, h, t, k] += ax[k] + keep * g
                        acc_c += (lam * hx[t, k] + keep * v[b, h, t, k]) * gy[b, h, t, k]
                        acc_lam += hx[t, k] * r
                        ax[k] = lam * r
                g_rate[h, m] += lam * acc_lam
                g_coef[h, m] += acc_c
            for m in range(nc):
                rad = np.exp(log_mod[h, m])
                p, q = rad * np.cos(angle[h, m]), rad * np.sin(angle[h, m])
                gre, gim = coef_re[h, m], coef_im[h, m]
                for t in range(n):
                    for k in range(d):
                        hx[t + 1, k] = p * hx[t, k] - q * hy[t, k] + v[b, h, t, k]
                        hy[t + 1, k] = q * hx[t, k] + p * hy[t, k]
                ax[:] = 0
                ay[:] = 0
                acc_p = 0.0
                acc_q = 0.0
                acc_re = 0.0
                acc_im = 0.0
                for t in range(n - 1, -1, -1):
                    for k in range(d):
                        x0, y0, gk = hx[t, k], hy[t, k], gy[b, h, t, k]
                        gx, gyy = 2.0 * gre * gk, -2.0 * gim * gk
                        rx, ry = ax[k] + gx, ay[k] + gyy
                        gv[b, h, t, k] += ax[k] + keep * gx
                        acc_re += 2.0 * (p * x0 - q * y0 + keep * v[b, h, t, k]) * gk
                        acc_im -= 2.0 * (q * x0 + p * y0) * gk
                        acc_p += rx * x0 + ry * y0
                        acc_q += ry * x0 - rx * y0
                        ax[k] = p * rx + q * ry
                        ay[k] = p * ry - q * rx
                g_mod[h, m] += p * acc_p + q * acc_q
                g_angle[h, m] += p * acc_q - q * acc_p
                g_re[h, m] += acc_re
                g_im[h, m] += acc_im
    return gv, g_rate, g_coef, g_mod, g_angle, g_re, g_im
