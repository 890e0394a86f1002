"""Every optimiser on 0-d parameters (issue 7, defect 6) and on float32, against the explicit loops
of _optim_reference; clipping keeps gradients as arrays of the parameter's dtype."""
import numpy as np
import pytest
from _optim_reference import reference

from itnet_np import nn, optim
from itnet_np.errors import GraphError
from itnet_np.autograd.tensor import Tensor

CONFIGS = [
    ("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.1}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.05}),
    ("SGD", {"lr": 0.1, "momentum": 0.5, "dampening": 0.3}),
    ("Adam", {"lr": 0.05, "weight_decay": 0.1, "amsgrad": True}),
    ("AdamW", {"lr": 0.05, "weight_decay": 0.1}),
    ("RMSprop", {"lr": 0.01, "weight_decay": 0.1, "momentum": 0.9, "centered": True}),
    ("Adagrad", {"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.1, "initial_accumulator_value": 0.1}),
]
SCALAR_GRADS = [0.5, -1.25, 2.0, 0.75, -0.3]


def _steps(opt, p, grads, clip=None):
    for g in grads:
        p.grad = Tensor(np.array(g, dtype=p.dtype))
        if clip is not None:
            clip([p])
        opt.step()


def test_issue_reproducer_sgd_momentum_weight_decay_0d():
    # p = 1, lr 0.1, momentum 0.9, weight_decay 0.1, three steps with grad 0.5: torch gives 0.666274
    p = nn.Parameter(np.array(1.0))
    opt = optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1)
    _steps(opt, p, [0.5] * 3)
    assert abs(float(p.data) - 0.666274) < 5e-7
    np.testing.assert_allclose(p.data, reference("SGD", 1.0, [0.5] * 3, lr=0.1, momentum=0.9, weight_decay=0.1),
                               rtol=1e-14)
    buf = opt.state["param_0"]["momentum_buffer"]
    assert isinstance(buf, np.ndarray) and buf.shape == () and buf.dtype == np.float64


def test_sgd_momentum_after_clip_grad_norm_0d():
    grads = [3.0, -2.0, 0.5, 5.0]
    clipped = [g * min(1.0, 1.0 / (abs(g) + 1e-6)) for g in grads]  # torch's clip_grad_norm_ coefficient
    p = nn.Parameter(np.array(1.0))
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    _steps(opt, p, grads, clip=lambda ps: optim.clip_grad_norm_(ps, 1.0))
    np.testing.assert_allclose(p.data, reference("SGD", 1.0, clipped, lr=0.1, momentum=0.9), rtol=1e-14)


@pytest.mark.parametrize("name, kwargs", CONFIGS)
def test_every_optimiser_on_a_0d_parameter(name, kwargs):
    p = nn.Parameter(np.array(0.7))
    opt = getattr(optim, name)([p], **kwargs)
    _steps(opt, p, SCALAR_GRADS)
    assert isinstance(p.data, np.ndarray) and p.data.shape == ()
    np.testing.assert_allclose(p.data, reference(name, 0.7, SCALAR_GRADS, **kwargs), rtol=1e-13, atol=1e-15)
    for key, value in opt.state["param_0"].items():
        if key != "step":
            assert isinstance(value, np.ndarray) and value.shape == () and value.dtype == np.float64, key


@pytest.mark.parametrize("shape", [(), (2, 3)])
@pytest.mark.parametrize("name, kwargs", CONFIGS)
def test_float32_stays_float32(name, kwargs, shape):
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal(shape)
    grads = [rng.standard_normal(shape) for _ in range(5)]
    for clip in (None, lambda ps: optim.clip_grad_norm_(ps, 0.8), lambda ps: optim.clip_grad_value_(ps, 0.6)):
        p = nn.Parameter(p0.astype(np.float32))
        opt = getattr(optim, name)([p], **kwargs)
        seen = []

        def record_and_clip(ps, clip=clip, seen=seen):
            if clip is not None:
                clip(ps)
            seen.append(np.array(ps[0].grad.data, dtype=np.float64))
            assert isinstance(ps[0].grad.data, np.ndarray) and ps[0].grad.data.dtype == np.float32

        _steps(opt, p, grads, clip=record_and_clip)
        assert isinstance(p.data, np.ndarray) and p.data.dtype == np.float32 and p.data.shape == shape
        for key, value in opt.state["param_0"].items():
            if key != "step":
                assert isinstance(value, np.ndarray) and value.dtype == np.float32 and value.shape == shape, key
        # the float32 run follows the float64 reference fed the same (clipped) gradients
        np.testing.assert_allclose(p.data, reference(name, p0.astype(np.float32), seen, **kwargs),
                                   rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(), (3,)])
def test_clipping_returns_arrays_of_the_gradient_dtype(dtype, shape):
    g = np.full(shape, 4.0, dtype)
    for clip, expected in ((lambda ps: optim.clip_grad_norm_(ps, 1.0), None),
                           (lambda ps: optim.clip_grad_value_(ps, 1.5), 1.5)):
        p = nn.Parameter(np.zeros(shape, dtype))
        p.grad = Tensor(g.copy())
        total = clip([p])
        out = p.grad.data
        assert isinstance(out, np.ndarray) and out.dtype == dtype and out.shape == shape
        if expected is None:
            expected = 4.0 / (total + 1e-6)  # total = 4 sqrt(size)
            assert total == pytest.approx(4.0 * np.sqrt(g.size), rel=1e-12)
        np.testing.assert_allclose(out, np.full(shape, expected), rtol=1e-6 if dtype == np.float32 else 1e-14)


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.Adam(ps, lr=0.1),
                                  lambda ps: optim.RMSprop(ps, lr=0.1),
                                  lambda ps: optim.Adagrad(ps, lr=0.1)])
def test_step_counts_as_an_in_place_change(make):
    """step() writes the parameters in place: a graph recorded before it would backpropagate with
    the new values (silently wrong gradients), so the engine's version check must see the write."""
    w = nn.Parameter(np.array([1.0, 2.0]))
    opt = make([w])
    stale = (w * w).sum()          # saves w for its VJP
    (w * w).sum().backward()
    opt.step()
    with pytest.raises(GraphError, match="modified"):
        stale.backward()
