"""Module forward hooks (pre and post, handles, order, replacement, functional_call), pickling of
modules, and the error for input that is not a Tensor or an array (defect 15)."""
import pickle

import numpy as np
import pytest

import itnet_np as itn
from itnet_np import nn
from itnet_np.errors import ConfigError, DTypeError


def _mlp():
    return nn.MLP([3, 4, 2], activation="tanh", dtype=np.float64, rng=0)


def _numpy_mlp(m, x, first_weight=None):
    w0 = m.layers[0].weight.data if first_weight is None else first_weight
    h = np.tanh(x @ w0.T + m.layers[0].bias.data)
    return h @ m.layers[1].weight.data.T + m.layers[1].bias.data


def test_forward_hooks_see_and_replace_inputs_and_outputs():
    m, x = _mlp(), np.random.default_rng(0).standard_normal((5, 3))
    calls = []
    pre = m.layers[1].register_forward_pre_hook(lambda mod, args: calls.append(("pre", mod, args[0].shape)))
    post = m.layers[1].register_forward_hook(lambda mod, args, out: calls.append(("post", mod, out.shape)))
    y = m(itn.tensor(x))
    assert calls == [("pre", m.layers[1], (5, 4)), ("post", m.layers[1], (5, 2))]
    np.testing.assert_allclose(y.data, _numpy_mlp(m, x), rtol=1e-13)
    # A non-None result replaces: the pre hook's the input (one value or a tuple), the post hook's the output.
    double = m.layers[0].register_forward_pre_hook(lambda mod, args: args[0] * 2.0)
    plus = m.register_forward_hook(lambda mod, args, out: out + 1.0)
    np.testing.assert_allclose(m(itn.tensor(x)).data, _numpy_mlp(m, 2 * x) + 1, rtol=1e-13)
    for handle in (pre, post, double, plus):
        handle.remove()
        handle.remove()                                  # removing twice is harmless
    calls.clear()
    np.testing.assert_allclose(m(itn.tensor(x)).data, _numpy_mlp(m, x), rtol=1e-13)
    assert calls == []


def test_hooks_run_in_registration_order_and_handle_is_a_context_manager():
    lin, order = nn.Linear(2, 2, dtype=np.float64, rng=0), []
    lin.register_forward_hook(lambda m, a, o: order.append(1))
    with lin.register_forward_hook(lambda m, a, o: order.append(2)):
        lin.register_forward_hook(lambda m, a, o: order.append(3))
        lin(itn.tensor(np.ones((1, 2))))
    lin(itn.tensor(np.ones((1, 2))))
    assert order == [1, 2, 3, 1, 3]
    with pytest.raises(ConfigError, match="hook must be callable"):
        lin.register_forward_hook("not a function")


def test_hooks_run_under_functional_call_and_see_the_overrides():
    m, x = _mlp(), np.random.default_rng(1).standard_normal((2, 3))
    seen = []
    m.layers[0].register_forward_hook(lambda mod, args, out: seen.append(mod.weight.data.copy()))
    m.register_forward_hook(lambda mod, args, out: out * 3.0)
    W = np.arange(12.0).reshape(4, 3) / 10
    source = itn.tensor(W, requires_grad=True)
    y = nn.functional_call(m, {"layers.0.weight": source}, itn.tensor(x))
    np.testing.assert_array_equal(seen[-1], W)
    np.testing.assert_allclose(y.data, 3 * _numpy_mlp(m, x, first_weight=W), rtol=1e-13)
    itn.sum(y).backward()                               # the hook's output is part of the graph
    assert source.grad is not None and m.layers[0].weight.grad is None
    np.testing.assert_allclose(m(itn.tensor(x)).data, 3 * _numpy_mlp(m, x), rtol=1e-13)


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.MLP([3, 5, 2], activation="gelu", dropout=0.2, rng=0), (4, 3)),
    (lambda: nn.Sequential(nn.Linear(3, 4, rng=1), nn.LayerNorm(4), nn.Linear(4, 2, rng=2)), (4, 3)),
    (lambda: nn.Sequential(nn.BatchNorm1d(3), nn.GroupNorm(1, 3), nn.MaxPool1d(2), nn.AdaptiveAvgPool1d(2),
                           nn.AvgPool1d(2)), (4, 3, 6)),
])
def test_modules_pickle_round_trip(make, shape):
    m = make()
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    m.train()
    m(itn.tensor(x))                                    # running statistics move away from their start
    m.eval()
    clone = pickle.loads(pickle.dumps(m))
    assert repr(clone) == repr(m) and not clone.training
    sd, sd2 = m.state_dict(), clone.state_dict()
    assert list(sd) == list(sd2)
    for k in sd:
        np.testing.assert_array_equal(sd[k], sd2[k])
        assert sd[k].dtype == sd2[k].dtype
    np.testing.assert_array_equal(clone(itn.tensor(x)).data, m(itn.tensor(x)).data)
    # The clone's parameters are its own, and still learn.
    p = next(clone.parameters())
    assert p.requires_grad and not np.shares_memory(p.data, next(m.parameters()).data)
    clone.train()
    itn.sum(clone(itn.tensor(x))).backward()
    assert p.grad is not None


def test_layers_refuse_lists_with_a_clear_error():
    # nn.Linear(2, 2)([[1., 2.]]) used to raise AttributeError ('list' object has no attribute 'shape').
    lin = nn.Linear(2, 2)
    with pytest.raises(DTypeError, match=r"linear: input must be a Tensor or an array, got list; convert it "
                                         r"with itn.tensor"):
        lin([[1.0, 2.0]])
    with pytest.raises(TypeError):                       # DTypeError is a TypeError, as torch raises
        lin((1.0, 2.0))
    with pytest.raises(DTypeError, match="layer_norm: input must be a Tensor or an array"):
        nn.LayerNorm(2)([1.0, 2.0])
    with pytest.raises(DTypeError, match="conv1d: input must be a Tensor or an array"):
        itn.nn.functional.conv1d([[[1.0]]], np.ones((1, 1, 1)))
    with pytest.raises(DTypeError, match="BatchNorm1d: input must be a Tensor or an array"):
        nn.BatchNorm1d(2)([[1.0, 2.0]])
    assert lin(np.ones((1, 2), np.float32)).shape == (1, 2)   # arrays are accepted as before
