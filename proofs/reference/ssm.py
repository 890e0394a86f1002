"""Diagonal linear time-invariant SSMs (S4D): discretisation, recurrence, convolution kernel, FFT conv.

Sources: Gu, Gupta, Goel & Ré 2022, "On the Parameterization and Initialization of Diagonal State Space
Models" (S4D; state-spaces/s4 ``models/s4/s4d.py``); Gu, Goel & Ré 2022 (S4) and The Annotated S4 for
the bilinear rule; docs/theory.md §8. Per channel h (independent), with diagonal A:

    x_k = Abar x_{k-1} + Bbar u_k,   y_k = Re(C x_k) + D u_k,   x_{-1} = 0
    => y_k = sum_{j<=k} K_{k-j} u_j + D u_k,   K_l = Re(C Abar^l Bbar)

    ZOH:      Abar = exp(dt A),                     Bbar = (exp(dt A) - 1) / A * B   (-> dt B as A -> 0)
    bilinear: Abar = (1 - dt/2 A)^-1 (1 + dt/2 A),  Bbar = (1 - dt/2 A)^-1 dt B

Conjugate pairs: S4D keeps only N of the 2N eigenvalues (one of each conjugate pair) and doubles the
real part, y = 2 Re(C x). Here that is ``conj_pairs=True``; the default ``conj_pairs=False`` is the plain
y = Re(C x) (for real A, B, C this is just C x).
"""
import numpy as np

__all__ = ["fft_causal_conv_ref", "s4d_discretize", "s4d_kernel_ref", "s4d_recurrent_ref"]


def _as_ssm(A, B, C, dt):
    A, B, C = (np.asarray(a) for a in (A, B, C))
    A, B, C = (a.astype(np.complex128) if np.iscomplexobj(a) else a.astype(np.float64) for a in (A, B, C))
    if A.ndim != 2 or B.shape != A.shape or C.shape != A.shape:
        raise ValueError(f"s4d: A, B, C must all be (H, N); got {A.shape}, {B.shape}, {C.shape}")
    dt = np.asarray(dt, dtype=np.float64)
    if dt.ndim == 0:
        dt = np.full(A.shape[0], float(dt))
    if dt.shape != (A.shape[0],):
        raise ValueError(f"s4d: dt must be a scalar or (H,) = {(A.shape[0],)}, got {dt.shape}")
    return A, B, C, dt[:, None]


def s4d_discretize(A, B, dt, discretization="zoh"):
    """Discretise a diagonal continuous SSM per (h, n).

        'zoh':      Abar = exp(dt A),  Bbar = (Abar - 1)/A * B, computed as expm1(dt A)/A * B
                    (accurate for small |dt A|), and exactly dt B where A == 0 (the limit).
        'bilinear': Abar = (1 - dt/2 A)^-1 (1 + dt/2 A),  Bbar = (1 - dt/2 A)^-1 dt B.

    Shapes: A, B (H, N) real or complex; dt scalar or (H,). Returns (Abar, Bbar), each (H, N).
    """
    A, B, _, dt = _as_ssm(A, B, B, dt)
    if discretization == "zoh":
        a_bar = np.exp(dt * A)
        zero = A == 0
        b_bar = np.where(zero, dt * B, np.expm1(dt * A) / np.where(zero, 1.0, A) * B)
    elif discretization == "bilinear":
        inv = 1.0 / (1.0 - dt / 2.0 * A)
        a_bar = inv * (1.0 + dt / 2.0 * A)
        b_bar = inv * dt * B
    else:
        raise ValueError(f"s4d: discretization must be 'zoh' or 'bilinear', got {discretization!r}")
    return a_bar, b_bar


def s4d_recurrent_ref(u, A, B, C, D, dt, discretization="zoh", conj_pairs=False):
    """Run the discretised diagonal SSM as a recurrence, explicit loop over time, per channel h:

        x_k[h, :] = Abar[h, :] * x_{k-1}[h, :] + Bbar[h, :] u[b, h, k],   x_{-1} = 0
        y[b, h, k] = c * Re(sum_n C[h, n] x_k[h, n]) + D[h] u[b, h, k],   c = 2 if conj_pairs else 1

    Shapes: u (B, H, L); A, B, C (H, N) (complex allowed); D (H,) or None; dt scalar or (H,).
    Returns y (B, H, L) float64.
    """
    u = np.asarray(u, dtype=np.float64)
    A, B, C, _ = _as_ssm(A, B, C, dt)
    if u.ndim != 3 or u.shape[1] != A.shape[0]:
        raise ValueError(f"s4d_recurrent_ref: u must be (B, H, L) with H = {A.shape[0]}, got {u.shape}")
    a_bar, b_bar = s4d_discretize(A, B, dt, discretization)
    factor = 2.0 if conj_pairs else 1.0
    x = np.zeros((u.shape[0],) + A.shape, dtype=np.result_type(a_bar, b_bar, C))
    y = np.zeros(u.shape)
    for k in range(u.shape[2]):
        x = a_bar * x + b_bar * u[:, :, k, None]
        y[:, :, k] = factor * np.real(np.sum(C * x, axis=-1))
    if D is not None:
        y = y + np.asarray(D, dtype=np.float64)[:, None] * u
    return y


def s4d_kernel_ref(A, B, C, dt, L, discretization="zoh", conj_pairs=False):
    """Convolution kernel of the discretised SSM (without the D skip), explicit loop over powers:

        K[h, l] = c * Re(sum_n C[h, n] Abar[h, n]^l Bbar[h, n]),   l = 0 .. L-1,   c = 2 if conj_pairs

    (K_0 = C Bbar: y_k depends on u_k.) Shapes as s4d_recurrent_ref. Returns K (H, L) float64.
    """
    A, B, C, _ = _as_ssm(A, B, C, dt)
    a_bar, b_bar = s4d_discretize(A, B, dt, discretization)
    factor = 2.0 if conj_pairs else 1.0
    K = np.zeros((A.shape[0], L))
    power = np.ones_like(a_bar)                      # Abar^l, starting at l = 0
    for l in range(L):
        K[:, l] = factor * np.real(np.sum(C * power * b_bar, axis=-1))
        power = power * a_bar
    return K


def fft_causal_conv_ref(u, K, D=None):
    """Causal (true, not cross-correlation) convolution via FFT, zero-padded to 2L to avoid wrap-around:

        y[b, h, k] = sum_{j<=k} K[h, k-j] u[b, h, j] + D[h] u[b, h, k]
                   = irfft(rfft(u, 2L) * rfft(K, 2L), 2L)[..., :L] + D u

    Shapes: u (B, H, L), K (H, L) (or (H, L_K) with L_K <= L), D (H,) or None. Returns (B, H, L).
    """
    u = np.asarray(u, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    length = u.shape[-1]
    if K.ndim != 2 or K.shape[0] != u.shape[1] or K.shape[1] > length:
        raise ValueError(f"fft_causal_conv_ref: K must be (H, <=L) = ({u.shape[1]}, <={length}), "
                         f"got {K.shape}")
    n_fft = 2 * length
    y = np.fft.irfft(np.fft.rfft(u, n=n_fft) * np.fft.rfft(K, n=n_fft), n=n_fft)[..., :length]
    if D is not None:
        y = y + np.asarray(D, dtype=np.float64)[:, None] * u
    return y
