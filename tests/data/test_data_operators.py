"""Operator data: the antiderivative against SciPy's quadrature, the Burgers solver against the
Cole-Hopf exact solution, conservation and dissipation, and consistency across resolutions."""
import numpy as np
import pytest
from scipy.integrate import cumulative_trapezoid, quad

from itnet_np.data.operators import (
    burgers_initial,
    fourier_antiderivative,
    fourier_values,
    make_antiderivative,
    make_burgers,
    random_fourier,
    solve_burgers,
    subsample,
)
from itnet_np.errors import ConfigError

NU = 0.1


def cole_hopf(x, t, a=1.5, b=1.0, c=0.3):
    """u = -2 nu phi_x / phi with phi = a + b e^{-4 pi^2 nu t} cos 2 pi x + c e^{-16 pi^2 nu t} sin 4 pi x,
    which solves the heat equation phi_t = nu phi_xx, so u solves u_t + u u_x = nu u_xx."""
    e1, e2 = np.exp(-4 * np.pi ** 2 * NU * t), np.exp(-16 * np.pi ** 2 * NU * t)
    phi = a + b * e1 * np.cos(2 * np.pi * x) + c * e2 * np.sin(4 * np.pi * x)
    phi_x = -2 * np.pi * b * e1 * np.sin(2 * np.pi * x) + 4 * np.pi * c * e2 * np.cos(4 * np.pi * x)
    return -2 * NU * phi_x / phi


def test_antiderivative_matches_quadrature():
    a, b = random_fourier(np.random.default_rng(0), 3, modes=8, decay=2.0)
    x = np.linspace(0, 1, 20001)
    u = fourier_values(a, b, x)
    s = fourier_antiderivative(a, b, x)
    np.testing.assert_allclose(s, cumulative_trapezoid(u, x, axis=1, initial=0), rtol=0, atol=1e-7)
    for i in range(3):
        for p in (0.13, 0.5, 0.97):
            ref = quad(lambda t, i=i: fourier_values(a[i:i + 1], b[i:i + 1], np.array([t]))[0, 0], 0, p,
                       epsabs=1e-13)[0]
            assert abs(fourier_antiderivative(a[i:i + 1], b[i:i + 1], np.array([p]))[0, 0] - ref) < 1e-11


def test_antiderivative_dataset_and_resolutions():
    hi = make_antiderivative(num_train=8, num_test=2, resolution=1024, seed=3)
    lo = make_antiderivative(num_train=8, num_test=2, resolution=64, seed=3)
    assert hi.x_train.dtype == np.float32 and hi.positions.shape == (1024, 1)
    np.testing.assert_array_equal(lo.x_train, hi.x_train[:, ::16])
    np.testing.assert_array_equal(lo.y_test, hi.y_test[:, ::16])
    np.testing.assert_array_equal(lo.positions, hi.positions[::16])
    x = hi.positions[:, 0].astype(np.float64)
    ref = cumulative_trapezoid(hi.x_train.astype(np.float64), x, axis=1, initial=0)
    np.testing.assert_allclose(hi.y_train, ref, rtol=0, atol=2e-4)  # trapezoid error O(h^2)


@pytest.mark.parametrize("fine", [32, 64, 128])
def test_burgers_solver_matches_cole_hopf(fine):
    x = np.arange(fine) / fine
    u1 = solve_burgers(cole_hopf(x, 0.0)[None], nu=NU, t_final=1.0)
    err = np.abs(u1[0] - cole_hopf(x, 1.0)).max() / np.abs(cole_hopf(x, 1.0)).max()
    assert err < 2e-6, err


def test_burgers_solver_converges_under_refinement():
    errors = []
    for fine in (8, 16, 32, 64):
        x = np.arange(fine) / fine
        u = solve_burgers(cole_hopf(x, 0.0, a=1.2)[None], nu=NU, t_final=0.2)
        errors.append(np.abs(u[0] - cole_hopf(x, 0.2, a=1.2)).max())
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    # spectral accuracy: each halving of h gains more than the last (faster than any power of h)
    assert (ratios > 3).all() and (np.diff(ratios) > 0).all(), errors
    assert errors[-1] < 1e-5, errors


def test_burgers_conserves_mean_and_dissipates_energy():
    u0 = burgers_initial(np.random.default_rng(5), 4, 64)
    u1 = solve_burgers(u0)
    np.testing.assert_allclose(u1.mean(axis=1), u0.mean(axis=1), rtol=0, atol=1e-10)
    e0 = ((u0 - u0.mean(axis=1, keepdims=True)) ** 2).mean(axis=1)
    e1 = ((u1 - u1.mean(axis=1, keepdims=True)) ** 2).mean(axis=1)
    assert (e1 < e0).all()


def test_burgers_dataset_resolutions():
    lo = make_burgers(num_train=4, num_test=2, resolution=32, fine=64, seed=1)
    hi = make_burgers(num_train=4, num_test=2, resolution=64, fine=64, seed=1)
    assert lo.x_train.shape == (4, 32) and lo.y_test.shape == (2, 32) and lo.y_train.dtype == np.float32
    np.testing.assert_array_equal(lo.x_train, hi.x_train[:, ::2])
    np.testing.assert_array_equal(lo.y_train, hi.y_train[:, ::2])
    assert not np.allclose(hi.x_train, hi.y_train, atol=1e-2)  # the map is not the identity
    with pytest.raises(ConfigError, match="resolution must divide"):
        make_burgers(num_train=1, num_test=1, resolution=48, fine=64)
    with pytest.raises(ConfigError, match="nu"):
        make_burgers(num_train=1, num_test=1, nu=-0.1)


def test_subsample_gives_the_data_generated_at_the_coarser_grid():
    """subsample(data at 64 points, 16) == the generator run at 16 points (the same functions)."""
    fine = make_antiderivative(num_train=3, num_test=2, resolution=64, fine=256, seed=4)
    coarse = make_antiderivative(num_train=3, num_test=2, resolution=16, fine=256, seed=4)
    cut = subsample(fine, 16)
    for field in ("x_train", "y_train", "x_test", "y_test", "positions"):
        np.testing.assert_array_equal(getattr(cut, field), getattr(coarse, field), err_msg=field)
    assert cut.num_classes is None
    with pytest.raises(ConfigError, match="must divide"):
        subsample(fine, 24)
    with pytest.raises(ConfigError, match="resolution"):
        subsample(fine, 128)
