"""ReduceLROnPlateau: hand-derived trajectories, an explicit simulation of torch's documented rule,
checkpoint round trips (torch itself when installed)."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from itnet_np import nn, optim
from itnet_np.autograd.tensor import Tensor
from itnet_np.errors import CheckpointError, ConfigError
from itnet_np.io import load, save


def _opt(*lrs):
    return optim.SGD([{"params": [(f"p{k}", nn.Parameter(np.zeros(1)))], "lr": lr} for k, lr in enumerate(lrs)])


def _trajectory(sched, metrics):
    out = []
    for m in metrics:
        sched.step(m)
        out.append(sched.get_last_lr()[0])
    return out


def test_patience_by_hand():
    # best 9 after step 2; steps 3, 4, 5 are bad, and the third bad one (> patience 2) halves the lr.
    sched = optim.ReduceLROnPlateau(_opt(1.0), factor=0.5, patience=2, threshold=0.0, threshold_mode="abs")
    metrics = [10, 9, 9, 9, 9, 8, 8, 8, 8, 8]
    assert _trajectory(sched, metrics) == [1, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert sched.best == 8 and sched.num_bad_steps == 1 and sched.last_step == 10


def test_cooldown_by_hand():
    # patience 0: every non-improving step would cut; a cooldown of 2 ignores the 2 steps after a cut
    sched = optim.ReduceLROnPlateau(_opt(1.0), factor=0.5, patience=0, cooldown=2)
    assert _trajectory(sched, [5.0] * 8) == [1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]


@pytest.mark.parametrize("mode, threshold_mode, better, worse", [
    ("min", "rel", 0.89, 0.91), ("min", "abs", 0.89, 0.95), ("max", "rel", 1.11, 1.09), ("max", "abs", 1.11, 1.05)])
def test_thresholds(mode, threshold_mode, better, worse):
    sched = optim.ReduceLROnPlateau(_opt(1.0), mode=mode, threshold=0.1, threshold_mode=threshold_mode)
    assert sched.is_better(better, 1.0) and not sched.is_better(worse, 1.0)
    assert not sched.is_better(math.nan, 1.0)
    assert sched.best == (math.inf if mode == "min" else -math.inf)
    assert sched.is_better(0.0, sched.best)  # any finite first metric improves on the start


def test_min_lr_per_group_and_eps():
    # factor 0.5, patience 0, a constant metric: a cut every step from step 2 on
    sched = optim.ReduceLROnPlateau(_opt(1.0, 0.01), factor=0.5, patience=0, min_lr=[0.3, 0.0])
    for _ in range(40):
        sched.step(1.0)
    first, second = sched.get_last_lr()
    assert first == 0.3  # 1 -> 0.5 -> max(0.25, 0.3)
    # a cut from lr to lr / 2 is skipped once it changes the lr by no more than eps = 1e-8:
    # 0.01 / 2^19 = 1.9e-8 is the first lr with lr / 2 <= 1e-8
    assert second == 0.01 / 2 ** 19


def _simulate(metrics, lrs, mode, factor, patience, threshold, threshold_mode, cooldown, min_lr, eps=1e-8):
    """torch's documented rule, step by step, for one group."""
    best = math.inf if mode == "min" else -math.inf
    bad = left = 0
    lr, out = lrs, []
    for m in metrics:
        if mode == "min":
            improved = m < (best * (1 - threshold) if threshold_mode == "rel" else best - threshold)
        else:
            improved = m > (best * (1 + threshold) if threshold_mode == "rel" else best + threshold)
        if improved:
            best, bad = m, 0
        else:
            bad += 1
        if left > 0:
            left, bad = left - 1, 0
        if bad > patience:
            new = max(lr * factor, min_lr)
            lr = new if lr - new > eps else lr
            left, bad = cooldown, 0
        out.append(lr)
    return out


@given(metrics=st.lists(st.sampled_from([1.0, 1.05, 0.95, 0.9, 2.0, 0.5, math.nan, 0.99999]), max_size=40),
       mode=st.sampled_from(["min", "max"]), factor=st.sampled_from([0.1, 0.5, 0.9]),
       patience=st.integers(0, 4), threshold=st.sampled_from([0.0, 1e-4, 0.05]),
       threshold_mode=st.sampled_from(["rel", "abs"]), cooldown=st.integers(0, 3),
       min_lr=st.sampled_from([0.0, 0.02]))
