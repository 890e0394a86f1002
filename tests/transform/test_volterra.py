"""Implicit (Volterra) mode: recurrences as y = Phi(T_K[y], x), solved by forward substitution and by
Picard iteration; checked against explicit loops of the Elman and LSTM formulas (torch's docs),
prefix-exactness of Picard, the fixed-point equation itself, and gradients."""
import numpy as np
import pytest

import itnet_np as itn
from itnet_np import transform as T
from itnet_np.errors import ConfigError, ShapeError

F64 = np.float64


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def elman_setup(rng, Cx=2, Hd=3):
    W_ih, W_hh = rng.standard_normal((Hd, Cx)), rng.standard_normal((Hd, Hd)) * 0.8
    b = rng.standard_normal(Hd)

    def cell(z, x):                                   # h_t = tanh(W_ih x_t + W_hh h_{t-1} + b)
        return itn.tanh(x @ W_ih.T + z @ W_hh.T + b)

    def loop(x, h0):
        h, out = h0, []
        for t in range(x.shape[1]):
            h = np.tanh(x[:, t] @ W_ih.T + h @ W_hh.T + b)
            out.append(h)
        return np.stack(out, axis=1)

    return T.Volterra(T.shift_transform(Hd, query_features=Cx, dtype=F64), cell), loop


@pytest.mark.parametrize("method", ["substitution", "picard"])
def test_elman_rnn_as_volterra_equation(method):
    rng = np.random.default_rng(0)
    solver, loop = elman_setup(rng)
    x, h0 = rng.standard_normal((2, 7, 2)), rng.standard_normal((2, 1, 3))
    y = solver(x, boundary=h0, method=method)
    np.testing.assert_allclose(y.data, loop(x, h0[:, 0]), rtol=1e-12, atol=1e-12)


def test_lstm_pair_unknown():
    rng = np.random.default_rng(1)
    Cx, Hd = 2, 3
    W_ih, W_hh, b = rng.standard_normal((4 * Hd, Cx)), rng.standard_normal((4 * Hd, Hd)), rng.standard_normal(4 * Hd)

    def cell(z, x):                                   # unknown y = [h | c]; z = [h_{t-1} | c_{t-1}]
        h, c = z[..., :Hd], z[..., Hd:]
        gates = x @ W_ih.T + h @ W_hh.T + b
        i, f = itn.nn.functional.sigmoid(gates[..., :Hd]), itn.nn.functional.sigmoid(gates[..., Hd:2 * Hd])
        g, o = itn.tanh(gates[..., 2 * Hd:3 * Hd]), itn.nn.functional.sigmoid(gates[..., 3 * Hd:])
        c2 = f * c + i * g
        return itn.concatenate([o * itn.tanh(c2), c2], axis=-1)

    x, h0, c0 = rng.standard_normal((2, 6, Cx)), rng.standard_normal((2, Hd)), rng.standard_normal((2, Hd))
    h, c, want = h0, c0, []
    for t in range(6):                                # torch.nn.LSTM, gate order [i, f, g, o]
        gates = x[:, t] @ W_ih.T + h @ W_hh.T + b
        i, f, g, o = sigmoid(gates[:, :Hd]), sigmoid(gates[:, Hd:2 * Hd]), np.tanh(gates[:, 2 * Hd:3 * Hd]), \
            sigmoid(gates[:, 3 * Hd:])
        c = f * c + i * g
        h = o * np.tanh(c)
        want.append(h)
    solver = T.Volterra(T.shift_transform(2 * Hd, query_features=Cx, dtype=F64), cell)
    boundary = np.concatenate([h0, c0], axis=-1)[:, None]
    for method in ("substitution", "picard"):
        y = solver(x, boundary=boundary, method=method)
        np.testing.assert_allclose(y.data[..., :Hd], np.stack(want, axis=1), rtol=1e-12, atol=1e-12)


def full_memory_solver(rng):
    """A genuinely nonlinear Volterra equation: an MLP kernel over the whole (strict) past."""
    k = T.MLPKernel(2, heads=2, hidden=4, inputs=("dp", "fi", "fj"), query_features=3, activation="tanh",
                    rng=rng, dtype=F64)
    tr = T.IntegralTransform(2, 2, k, query_features=3, embed_dim=4, normalization="none", rng=rng, dtype=F64)
    W = rng.standard_normal((2, 3))
    return T.Volterra(tr, lambda z, x: itn.tanh(z + x @ W.T))


