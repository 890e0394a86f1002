"""nn.Conv1d / nn.Conv2d against scipy.signal.correlate and an explicit float64 loop of the published
cross-correlation (stride, padding, dilation, groups), torch's init bounds, gradcheck, and errors."""
import numpy as np
import pytest
from scipy.signal import correlate

import itnet_np as itn
from itnet_np.errors import ConfigError, ShapeError
from itnet_np.nn import Conv1d, Conv2d


def _loop_conv1d(x, w, b, stride, pad, dilation, groups):
    """y[n, o, i] = b[o] + sum_{c in group(o), a} w[o, c, a] x_pad[n, g(o) C_g + c, s i + d a]."""
    N, C, L = x.shape
    O, Cg, k = w.shape
    xp = np.zeros((N, C, L + 2 * pad))
    xp[:, :, pad:pad + L] = x
    L_out = (L + 2 * pad - dilation * (k - 1) - 1) // stride + 1
    y = np.zeros((N, O, L_out))
    per_out = O // groups
    for n in range(N):
        for o in range(O):
            g = o // per_out
            for i in range(L_out):
                total = 0.0 if b is None else b[o]
                for c in range(Cg):
                    for a in range(k):
                        total += w[o, c, a] * xp[n, g * Cg + c, stride * i + dilation * a]
                y[n, o, i] = total
    return y


@pytest.mark.parametrize("stride, padding, dilation, groups", [(1, 0, 1, 1), (2, 1, 1, 1), (1, 2, 2, 2),
                                                               (3, 0, 1, 4)])
def test_conv1d_module_matches_explicit_loop(stride, padding, dilation, groups):
    rng = np.random.default_rng(0)
    conv = Conv1d(4, 8, 3, stride=stride, padding=padding, dilation=dilation, groups=groups, rng=1,
                  dtype="float64")
    x = rng.normal(size=(2, 4, 11))
    want = _loop_conv1d(x, conv.weight.data, conv.bias.data, stride, padding, dilation, groups)
    np.testing.assert_allclose(conv(itn.tensor(x)).data, want, rtol=0, atol=1e-12)


def test_conv2d_same_padding_matches_scipy_correlate():
    rng = np.random.default_rng(1)
    conv = Conv2d(3, 5, (3, 5), padding="same", rng=2, dtype="float64")
    x = rng.normal(size=(2, 3, 7, 9))
    w, b = conv.weight.data, conv.bias.data
    want = np.stack([np.stack([sum(correlate(x[n, c], w[o, c], mode="same") for c in range(3)) + b[o]
                               for o in range(5)]) for n in range(2)])
    np.testing.assert_allclose(conv(itn.tensor(x)).data, want, rtol=0, atol=1e-12)


def test_conv1d_valid_without_bias_matches_scipy_correlate():
    rng = np.random.default_rng(2)
    conv = Conv1d(2, 3, 4, bias=False, rng=3, dtype="float64")
    assert conv.bias is None
    x = rng.normal(size=(1, 2, 10))
    want = np.stack([sum(correlate(x[0, c], conv.weight.data[o, c], mode="valid") for c in range(2))
                     for o in range(3)])[None]
    np.testing.assert_allclose(conv(itn.tensor(x)).data, want, rtol=0, atol=1e-12)


def test_init_follows_torch_bounds_and_layout():
    conv = Conv2d(6, 4, 3, groups=2, rng=0)
    assert conv.weight.shape == (4, 3, 3, 3) and conv.weight.dtype == np.float32
    bound = 1 / np.sqrt(3 * 9)                     # fan_in = C_in / groups * kH * kW
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.weight.data).max() > 0.8 * bound
    assert np.abs(conv.bias.data).max() <= bound
    assert Conv1d(2, 2, 3, rng=5).weight.data.tobytes() == Conv1d(2, 2, 3, rng=5).weight.data.tobytes()


def test_conv_modules_gradcheck():
    rng = np.random.default_rng(3)
    conv = Conv2d(2, 2, 2, stride=(1, 2), padding=1, rng=0, dtype="float64")
    x = rng.normal(size=(1, 2, 4, 5))

    def f(x, w, b):
        with itn.nn.override_parameters(conv, {"weight": w, "bias": b}):
            return conv(x)

    assert itn.gradcheck(f, [x, conv.weight.data, conv.bias.data])


def test_conv_module_errors():
    with pytest.raises(ConfigError, match="groups=3"):
        Conv1d(4, 6, 3, groups=3)
    with pytest.raises(ConfigError, match="kernel_size"):
        Conv2d(1, 1, (3, 3, 3))
    with pytest.raises(ShapeError, match="C_in"):
        Conv1d(3, 2, 3, rng=0)(np.zeros((1, 4, 8), np.float32))
