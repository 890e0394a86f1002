"""Optimisers, schedules and clipping against hand-written formulas (and torch when installed)."""
import math

import numpy as np
import pytest

from itnet_np import nn, optim
from itnet_np.autograd.tensor import Tensor
from itnet_np.errors import CheckpointError, ConfigError
from itnet_np.io import load, save

P0 = np.array([[0.5, -1.0, 2.0], [0.0, 3.0, -0.25]])
G1 = np.array([[0.1, -0.2, 0.3], [-0.4, 0.5, 0.6]])
G2 = np.array([[-0.3, 0.1, 0.2], [0.7, -0.1, 0.0]])


def _param(value=P0):
    return nn.Parameter(np.array(value, dtype=np.float64))


def _steps(opt, p, grads):
    for g in grads:
        p.grad = Tensor(np.array(g))
        opt.step()
    return p.data


# ----- SGD: hand-computed steps ---------------------------------------------------------------
def test_sgd_plain():
    p = _param()
    _steps(optim.SGD([p], lr=0.1), p, [G1])
    np.testing.assert_allclose(p.data, P0 - 0.1 * G1, rtol=0, atol=1e-15)


def test_sgd_weight_decay():
    p = _param()
    _steps(optim.SGD([p], lr=0.1, weight_decay=0.01), p, [G1])
    np.testing.assert_allclose(p.data, P0 - 0.1 * (G1 + 0.01 * P0), rtol=0, atol=1e-15)


def test_sgd_momentum_with_dampening():
    lr, mu, d = 0.1, 0.9, 0.3
    p = _param()
    _steps(optim.SGD([p], lr=lr, momentum=mu, dampening=d), p, [G1, G2])
    b1 = G1                              # first buffer is the gradient itself (no dampening)
    p1 = P0 - lr * b1
    b2 = mu * b1 + (1 - d) * G2
    p2 = p1 - lr * b2
    np.testing.assert_allclose(p.data, p2, rtol=0, atol=1e-15)


def test_sgd_nesterov_with_weight_decay():
    lr, mu, wd = 0.05, 0.8, 0.1
    p = _param()
    _steps(optim.SGD([p], lr=lr, momentum=mu, nesterov=True, weight_decay=wd), p, [G1, G2])
    g1 = G1 + wd * P0
    b1 = g1
    p1 = P0 - lr * (g1 + mu * b1)
    g2 = G2 + wd * p1
    b2 = mu * b1 + g2
    p2 = p1 - lr * (g2 + mu * b2)
    np.testing.assert_allclose(p.data, p2, rtol=0, atol=1e-15)


# ----- Adam / AdamW: hand-computed steps ------------------------------------------------------
def _adam_reference(grads, lr, b1, b2, eps, wd, decoupled, amsgrad=False):
    p, m, v, vmax = P0.copy(), np.zeros_like(P0), np.zeros_like(P0), np.zeros_like(P0)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p * (1 - lr * wd)           # AdamW: decay the weights, not the gradient
        else:
            g = g + wd * p                  # Adam: L2 penalty enters the moments
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = np.maximum(vmax, v)
        vhat = vmax if amsgrad else v
        denom = np.sqrt(vhat) / math.sqrt(1 - b2 ** t) + eps   # eps after the bias correction
        p = p - lr / (1 - b1 ** t) * m / denom
    return p


@pytest.mark.parametrize("cls, wd, amsgrad", [
    (optim.Adam, 0.0, False), (optim.Adam, 0.1, False), (optim.AdamW, 0.1, False), (optim.Adam, 0.0, True)])
def test_adam_family_matches_formula(cls, wd, amsgrad):
    kw = {"lr": 0.01, "betas": (0.8, 0.9), "eps": 1e-3, "weight_decay": wd, "amsgrad": amsgrad}
    p = _param()
    grads = [G1, G2, 0.1 * G1]  # a small third gradient makes amsgrad's max matter
    _steps(cls([p], **kw), p, grads)
    expected = _adam_reference(grads, 0.01, 0.8, 0.9, 1e-3, wd, decoupled=cls is optim.AdamW, amsgrad=amsgrad)
    np.testing.assert_allclose(p.data, expected, rtol=1e-13, atol=1e-15)


def test_first_adam_step_is_lr_times_sign():
    # with m_1 = (1-b1) g and v_1 = (1-b2) g^2 the bias-corrected step is lr * g / (|g| + eps)
    p = _param()
    _steps(optim.Adam([p], lr=0.01, eps=0.0), p, [G1])
    np.testing.assert_allclose(p.data, P0 - 0.01 * np.sign(G1), rtol=1e-13)