def test_matches_an_explicit_simulation(metrics, mode, factor, patience, threshold, threshold_mode, cooldown,
                                        min_lr):
    config = {"mode": mode, "factor": factor, "patience": patience, "threshold": threshold,
              "threshold_mode": threshold_mode, "cooldown": cooldown, "min_lr": min_lr}
    sched = optim.ReduceLROnPlateau(_opt(1.0), **config)
    assert _trajectory(sched, metrics) == _simulate(metrics, 1.0, **config)


@pytest.mark.parametrize("mode, cut", [("min", 0), ("max", 0), ("min", 7), ("max", 11)])
def test_checkpoint_round_trip_resumes_exactly(tmp_path, mode, cut):
    rng = np.random.default_rng(5)
    metrics = list(np.round(rng.uniform(0, 1, 30), 1))  # ties make plateaus
    config = {"mode": mode, "factor": 0.5, "patience": 2, "cooldown": 1}

    def build():
        opt = _opt(1.0, 0.1)
        return opt, optim.ReduceLROnPlateau(opt, **config)

    _, s1 = build()
    whole = [list(s1.get_last_lr())]
    for m in metrics:
        s1.step(m)
        whole.append(s1.get_last_lr())
    opt2, s2 = build()
    for m in metrics[:cut]:
        s2.step(m)
    save(tmp_path / "c.npz", {"optim": opt2.state_dict(), "sched": s2.state_dict()})  # best may be +-inf
    opt3, s3 = build()
    ck = load(tmp_path / "c.npz")
    opt3.load_state_dict(ck["optim"])
    s3.load_state_dict(ck["sched"])
    assert s3.state_dict() == s2.state_dict()
    resumed = [s3.get_last_lr()]
    for m in metrics[cut:]:
        s3.step(m)
        resumed.append(s3.get_last_lr())
    assert resumed == whole[cut:]


def test_errors_and_metric_types():
    opt = _opt(1.0, 1.0)
    for kwargs, match in [({"mode": "avg"}, "mode"), ({"threshold_mode": "pct"}, "threshold_mode"),
                          ({"factor": 1.0}, "factor"), ({"factor": -0.5}, "factor"),
                          ({"patience": -1}, "patience"), ({"cooldown": 1.5}, "cooldown"),
                          ({"threshold": -1e-3}, "threshold"), ({"min_lr": [0.1]}, "min_lr"),
                          ({"min_lr": -1.0}, "min_lr")]:
        with pytest.raises(ConfigError, match=match):
            optim.ReduceLROnPlateau(opt, **kwargs)
    sched = optim.ReduceLROnPlateau(opt, patience=0)
    for bad in ("abc", None, np.ones(3)):
        with pytest.raises(ConfigError, match="metric"):
            sched.step(bad)
    sched.step(Tensor(np.array(2.0)))
    sched.step(np.float32(3.0))  # worse than 2 with patience 0: a cut
    assert sched.best == 2.0 and sched.get_last_lr() == [0.1, 0.1]
    for bad in ({"best": 1.0}, {"best": "x", "num_bad_steps": 0, "cooldown_left": 0, "last_step": 0},
                {"best": 1.0, "num_bad_steps": -1, "cooldown_left": 0, "last_step": 0}, [1, 2]):
        with pytest.raises(CheckpointError):
            sched.load_state_dict(bad)
    assert sched.best == 2.0 and sched.last_step == 2


def test_against_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    metrics = list(np.round(rng.uniform(0, 1, 60), 1))
    for config in ({"mode": "min", "factor": 0.5, "patience": 2}, {"mode": "max", "patience": 1, "cooldown": 2,
                                                                   "threshold_mode": "abs", "threshold": 0.05}):
        topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **config)
        expected = []
        for m in metrics:
            tsched.step(m)
            expected.append(topt.param_groups[0]["lr"])
        assert _trajectory(optim.ReduceLROnPlateau(_opt(1.0), **config), metrics) == expected
