"""Operator learning: maps between functions on [0, 1), sampled on grids of several resolutions.

Every sample is generated on a fine grid x_j = j / F (j = 0..F-1, F = ``fine``) and subsampled to
``resolution`` points (every F / resolution-th point), so one seed gives the same functions at every
resolution. x: (N, resolution) float32 input values, y: (N, resolution) float32 target values,
positions: (resolution, 1) float32 grid coordinates.

Antiderivative, s(x) = int_0^x u(t) dt, exact by construction. u is a random Fourier series
    u(x) = a_0 + sum_{k=1}^{K} (a_k cos(2 pi k x) + b_k sin(2 pi k x)),  a_k, b_k ~ N(0, sigma_k^2),
sigma_k = (1 + k^2)^(-decay / 2), so that
    s(x) = a_0 x + sum_k (a_k sin(2 pi k x) + b_k (1 - cos(2 pi k x))) / (2 pi k).

Burgers, u_t + u u_x = nu u_xx on the periodic interval [0, 1), nu = 0.1, map u(., 0) -> u(., T),
T = 1. Initial conditions are Gaussian random fields with covariance 625 (-Delta + 25 I)^(-2)
(the FNO benchmark's): Fourier coefficient k has variance 625 / (4 pi^2 k^2 + 25)^2 (real and
imaginary parts each half of it). :func:`solve_burgers` integrates the Fourier-Galerkin system
    d/dt u_k = -nu (2 pi k)^2 u_k - (i 2 pi k / 2) FFT(u^2)_k
with modes |k| <= F / 3 kept (the 2/3 rule: u^2 has no aliasing there) by SciPy's solve_ivp (BDF,
one sample at a time: ~0.3 s each at F = 128, the default; nu = 0.1 leaves the solution smooth
enough that F = 128 matches the Cole-Hopf solution to ~1e-7).
"""
import numpy as np
from scipy.integrate import solve_ivp

from ..errors import ConfigError
from .base import Dataset, check_float, check_int, grid_1d


def _check_resolution(resolution, fine):
    fine = check_int("fine", fine, 8)
    resolution = check_int("resolution", resolution, 2, fine)
    if fine % resolution:
        raise ConfigError(f"resolution must divide fine = {fine} (samples are every fine/resolution-th "
                          f"point of the fine grid), got resolution {resolution}")
    return resolution, fine


def random_fourier(rng, n, modes, decay):
    """Coefficients (a (n, modes + 1), b (n, modes + 1)) of n random Fourier series; b[:, 0] = 0."""
    k = np.arange(modes + 1)
    sigma = (1.0 + k ** 2) ** (-decay / 2)
    a = rng.standard_normal((n, modes + 1)) * sigma
    b = rng.standard_normal((n, modes + 1)) * sigma
    b[:, 0] = 0.0
    return a, b


def fourier_values(a, b, x):
    """u(x) for the series (a, b): (n, len(x))."""
    k = np.arange(a.shape[1])
    phase = 2 * np.pi * np.outer(k, x)
    return a @ np.cos(phase) + b @ np.sin(phase)


def fourier_antiderivative(a, b, x):
    """s(x) = int_0^x u: (n, len(x)), term by term (see the module docstring)."""
    k = np.arange(1, a.shape[1])
    phase = 2 * np.pi * np.outer(k, x)
    w = 2 * np.pi * k
    return (a[:, :1] * x[None, :] + (a[:, 1:] / w) @ np.sin(phase)
            + (b[:, 1:] / w) @ (1 - np.cos(phase)))


