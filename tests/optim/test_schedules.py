"""Learning-rate schedules against their closed forms (and torch when installed): the closed-form
schedules applied by LRScheduler. ReduceLROnPlateau is tested in test_plateau.py."""
import itertools
import math

import numpy as np
import pytest

from itnet_np import nn, optim
from itnet_np.errors import CheckpointError, ConfigError


# ----- schedules ------------------------------------------------------------------------------
def _lrs(schedule, n, base=0.5):
    opt = optim.SGD([nn.Parameter(np.zeros(1))], lr=base)
    sched = optim.LRScheduler(opt, schedule)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        assert sched.get_lr() == [out[-1]] == sched.get_last_lr()
        sched.step()
    return np.array(out)


def test_schedule_closed_forms():
    t = np.arange(30)
    np.testing.assert_allclose(_lrs(optim.Constant(0.2), 30), 0.5 * 0.2)
    np.testing.assert_allclose(_lrs(optim.StepDecay(7, 0.5), 30), 0.5 * 0.5 ** (t // 7), rtol=1e-15)
    cos = 0.01 + (0.5 - 0.01) * (1 + np.cos(np.pi * np.minimum(t, 20) / 20)) / 2
    np.testing.assert_allclose(_lrs(optim.Cosine(20, eta_min=0.01), 30), cos, rtol=1e-14)
    assert _lrs(optim.Cosine(20, eta_min=0.01), 30)[20:].tolist() == [0.01] * 10  # held, no restart
    warm = 0.5 * (0.1 + 0.9 * np.minimum(t, 10) / 10)
    np.testing.assert_allclose(_lrs(optim.LinearWarmup(10, start_factor=0.1), 30), warm, rtol=1e-14)


def test_warmup_then_cosine_composition():
    lrs = _lrs(optim.LinearWarmup(5).then(optim.Cosine(10, eta_min=0.0)).then(optim.Constant(0.1)), 20)
    t = np.arange(20)
    expected = np.where(t < 5, 0.5 * t / 5,
                        np.where(t < 15, 0.5 * (1 + np.cos(np.pi * (t - 5) / 10)) / 2, 0.05))
    np.testing.assert_allclose(lrs, expected, rtol=1e-14, atol=1e-16)
    seq = optim.Sequence((optim.Constant(1.0), 3), (optim.StepDecay(2, 0.1), 4), optim.Constant(0.0))
    np.testing.assert_allclose(_lrs(seq, 9, base=1.0), [1, 1, 1, 1, 1, 0.1, 0.1, 0, 0], rtol=1e-15)
    with pytest.raises(ConfigError, match="never ends"):
        optim.StepDecay(2).then(optim.Constant())


def test_scheduler_state_dict_and_groups():
    opt = optim.SGD([{"params": [("a", nn.Parameter(np.zeros(1)))], "lr": 1.0},
                     {"params": [("b", nn.Parameter(np.zeros(1)))], "lr": 0.1}])
    sched = optim.LRScheduler(opt, optim.StepDecay(2, 0.5))
    for _ in range(5):
        sched.step()
    assert sched.get_last_lr() == [0.25, 0.025]
    sd = sched.state_dict()
    opt2 = optim.SGD([{"params": [("a", nn.Parameter(np.zeros(1)))], "lr": 1.0},
                      {"params": [("b", nn.Parameter(np.zeros(1)))], "lr": 0.1}])
    sched2 = optim.LRScheduler(opt2, optim.StepDecay(2, 0.5))
    sched2.load_state_dict(sd)
    assert sched2.get_last_lr() == [0.25, 0.025] and sched2.last_step == 5
    with pytest.raises(CheckpointError):
        sched2.load_state_dict({"last_step": 1})


def test_schedules_against_torch():
    torch = pytest.importorskip("torch")

    def torch_lrs(make, n):
        return _torch_lrs(torch, make, n)

    np.testing.assert_allclose(_lrs(optim.StepDecay(3, 0.3), 12),
                               torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.3), 12), rtol=1e-12)
    np.testing.assert_allclose(
        _lrs(optim.Cosine(10, eta_min=0.05), 11),
        torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 10, eta_min=0.05), 11), rtol=1e-12)
    np.testing.assert_allclose(
        _lrs(optim.LinearWarmup(6, start_factor=0.25), 10),
        torch_lrs(lambda o: torch.optim.lr_scheduler.LinearLR(o, 0.25, 1.0, total_iters=6), 10), rtol=1e-12)


# ----- exponential, multi-step ----------------------------------------------------------------
def test_exponential_and_multistep_closed_forms():
    t = np.arange(25)
    np.testing.assert_allclose(_lrs(optim.Exponential(0.9), 25), 0.5 * 0.9 ** t, rtol=1e-14)
    # milestones are sorted, and one listed twice applies gamma twice (torch's Counter semantics)
    lrs = _lrs(optim.MultiStep([12, 3, 7, 7], gamma=0.5), 25)
    drops = (t >= 3).astype(int) + 2 * (t >= 7) + (t >= 12)
    np.testing.assert_allclose(lrs, 0.5 * 0.5 ** drops, rtol=1e-15)
    assert lrs[2] == 0.5 and lrs[3] == 0.25 and lrs[7] == 0.0625
    np.testing.assert_allclose(_lrs(optim.MultiStep(np.array([2, 4]), 0.1), 6, base=1.0),
                               [1, 1, 0.1, 0.1, 0.01, 0.01], rtol=1e-15)
    # composed: 4 steps of warm-up, then exponential decay on its own clock
    lrs = _lrs(optim.LinearWarmup(4).then(optim.Exponential(0.5)), 8, base=1.0)
    np.testing.assert_allclose(lrs, [0, 0.25, 0.5, 0.75, 1, 0.5, 0.25, 0.125], rtol=1e-15)