def test_picard_is_prefix_exact_and_exact_after_T_iterations():
    rng = np.random.default_rng(2)
    solver = full_memory_solver(rng)
    x, bnd = rng.standard_normal((2, 6, 3)), rng.standard_normal((2, 2, 2))
    exact = solver(x, boundary=bnd).data
    _, iterates = solver(x, boundary=bnd, method="picard", iterations=6, return_iterates=True,
                         initial=rng.standard_normal((2, 6, 2)))
    for k, y in enumerate(iterates, start=1):
        np.testing.assert_allclose(y.data[:, :k], exact[:, :k], rtol=1e-13, atol=1e-13)
        if k == 1:                                     # and not beyond (from a random start)
            assert np.abs(y.data[:, k:] - exact[:, k:]).max() > 1e-3
    np.testing.assert_allclose(iterates[-1].data, exact, rtol=1e-13, atol=1e-13)


def test_substitution_solves_the_fixed_point_equation():
    rng = np.random.default_rng(3)
    solver = full_memory_solver(rng)
    x, bnd = rng.standard_normal((1, 5, 3)), rng.standard_normal((1, 2, 2))
    y = solver(x, boundary=bnd).data
    # Plug y back in: one application of Phi(T_K[y], x) on the whole sequence returns y.
    again = solver(x, boundary=bnd, method="picard", iterations=1, initial=y).data
    np.testing.assert_allclose(again, y, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("method", ["substitution", "picard"])
def test_gradients_flow_through_both_solvers(method):
    rng = np.random.default_rng(4)
    solver = full_memory_solver(rng)
    x, bnd = rng.standard_normal((1, 4, 3)), rng.standard_normal((1, 1, 2))
    assert itn.gradcheck(lambda x, b: solver(x, boundary=b, method=method), [x, bnd])
    W1 = solver.transform.kernel.W1
    solver(x, boundary=bnd, method=method).sum().backward()
    assert W1.grad is not None and np.abs(W1.grad.data).sum() > 0


def test_volterra_errors():
    solver = full_memory_solver(np.random.default_rng(5))
    x = np.zeros((1, 3, 3))
    with pytest.raises(ConfigError, match=r"method must be one of \('substitution', 'picard'\), got 'newton'"):
        solver(x, method="newton")
    with pytest.raises(ShapeError, match=r"boundary must be \(1, Nb, 2\), got shape \(1, 1, 3\)"):
        solver(x, boundary=np.zeros((1, 1, 3)))
    with pytest.raises(ShapeError, match=r"x must be \(B, T, 3\)"):
        solver(np.zeros((1, 3, 2)))
    with pytest.raises(ConfigError, match=r"lag \(>= 1: strictly causal\) must be an int >= 1, got 0"):
        T.shift_transform(2, lag=0)
    with pytest.raises(ConfigError, match=r"iterations must be an int >= 0, got -1"):
        solver(x, method="picard", iterations=-1)
    with pytest.raises(ConfigError, match="cell must be callable"):
        T.Volterra(solver.transform, cell="tanh")


@pytest.mark.parametrize("method", ["substitution", "picard"])
def test_cell_given_per_call_overrides_the_constructor(method):
    rng = np.random.default_rng(6)
    solver, loop = elman_setup(rng)
    x, h0 = rng.standard_normal((2, 5, 2)), rng.standard_normal((2, 1, 3))
    W = rng.standard_normal((3, 2))
    other = lambda z, x: itn.tanh(z * 0.5 + x @ W.T)              # h_t = tanh(h_{t-1}/2 + W x_t)
    h, want = h0[:, 0], []
    for t in range(5):
        h = np.tanh(0.5 * h + x[:, t] @ W.T)
        want.append(h)
    np.testing.assert_allclose(solver(x, boundary=h0, method=method, cell=other).data, np.stack(want, 1),
                               rtol=1e-13, atol=1e-13)
    # the constructor's cell is untouched, and a solver built without one needs it per call
    np.testing.assert_allclose(solver(x, boundary=h0, method=method).data, loop(x, h0[:, 0]), rtol=1e-12)
    bare = T.Volterra(solver.transform)
    np.testing.assert_array_equal(bare(x, boundary=h0, method=method, cell=other).data,
                                  solver(x, boundary=h0, method=method, cell=other).data)
    with pytest.raises(ConfigError, match="no cell"):
        bare(x, boundary=h0, method=method)


@pytest.mark.parametrize("method", ["substitution", "picard"])
def test_empty_sequence_gives_an_empty_result(method):
    solver, _ = elman_setup(np.random.default_rng(7))
    y = solver(np.zeros((2, 0, 2)), boundary=np.ones((2, 1, 3)), method=method)
    assert isinstance(y, itn.Tensor) and y.shape == (2, 0, 3) and y.dtype == F64
    if method == "picard":
        y, its = solver(np.zeros((2, 0, 2)), method=method, iterations=2, return_iterates=True)
        assert y.shape == (2, 0, 3) and [i.shape for i in its] == [(2, 0, 3)] * 2