def test_adamw_differs_from_adam_with_decay():
    p, q = _param(), _param()
    _steps(optim.Adam([p], weight_decay=0.5), p, [G1, G2])
    _steps(optim.AdamW([q], weight_decay=0.5), q, [G1, G2])
    assert np.abs(p.data - q.data).max() > 1e-4
    assert optim.AdamW([_param()]).param_groups[0]["weight_decay"] == 0.01  # torch's default


@pytest.mark.parametrize("name, kwargs", [
    ("SGD", {"lr": 0.1}), ("SGD", {"lr": 0.1, "momentum": 0.9, "dampening": 0.2, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    ("Adam", {"lr": 0.01, "weight_decay": 0.1}), ("Adam", {"lr": 0.01, "amsgrad": True}),
    ("AdamW", {"lr": 0.01, "betas": (0.5, 0.7), "eps": 1e-4, "weight_decay": 0.3})])
def test_against_torch(name, kwargs):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(P0.shape) for _ in range(6)]
    p = _param()
    _steps(getattr(optim, name)([p], **kwargs), p, grads)
    tp = torch.tensor(P0, dtype=torch.float64, requires_grad=True)
    topt = getattr(torch.optim, name)([tp], **kwargs)
    for g in grads:
        tp.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12, atol=1e-14)


# ----- bookkeeping ----------------------------------------------------------------------------
def test_params_without_grad_are_skipped_and_float32_stays_float32():
    a = nn.Parameter(np.ones(3, np.float32))
    b = nn.Parameter(np.ones(3, np.float32))
    opt = optim.Adam([("a", a), ("b", b)], lr=0.1)
    a.grad = Tensor(np.full(3, 2.0, np.float32))
    opt.step()
    np.testing.assert_array_equal(b.data, 1.0)
    assert set(opt.state) == {"a"} and a.data.dtype == np.float32
    assert opt.state["a"]["exp_avg"].dtype == np.float32
    opt.zero_grad()
    assert a.grad is None


def test_state_dict_keyed_by_name_and_naming_rules():
    model = nn.MLP([2, 3, 1], rng=0)
    opt = optim.SGD(model.named_parameters(), lr=0.1, momentum=0.9)
    assert [n for n, _ in opt.param_groups[0]["params"]] == [n for n, _ in model.named_parameters()]
    assert next(n for n, _ in optim.SGD(model, lr=0.1).param_groups[0]["params"]) == "layers.0.weight"
    plain = optim.SGD(list(model.parameters()), lr=0.1)
    assert [n for n, _ in plain.param_groups[0]["params"]] == ["param_0", "param_1", "param_2", "param_3"]
    for p in model.parameters():
        p.grad = Tensor(np.ones_like(p.data))
    opt.step()
    sd = opt.state_dict()
    assert set(sd["state"]) == {n for n, _ in model.named_parameters()}
    assert sd["param_groups"][0]["params"][0] == "layers.0.weight"
    assert sd["param_groups"][0]["momentum"] == 0.9


def test_state_dict_round_trip_through_a_checkpoint_resumes_exactly(tmp_path):
    def build():
        m = nn.MLP([3, 4, 2], dtype=np.float64, rng=1)
        return m, optim.AdamW(m.named_parameters(), lr=0.05, amsgrad=True)

    rng = np.random.default_rng(0)
    grads = [[rng.standard_normal(p.shape) for p in build()[0].parameters()] for _ in range(4)]

    def run(model, opt, gs):
        for step_grads in gs:
            for p, g in zip(model.parameters(), step_grads):
                p.grad = Tensor(g)
            opt.step()

    m1, o1 = build()
    run(m1, o1, grads)                  # uninterrupted
    m2, o2 = build()
    run(m2, o2, grads[:2])
    save(tmp_path / "c.npz", {"model": m2.state_dict(), "optim": o2.state_dict()})
    m3, o3 = build()                    # fresh objects, restored from disk
    ck = load(tmp_path / "c.npz")
    m3.load_state_dict(ck["model"])
    o3.load_state_dict(ck["optim"])
    assert o3.param_groups[0]["betas"] == (0.9, 0.999) and o3.state["layers.0.bias"]["step"] == 2
    run(m3, o3, grads[2:])
    for (n, a), b in zip(m1.named_parameters(), m3.parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=n)