def make_antiderivative(num_train=1000, num_test=200, resolution=64, fine=1024, modes=16, decay=2.0,
                        seed=0):
    """The antiderivative operator data set (see the module docstring)."""
    num_train = check_int("num_train", num_train, 1)
    num_test = check_int("num_test", num_test, 1)
    resolution, fine = _check_resolution(resolution, fine)
    modes = check_int("modes", modes, 1)
    decay = check_float("decay", decay)
    rng = np.random.default_rng(seed)
    a, b = random_fourier(rng, num_train + num_test, modes, decay)
    x = np.arange(0, fine, fine // resolution) / fine
    u = fourier_values(a, b, x).astype(np.float32)
    s = fourier_antiderivative(a, b, x).astype(np.float32)
    return Dataset(u[:num_train], s[:num_train], u[num_train:], s[num_train:], grid_1d(resolution))


def burgers_initial(rng, n, fine):
    """n Gaussian-random-field initial conditions on the fine grid: (n, fine) float64."""
    k = np.arange(fine // 2 + 1)
    std = np.sqrt(625.0 / (4 * np.pi ** 2 * k ** 2 + 25.0) ** 2 / 2)
    coef = (rng.standard_normal((n, k.size)) + 1j * rng.standard_normal((n, k.size))) * std
    coef[:, 0] = coef[:, 0].real * np.sqrt(2)
    coef[:, -1] = 0.0  # the Nyquist mode is real on a grid; drop it (the 2/3 rule drops it anyway)
    return np.fft.irfft(coef, n=fine) * fine  # u(x_j) = sum_k c_k e^{2 pi i k x_j}


def solve_burgers(u0, nu=0.1, t_final=1.0, rtol=1e-7, atol=1e-9):
    """u(., t_final) from u0 (n, F) on the periodic grid j / F: (n, F) float64 (module docstring).

    Each sample is one stiff system (the viscous term reaches nu (2 pi F / 3)^2), integrated by
    solve_ivp's BDF on the real and imaginary parts of its kept modes."""
    u0 = np.asarray(u0, dtype=np.float64)
    _n, fine = u0.shape
    k = np.arange(fine // 2 + 1)
    keep = k <= fine // 3
    wave = 2j * np.pi * k[keep]
    decay = -nu * (2 * np.pi * k[keep]) ** 2
    m = int(keep.sum())
    full = np.zeros(k.size, dtype=np.complex128)

    def rhs(_t, y):
        c = y[:m] + 1j * y[m:]
        full[keep] = c
        u = np.fft.irfft(full, n=fine)
        d = decay * c - 0.5 * wave * np.fft.rfft(u * u)[keep]
        return np.concatenate([d.real, d.imag])

    out = np.empty_like(u0)
    for i, c0 in enumerate(np.fft.rfft(u0)[:, keep]):
        sol = solve_ivp(rhs, (0.0, t_final), np.concatenate([c0.real, c0.imag]), method="BDF",
                        rtol=rtol, atol=atol, t_eval=[t_final])
        if not sol.success:
            raise RuntimeError(f"solve_burgers: solve_ivp failed on sample {i}: {sol.message}")
        end = np.zeros(k.size, dtype=np.complex128)
        end[keep] = sol.y[:m, -1] + 1j * sol.y[m:, -1]
        out[i] = np.fft.irfft(end, n=fine)
    return out


def make_burgers(num_train=1000, num_test=200, resolution=32, fine=128, nu=0.1, t_final=1.0, seed=0):
    """The Burgers operator data set (see the module docstring)."""
    num_train = check_int("num_train", num_train, 1)
    num_test = check_int("num_test", num_test, 1)
    resolution, fine = _check_resolution(resolution, fine)
    nu = check_float("nu", nu)
    t_final = check_float("t_final", t_final)
    rng = np.random.default_rng(seed)
    u0 = burgers_initial(rng, num_train + num_test, fine)
    u1 = solve_burgers(u0, nu, t_final)
    u0, u1 = u0.astype(np.float32), u1.astype(np.float32)
    full = Dataset(u0[:num_train], u1[:num_train], u0[num_train:], u1[num_train:], grid_1d(fine))
    return subsample(full, resolution)


def subsample(data, resolution):
    """An operator Dataset on grid j / R (R = its resolution) cut to every (R / resolution)-th point:
    the same functions on the coarser grid j / resolution (ConfigError unless resolution divides R)."""
    full = data.x_train.shape[1]
    resolution = check_int("resolution", resolution, 1, full)
    if full % resolution:
        raise ConfigError(f"resolution must divide the data's resolution {full}, got {resolution}")
    step = full // resolution
    return Dataset(data.x_train[:, ::step], data.y_train[:, ::step], data.x_test[:, ::step],
                   data.y_test[:, ::step], grid_1d(resolution), data.num_classes)