# ----- one-cycle ------------------------------------------------------------------------------
def _one_cycle_reference(total, base, pct=0.3, div=25.0, final=1e4, three_phase=False, anneal="cos"):
    """torch's OneCycleLR lr at t = 0 .. total - 1, from its documented knots: (step, lr) pairs joined
    by half cosines (or straight lines)."""
    initial = base / div
    low = initial / final
    peak = pct * total - 1
    knots = [(0.0, initial), (peak, base)]
    knots += [(2 * pct * total - 2, initial), (total - 1, low)] if three_phase else [(total - 1, low)]
    out = []
    for t in range(total):
        for (a, u), (b, w) in itertools.pairwise(knots):
            if t <= b:
                break
        x = (t - a) / (b - a)
        rise = (1 - math.cos(math.pi * x)) / 2 if anneal == "cos" else x  # 0 at a, 1 at b
        out.append(u + (w - u) * rise)
    return np.array(out)


@pytest.mark.parametrize("total, kwargs", [
    (100, {}), (37, {"pct_start": 0.25, "div_factor": 10.0, "final_div_factor": 100.0}),
    (50, {"three_phase": True}), (41, {"pct_start": 0.4, "three_phase": True, "anneal": "linear"}),
    (20, {"anneal": "linear", "pct_start": 0.5}), (10, {"pct_start": 0.15})])
def test_one_cycle_against_its_knots(total, kwargs):
    ref_kwargs = {{"pct_start": "pct", "div_factor": "div", "final_div_factor": "final"}.get(k, k): v
                  for k, v in kwargs.items()}
    expected = _one_cycle_reference(total, 0.5, **ref_kwargs)
    lrs = _lrs(optim.OneCycle(total, **kwargs), total + 5)
    np.testing.assert_allclose(lrs[:total], expected, rtol=1e-12, atol=1e-18)
    div, final = kwargs.get("div_factor", 25.0), kwargs.get("final_div_factor", 1e4)
    assert lrs[0] == pytest.approx(0.5 / div, rel=1e-15)
    assert lrs[:total].max() <= 0.5 and lrs[total - 1] == pytest.approx(0.5 / div / final, rel=1e-12)
    assert lrs[total:].tolist() == [lrs[total - 1]] * 5  # held at the minimum afterwards
    peak = kwargs.get("pct_start", 0.3) * total - 1
    if peak == int(peak):
        assert lrs[int(peak)] == pytest.approx(0.5, rel=1e-15)


def test_one_cycle_config_errors():
    for kwargs, match in [({"total_steps": 1}, "total_steps"), ({"total_steps": 10.0}, "total_steps"),
                          ({"total_steps": 10, "pct_start": 1.5}, "pct_start"),
                          ({"total_steps": 10, "pct_start": 0.1}, "no length"),  # peak at step 0
                          ({"total_steps": 10, "pct_start": 1.0}, "no length"),
                          ({"total_steps": 10, "pct_start": 0.6, "three_phase": True}, "no length"),
                          ({"total_steps": 10, "div_factor": 0}, "div_factor"),
                          ({"total_steps": 10, "anneal": "exp"}, "anneal")]:
        with pytest.raises(ConfigError, match=match):
            optim.OneCycle(**kwargs)
    for bad, match in [({"milestones": [0, 3]}, "milestones"), ({"milestones": [2.5]}, "milestones")]:
        with pytest.raises(ConfigError, match=match):
            optim.MultiStep(**bad)
    with pytest.raises(ConfigError, match="gamma"):
        optim.Exponential(0.0)


def test_new_schedules_against_torch():
    torch = pytest.importorskip("torch")
    sched = torch.optim.lr_scheduler
    np.testing.assert_allclose(_lrs(optim.Exponential(0.8), 12),
                               _torch_lrs(torch, lambda o: sched.ExponentialLR(o, 0.8), 12), rtol=1e-12)
    np.testing.assert_allclose(_lrs(optim.MultiStep([2, 5, 5], 0.3), 12),
                               _torch_lrs(torch, lambda o: sched.MultiStepLR(o, [2, 5, 5], 0.3), 12), rtol=1e-12)
    for kwargs in ({}, {"three_phase": True, "pct_start": 0.4}, {"anneal": "linear", "div_factor": 5.0}):
        torch_kwargs = {("anneal_strategy" if k == "anneal" else k): v for k, v in kwargs.items()}
        np.testing.assert_allclose(
            _lrs(optim.OneCycle(30, **kwargs), 30),
            _torch_lrs(torch, lambda o, kw=torch_kwargs: sched.OneCycleLR(o, max_lr=0.5, total_steps=30,
                                                                         cycle_momentum=False, **kw), 30),
            rtol=1e-12)


def _torch_lrs(torch, make, n):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    sched = make(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(out)
