"""BatchNorm1d / BatchNorm2d / GroupNorm modules: train and eval behaviour, running statistics
against the update formulas (momentum and cumulative), buffers in state_dict, itn.save / itn.load
and load_state_dict, and the constructor and input errors."""
import numpy as np
import pytest

import itnet_np as itn
import itnet_np.nn.functional as F
from itnet_np import nn
from itnet_np.errors import CheckpointError, ConfigError, DTypeError, ShapeError


def _batches(shape, count, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(shape) * (i + 1) + i).astype(np.float32) for i in range(count)]


@pytest.mark.parametrize("cls,shape", [(nn.BatchNorm1d, (6, 3)), (nn.BatchNorm1d, (4, 3, 5)),
                                       (nn.BatchNorm2d, (2, 3, 4, 5))])
@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_batch_norm_running_statistics_follow_the_update_rule(cls, shape, momentum):
    bn = cls(3, momentum=momentum)
    axes = (0,) + tuple(range(2, len(shape)))
    mean, var = np.zeros(3), np.ones(3)
    batches = _batches(shape, 4)
    for k, x in enumerate(batches, start=1):
        y = bn(itn.tensor(x))
        # training: normalised with the batch statistics (biased variance)
        mu, v = x.astype(np.float64).mean(axis=axes), x.astype(np.float64).var(axis=axes)
        keep = (1, 3) + (1,) * (len(shape) - 2)
        np.testing.assert_allclose(y.data, (x - mu.reshape(keep)) / np.sqrt(v.reshape(keep) + 1e-5), rtol=2e-4,
                                   atol=2e-5)
        m = momentum if momentum is not None else 1.0 / k     # None: the cumulative average
        n = x.size // 3
        mean = (1 - m) * mean + m * mu
        var = (1 - m) * var + m * v * n / (n - 1)              # unbiased, as torch
        assert int(bn.num_batches_tracked) == k
    np.testing.assert_allclose(bn.running_mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_var, var, rtol=1e-5, atol=1e-6)
    if momentum is None:   # the cumulative average of the batch means, exactly
        np.testing.assert_allclose(bn.running_mean, np.mean([b.mean(axis=axes) for b in batches], axis=0),
                                   rtol=1e-5, atol=1e-6)
    # eval: normalised with the running statistics; the buffers no longer move
    bn.eval()
    x = batches[0]
    before = bn.state_dict()
    keep = (1, 3) + (1,) * (len(shape) - 2)
    want = (x - bn.running_mean.reshape(keep)) / np.sqrt(bn.running_var.reshape(keep) + 1e-5)
    np.testing.assert_allclose(bn(itn.tensor(x)).data, want, rtol=1e-5, atol=1e-6)
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_batch_norm_affine_gradients_and_no_tracking():
    bn = nn.BatchNorm2d(2, affine=True, track_running_stats=False, dtype=np.float64)
    assert [n for n, _ in bn.named_buffers()] == [] and bn.state_dict().keys() == {"weight", "bias"}
    x = np.random.default_rng(1).standard_normal((3, 2, 2, 2))
    bn.eval()                      # without running statistics, eval uses the batch statistics too
    y = bn(itn.tensor(x))
    np.testing.assert_allclose(y.data, F.batch_norm(x, None, None, training=True), rtol=1e-13)
    itn.sum(y * y).backward()
    # d/dweight sum(y^2) = 2 sum(y_hat^2) per channel = 2 n (y_hat has unit biased variance up to eps)
    assert bn.weight.grad.shape == (2,) and bn.bias.grad.shape == (2,)
    np.testing.assert_allclose(bn.weight.grad.data, 2 * 12 * (1 - 1e-5 / (x.var(axis=(0, 2, 3)) + 1e-5)),
                               rtol=1e-10)


def test_batch_norm_buffers_save_load_and_move():
    bn = nn.BatchNorm1d(3)
    for x in _batches((5, 3), 3, seed=4):
        bn(itn.tensor(x))
    sd = bn.state_dict()
    assert list(sd) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert sd["num_batches_tracked"].dtype == np.int64 and int(sd["num_batches_tracked"]) == 3
    fresh = nn.BatchNorm1d(3)
    fresh.load_state_dict(sd)
    for k in sd:
        np.testing.assert_array_equal(fresh.state_dict()[k], sd[k])
    with pytest.raises(CheckpointError, match="missing keys: 'running_var'"):
        nn.BatchNorm1d(3).load_state_dict({k: v for k, v in sd.items() if k != "running_var"})
    with pytest.raises(CheckpointError, match="dtype mismatch for 'running_mean'"):
        nn.BatchNorm1d(3).load_state_dict({**sd, "running_mean": sd["running_mean"].astype(np.float64)})


def test_batch_norm_round_trips_through_itn_save(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3, rng=0), nn.BatchNorm1d(3), nn.Linear(3, 2, rng=1))
    for x in _batches((8, 4), 2, seed=5):
        model(itn.tensor(x))
    itn.save(tmp_path / "ckpt.npz", {"model": model.state_dict()})
    clone = nn.Sequential(nn.Linear(4, 3, rng=7), nn.BatchNorm1d(3), nn.Linear(3, 2, rng=8))
    clone.load_state_dict(itn.load(tmp_path / "ckpt.npz")["model"])
    model.eval(), clone.eval()
    x = _batches((5, 4), 1, seed=6)[0]
    np.testing.assert_array_equal(clone(itn.tensor(x)).data, model(itn.tensor(x)).data)
    assert int(clone[1].num_batches_tracked) == 2


def test_group_norm_module_matches_functional():
    gn = nn.GroupNorm(2, 4, dtype=np.float64)
    gn.weight.data[...] = [1.0, 2.0, 3.0, 4.0]
    x = np.random.default_rng(2).standard_normal((2, 4, 3))
    np.testing.assert_array_equal(gn(itn.tensor(x)).data, F.group_norm(x, 2, gn.weight.data, gn.bias.data))
    assert [n for n, _ in gn.named_parameters()] == ["weight", "bias"]
    assert nn.GroupNorm(1, 3, affine=False).state_dict() == {}


@pytest.mark.parametrize("error,message,call", [
    (ConfigError, "BatchNorm1d: num_features must be a positive int", lambda: nn.BatchNorm1d(0)),
    (ConfigError, "BatchNorm2d: momentum", lambda: nn.BatchNorm2d(2, momentum=2.0)),
    (ConfigError, "BatchNorm1d: eps must be a number > 0", lambda: nn.BatchNorm1d(2, eps=-1)),
    (ShapeError, r"BatchNorm2d: expected an input with 4 dimensions \(N, C, ...\), got shape \(2, 3\)",
     lambda: nn.BatchNorm2d(3)(np.zeros((2, 3), np.float32))),
    (ShapeError, "more than one value per channel", lambda: nn.BatchNorm1d(3)(np.zeros((1, 3), np.float32))),
    (DTypeError, "running_mean is float32 but the input is float64", lambda: nn.BatchNorm1d(3)(np.zeros((2, 3)))),
    (ConfigError, "num_channels=4 is not divisible by num_groups=3", lambda: nn.GroupNorm(3, 4)),
    (DTypeError, "layer dtype must be float32 or float64", lambda: nn.GroupNorm(1, 2, dtype=np.int32)),
])
def test_errors(error, message, call):
    with pytest.raises(error, match=message):
        call()
