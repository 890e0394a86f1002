"""RMSprop and Adagrad against explicit loops from torch's documented algorithms (and torch itself
when installed); name-keyed state that survives a checkpoint and resumes bit-identically."""
import numpy as np
import pytest
from _optim_reference import reference

from itnet_np import nn, optim
from itnet_np.autograd.tensor import Tensor
from itnet_np.errors import CheckpointError, ConfigError
from itnet_np.io import load, save

RNG = np.random.default_rng(7)
P0 = RNG.standard_normal((2, 3))
GRADS = [RNG.standard_normal((2, 3)) for _ in range(6)]

CONFIGS = [
    ("RMSprop", {"lr": 0.01}),
    ("RMSprop", {"lr": 0.02, "alpha": 0.9, "eps": 1e-3}),
    ("RMSprop", {"lr": 0.01, "weight_decay": 0.1}),
    ("RMSprop", {"lr": 0.01, "momentum": 0.8}),
    ("RMSprop", {"lr": 0.01, "centered": True}),
    ("RMSprop", {"lr": 0.03, "alpha": 0.7, "eps": 1e-6, "weight_decay": 0.05, "momentum": 0.5, "centered": True}),
    ("Adagrad", {"lr": 0.1}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.3}),
    ("Adagrad", {"lr": 0.1, "weight_decay": 0.2}),
    ("Adagrad", {"lr": 0.1, "initial_accumulator_value": 0.5}),
    ("Adagrad", {"lr": 0.2, "lr_decay": 0.1, "weight_decay": 0.1, "initial_accumulator_value": 0.1, "eps": 1e-2}),
]


def _run(name, kwargs, p0=P0, grads=GRADS):
    p = nn.Parameter(np.array(p0))
    opt = getattr(optim, name)([p], **kwargs)
    for g in grads:
        p.grad = Tensor(np.array(g, dtype=p.dtype))
        opt.step()
    return p, opt


@pytest.mark.parametrize("name, kwargs", CONFIGS)
def test_matches_the_documented_algorithm(name, kwargs):
    p, _ = _run(name, kwargs)
    np.testing.assert_allclose(p.data, reference(name, P0, GRADS, **kwargs), rtol=1e-12, atol=1e-14)


def test_first_steps_in_closed_form():
    # RMSprop step 1: v = (1 - alpha) g^2, so p1 = p0 - lr g / (sqrt(1 - alpha) |g| + eps)
    g = GRADS[0]
    p, _ = _run("RMSprop", {"lr": 0.1, "alpha": 0.75, "eps": 0.0}, grads=[g])
    np.testing.assert_allclose(p.data, P0 - 0.1 * np.sign(g) / np.sqrt(0.25), rtol=1e-14)
    # Adagrad with s0 = 0: p1 = p0 - lr sign(g); step 2 with lr_decay d uses lr / (1 + d)
    p, _ = _run("Adagrad", {"lr": 0.1, "lr_decay": 0.5, "eps": 0.0}, grads=[g, g])
    np.testing.assert_allclose(p.data, P0 - 0.1 * np.sign(g) - 0.1 / 1.5 * g / np.sqrt(2 * g * g), rtol=1e-14)


@pytest.mark.parametrize("name, kwargs", CONFIGS)
def test_against_torch(name, kwargs):
    torch = pytest.importorskip("torch")
    p, _ = _run(name, kwargs)
    tp = torch.tensor(P0, dtype=torch.float64, requires_grad=True)
    topt = getattr(torch.optim, name)([tp], **kwargs)
    for g in GRADS:
        tp.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name, kwargs, keys", [
    ("RMSprop", {}, {"step", "square_avg"}),
    ("RMSprop", {"momentum": 0.9, "centered": True}, {"step", "square_avg", "momentum_buffer", "grad_avg"}),
    ("Adagrad", {"initial_accumulator_value": 0.3}, {"step", "sum"})])
def test_state_entries_and_load_checks(name, kwargs, keys):
    _, opt = _run(name, kwargs, grads=GRADS[:2])
    sd = opt.state_dict()
    assert set(sd["state"]["param_0"]) == keys and sd["state"]["param_0"]["step"] == 2
    assert sd["param_groups"][0]["params"] == ["param_0"]
    # the checkpoint's options come with it: a fresh optimiser of other settings takes them over
    _, fresh = _run(name, {"lr": 0.5}, grads=[])
    fresh.load_state_dict(sd)
    assert fresh.param_groups[0]["lr"] == opt.param_groups[0]["lr"] and set(fresh.state["param_0"]) == keys
    # a state missing an entry is refused, and nothing changes
    del sd["state"]["param_0"][min(keys - {"step"})]
    with pytest.raises(CheckpointError, match="entries"):
        opt.load_state_dict(sd)
    assert set(opt.state["param_0"]) == keys


@pytest.mark.parametrize("name, kwargs", [CONFIGS[5], CONFIGS[10]])
def test_checkpoint_resume_is_bit_identical(tmp_path, name, kwargs):
    def build():
        model = nn.MLP([3, 4, 2], dtype=np.float32, rng=1)
        return model, getattr(optim, name)(model.named_parameters(), **kwargs)

    rng = np.random.default_rng(0)
    grads = [[rng.standard_normal(p.shape).astype(np.float32) for p in build()[0].parameters()] for _ in range(5)]

    def run(model, opt, steps):
        for step_grads in steps:
            for p, g in zip(model.parameters(), step_grads):
                p.grad = Tensor(g)
            opt.step()

    m1, o1 = build()
    run(m1, o1, grads)
    m2, o2 = build()
    run(m2, o2, grads[:2])
    save(tmp_path / "c.npz", {"model": m2.state_dict(), "optim": o2.state_dict()})
    m3, o3 = build()
    ck = load(tmp_path / "c.npz")
    m3.load_state_dict(ck["model"])
    o3.load_state_dict(ck["optim"])
    run(m3, o3, grads[2:])
    for (n, a), b in zip(m1.named_parameters(), m3.parameters()):
        assert b.data.dtype == np.float32
        np.testing.assert_array_equal(a.data, b.data, err_msg=n)
    for n, s in o1.state.items():
        for k, v in s.items():
            np.testing.assert_array_equal(o3.state[n][k], v, err_msg=f"{n}.{k}")


@pytest.mark.parametrize("name, kwargs, match", [
    ("RMSprop", {"alpha": 1.5}, "alpha"), ("RMSprop", {"alpha": -0.1}, "alpha"), ("RMSprop", {"eps": -1.0}, "eps"),
    ("RMSprop", {"momentum": -0.5}, "momentum"), ("RMSprop", {"lr": -1.0}, "lr"),
    ("RMSprop", {"weight_decay": -1.0}, "weight_decay"), ("Adagrad", {"lr_decay": -1.0}, "lr_decay"),
    ("Adagrad", {"initial_accumulator_value": -0.1}, "initial_accumulator_value"),
    ("Adagrad", {"eps": float("nan")}, "eps"), ("Adagrad", {"betas": (0.9, 0.9)}, "unknown option")])
def test_config_errors(name, kwargs, match):
    with pytest.raises(ConfigError, match=match):  # options given as a param group, checked the same way
        getattr(optim, name)([{"params": [nn.Parameter(np.zeros(2))], **kwargs}])