def test_optimizer_load_state_dict_errors():
    a, b = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(3))
    opt = optim.Adam([("a", a), ("b", b)])
    a.grad, b.grad = Tensor(np.ones(2)), Tensor(np.ones(3))
    opt.step()
    good = opt.state_dict()
    other = optim.Adam([("a", a), ("c", nn.Parameter(np.zeros(4)))])
    with pytest.raises(CheckpointError) as info:
        other.load_state_dict(good)
    msg = str(info.value)
    assert "missing parameters ['c']" in msg and "unexpected parameters ['b']" in msg
    assert "state for unknown parameter 'b'" in msg
    bad = opt.state_dict()
    bad["state"]["a"]["exp_avg"] = np.zeros(5)
    del bad["state"]["b"]["exp_avg_sq"]
    before = {k: dict(v) for k, v in opt.state.items()}
    with pytest.raises(CheckpointError) as info:
        opt.load_state_dict(bad)
    msg = str(info.value)
    assert "state 'a.exp_avg': shape (5,) float64, parameter is shape (2,) float64" in msg
    assert "state of 'b' has entries ['exp_avg', 'step'], expected ['exp_avg', 'exp_avg_sq', 'step']" in msg
    assert opt.state["a"]["exp_avg"] is before["a"]["exp_avg"]  # nothing changed
    with pytest.raises(CheckpointError, match="momentum_buffer"):
        optim.SGD([("a", a), ("b", b)], momentum=0.9).load_state_dict(good)
    with pytest.raises(CheckpointError, match="param groups"):
        opt.load_state_dict({"state": {}, "param_groups": []})
    # loaded state is a private copy
    opt.load_state_dict(good)
    good["state"]["a"]["exp_avg"][...] = 99
    assert not np.any(opt.state["a"]["exp_avg"] == 99)


def test_param_groups_and_config_errors():
    a, b = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(2))
    opt = optim.SGD([{"params": [("a", a)]}, {"params": [("b", b)], "lr": 1.0}], lr=0.1)
    a.grad = b.grad = Tensor(np.ones(2))
    opt.step()
    np.testing.assert_allclose(a.data, -0.1)
    np.testing.assert_allclose(b.data, -1.0)
    with pytest.raises(ConfigError, match="nesterov"):
        optim.SGD([a], nesterov=True)
    with pytest.raises(ConfigError, match="lr"):
        optim.Adam([a], lr=-1)
    with pytest.raises(ConfigError, match="betas"):
        optim.Adam([a], betas=(0.9, 1.0))
    with pytest.raises(ConfigError, match="appears twice"):
        optim.SGD([a, a])
    with pytest.raises(ConfigError, match="named 'x'"):
        optim.SGD([("x", a), ("x", b)])
    with pytest.raises(ConfigError, match="empty"):
        optim.SGD([])
    with pytest.raises(ConfigError, match="unknown option"):
        optim.SGD([{"params": [a], "betas": (0.9, 0.9)}])
    with pytest.raises(TypeError):
        optim.SGD(a)


# ----- clipping -------------------------------------------------------------------------------
def _with_grads(*grads):
    ps = []
    for g in grads:
        p = nn.Parameter(np.zeros_like(g))
        p.grad = None if g is None else Tensor(g.copy())
        ps.append(p)
    return ps


def test_clip_grad_norm_scales_to_max_norm():
    g1, g2 = np.array([3.0, 4.0]), np.array([[12.0]])
    ps = _with_grads(g1, g2) + [nn.Parameter(np.zeros(3))]  # a param without grad is ignored
    total = optim.clip_grad_norm_(ps, max_norm=1.3)
    assert total == pytest.approx(13.0, rel=1e-15)            # sqrt(9 + 16 + 144)
    coef = 1.3 / (13.0 + 1e-6)
    np.testing.assert_allclose(ps[0].grad.data, g1 * coef, rtol=1e-15)
    np.testing.assert_allclose(ps[1].grad.data, g2 * coef, rtol=1e-15)
    ps = _with_grads(g1, g2)
    assert optim.clip_grad_norm_([("a", ps[0]), ("b", ps[1])], max_norm=100.0) == pytest.approx(13.0)
    np.testing.assert_array_equal(ps[0].grad.data, g1)        # below the limit: untouched
    ps = _with_grads(g1, g2)
    assert optim.clip_grad_norm_(ps, max_norm=6.0, norm_type=math.inf) == 12.0
    np.testing.assert_allclose(ps[1].grad.data, g2 * 6.0 / (12.0 + 1e-6), rtol=1e-15)
    ps = _with_grads(g1, g2)
    assert optim.clip_grad_norm_(ps, 1.0, norm_type=1.0) == pytest.approx(19.0)
    assert optim.clip_grad_norm_([nn.Parameter(np.ones(2))], 1.0) == 0.0  # no grads at all


def test_clip_grad_norm_against_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    grads = [rng.standard_normal((4, 5)), rng.standard_normal(7)]
    for norm_type in (2.0, 1.0, 3.0, math.inf):
        ps = _with_grads(*grads)
        tps = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
        for tp, g in zip(tps, grads):
            tp.grad = torch.tensor(g)
        total = optim.clip_grad_norm_(ps, 0.7, norm_type=norm_type)
        ttotal = torch.nn.utils.clip_grad_norm_(tps, 0.7, norm_type=norm_type)
        assert total == pytest.approx(float(ttotal), rel=1e-12)
        for p, tp in zip(ps, tps):
            np.testing.assert_allclose(p.grad.data, tp.grad.numpy(), rtol=1e-12)
