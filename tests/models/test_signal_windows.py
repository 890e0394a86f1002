"""registry.signal_windows (the tokens of MNIST-1D's sequence models) against an explicit loop of its
definition, and the sequence models built on those tokens."""
import numpy as np
import pytest

from itnet_np.errors import ShapeError
from itnet_np.models import count_parameters, registry


@pytest.mark.parametrize("length, window, stride", [(40, 9, 2), (11, 4, 3), (7, 1, 1), (5, 8, 2)])
def test_windows_match_the_definition(length, window, stride):
    rng = np.random.default_rng(length * window + stride)
    x = rng.standard_normal((3, length))
    positions = np.linspace(0, 1, length)[:, None]
    tokens, centres = registry.signal_windows(x, positions, window, stride)
    starts = list(range(0, length, stride))
    assert tokens.shape == (3, len(starts), window) and centres.shape == (len(starts), 1)
    left = (window - 1) // 2
    for b in range(3):
        for t, c in enumerate(starts):
            for k in range(window):
                i = c + k - left
                assert tokens[b, t, k] == (x[b, i] if 0 <= i < length else 0.0)
            assert centres[t, 0] == positions[c, 0]


def test_windows_refuse_mismatched_positions():
    with pytest.raises(ShapeError, match=r"positions must be \(10, 1\).*got \(9, 1\)"):
        registry.signal_windows(np.zeros((2, 10)), np.zeros((9, 1)), 3, 1)
    with pytest.raises(ShapeError, match=r"x must be \(B, L\)"):
        registry.signal_windows(np.zeros((2, 10, 1)), np.zeros((10, 1)), 3, 1)


@pytest.mark.parametrize("model", ["itnet", "transformer", "gru"])
def test_sequence_models_read_the_same_windows(model):
    """Every sequence model of the signal task gets T = ceil(40 / stride) tokens of `window` features
    and returns logits; the CNN reads the raw signal."""
    data = registry.load_task_data("mnist1d")
    window, stride = registry.TASKS["mnist1d"].window
    x, y = data.x_train[:4], data.y_train[:4]
    inputs = registry.batch_inputs("mnist1d", model, x, data.positions)
    assert inputs[0].shape == (4, -(-40 // stride), window)
    net = registry.build_model("mnist1d", model, data, size="tiny", seed=0)
    assert net(*inputs).shape == (4, 10)
    if model != "itnet":
        target = count_parameters(registry.build_model("mnist1d", "itnet", data, size="tiny", seed=0))
        assert abs(count_parameters(net) - target) <= 0.2 * target
    assert registry.batch_inputs("mnist1d", "cnn", x, data.positions)[0].shape == (4, 1, 40)
