"""Module and Parameter: registration, naming, state_dict round trips and every load error."""
import re

import numpy as np
import pytest

from itnet_np import nn
from itnet_np.autograd.tensor import Tensor
from itnet_np.errors import CheckpointError, ConfigError, DTypeError, ShapeError


class Block(nn.Module):
    def __init__(self, n, dtype=np.float64):
        super().__init__()
        self.scale = nn.Parameter(np.arange(1.0, n + 1, dtype=dtype))
        self.inner = nn.Linear(n, n, dtype=dtype, rng=1)

    def forward(self, x):
        return self.inner(x) * self.scale


class Net(nn.Module):
    def __init__(self, n=3, dtype=np.float64):
        super().__init__()
        self.first = nn.Linear(2, n, dtype=dtype, rng=0)
        self.blocks = nn.ModuleList([Block(n, dtype), Block(n, dtype)])
        self.offset = nn.Parameter(np.zeros((), dtype=dtype))
        self.register_buffer("counter", np.array([7], dtype=np.int64))

    def forward(self, x):
        x = self.first(x)
        for b in self.blocks:
            x = b(x)
        return x + self.offset


EXPECTED_NAMES = ["offset", "first.weight", "first.bias",
                  "blocks.0.scale", "blocks.0.inner.weight", "blocks.0.inner.bias",
                  "blocks.1.scale", "blocks.1.inner.weight", "blocks.1.inner.bias"]


def test_parameter_is_a_tensor_that_requires_grad():
    p = nn.Parameter(np.ones(3, np.float32))
    assert isinstance(p, Tensor) and p.requires_grad and p.is_leaf
    assert not nn.Parameter(np.ones(3), requires_grad=False).requires_grad
    assert repr(p).startswith("Parameter containing:")


def test_named_parameters_dotted_and_deterministic():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    # own parameters first, then children in assignment order, depth first
    assert names == EXPECTED_NAMES
    assert names == [n for n, _ in Net().named_parameters()]
    assert len(list(net.parameters())) == 9
    assert net.num_parameters() == 1 + (6 + 3) + 2 * (3 + 9 + 3)
    assert [n for n, _ in net.named_modules()] == [
        "", "first", "blocks", "blocks.0", "blocks.0.inner", "blocks.1", "blocks.1.inner"]
    assert [n for n, _ in net.named_children()] == ["first", "blocks"]
    assert [n for n, _ in net.named_parameters(recurse=False)] == ["offset"]


def test_registration_rules():
    net = Net()
    assert net.first.weight is net._modules["first"]._parameters["weight"]
    with pytest.raises(TypeError, match="registered parameter"):
        net.offset = np.zeros(())
    net.first.bias = None  # an optional parameter may be removed
    assert "first.bias" not in dict(net.named_parameters())
    net.first = nn.Linear(2, 3, rng=0, dtype=np.float64)  # replacing a child re-registers it
    assert "first.bias" in dict(net.named_parameters())
    net.counter = Tensor(np.array([9]))  # assigning to a buffer keeps it a buffer, stored as an array
    assert isinstance(net._buffers["counter"], np.ndarray) and net.state_dict()["counter"].tolist() == [9]
    del net.offset
    assert "offset" not in dict(net.named_parameters())
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = net.nothing

    class Forgot(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(np.ones(2))

    with pytest.raises(AttributeError, match=r"super\(\).__init__\(\)"):
        Forgot()


def test_shared_parameter_listed_once():
    net = Net()
    net.blocks[1].inner.weight = net.blocks[0].inner.weight
    names = [n for n, _ in net.named_parameters()]
    assert "blocks.1.inner.weight" not in names and "blocks.0.inner.weight" in names
    sd = net.state_dict()
    assert "blocks.1.inner.weight" not in sd
    net.load_state_dict(sd)  # consistent with state_dict: no missing key


def test_state_dict_copies_and_includes_buffers():
    net = Net()
    sd = net.state_dict()
    # each module's parameters, then its buffers, depth first
    assert list(sd) == ["offset", "counter"] + EXPECTED_NAMES[1:]
    for name, p in net.named_parameters():
        assert isinstance(sd[name], np.ndarray) and not np.shares_memory(sd[name], p.data)
        np.testing.assert_array_equal(sd[name], p.data)
    sd["first.weight"][...] = 123.0
    assert not np.any(net.first.weight.data == 123.0)


def test_load_state_dict_round_trip_in_place():
    a, b = Net(), Net()
    for p in b.parameters():
        p.data[...] = np.random.default_rng(5).standard_normal(p.shape)
    x = np.random.default_rng(0).standard_normal((4, 2))
    arrays_before = [p.data for p in a.parameters()]
    result = a.load_state_dict({k: (Tensor(v) if k == "offset" else v) for k, v in b.state_dict().items()})
    assert result.missing_keys == [] and result.unexpected_keys == []
    # values copied into the existing arrays, so anything holding a parameter sees the change
    assert all(p.data is arr for p, arr in zip(a.parameters(), arrays_before))
    np.testing.assert_array_equal(a(Tensor(x)).data, b(Tensor(x)).data)


def test_load_state_dict_lists_every_problem_at_once():
    net = Net()
    sd = net.state_dict()
    del sd["first.bias"]                          # missing
    del sd["counter"]                             # missing buffer
    sd["extra.weight"] = np.zeros((5, 5))         # unexpected
    sd["blocks.0.scale"] = np.zeros(4)            # mis-shaped (model has (3,))
    sd["blocks.1.inner.weight"] = np.zeros((3, 3), np.float32)  # wrong dtype
    before = net.state_dict()
    with pytest.raises(CheckpointError) as info:
        net.load_state_dict(sd)
    msg = str(info.value)
    assert "missing keys" in msg and "'first.bias' (shape (3,) float64)" in msg and "'counter'" in msg
    assert "unexpected keys" in msg and "'extra.weight' (shape (5, 5) float64)" in msg
    assert re.search(r"shape mismatch for 'blocks.0.scale': checkpoint has \(4,\), model has \(3,\)", msg)
    assert re.search(r"dtype mismatch for 'blocks.1.inner.weight': checkpoint has float32, model has float64",
                     msg)
    # all-or-nothing: the valid entries were not copied either
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_load_state_dict_non_strict():
    net = Net()
    sd = {"first.weight": np.full((3, 2), 2.0), "bogus": np.zeros(1)}
    result = net.load_state_dict(sd, strict=False)
    assert result.unexpected_keys == ["bogus"]
    assert "first.bias" in result.missing_keys and len(result.missing_keys) == 9
    np.testing.assert_array_equal(net.first.weight.data, 2.0)
    with pytest.raises(CheckpointError, match="shape mismatch for 'first.weight'"):
        net.load_state_dict({"first.weight": np.zeros((2, 3))}, strict=False)
    with pytest.raises(CheckpointError, match="expected a dict"):
        net.load_state_dict([("first.weight", np.zeros((3, 2)))])


def test_train_eval_recursive_and_zero_grad():
    net = nn.Sequential(nn.Linear(2, 3, rng=0), nn.Sequential(nn.Dropout(0.5), nn.Linear(3, 1, rng=1)))
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    net(Tensor(np.ones((2, 2), np.float32))).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_call_forward_and_repr():
    class Twice(nn.Module):
        def forward(self, x, k=2):
            return x * k

    assert Twice()(3, k=4) == 12
    with pytest.raises(NotImplementedError, match="Module does not define forward"):
        nn.Module()(1)
    text = repr(Net())
    assert text.startswith("Net(\n  (first): Linear(in_features=2, out_features=3, bias=True)")
    assert "(blocks): ModuleList(\n    (0): Block(\n      (inner): Linear(" in text


def test_apply_and_requires_grad():
    net = Net()
    seen = []
    net.apply(lambda m: seen.append(type(m).__name__))
    assert seen[-1] == "Net" and seen.count("Linear") == 3
    net.requires_grad_(False)
    assert not any(p.requires_grad for p in net.parameters())


# ----- functional_call ------------------------------------------------------------------------------
def _net_numpy(net, x, **override):
    """Net's forward written out in NumPy from its parameters (names -> arrays), overrides applied."""
    bias = net.first.bias
    p = {"offset": net.offset.data, "first.weight": net.first.weight.data,
         "first.bias": 0.0 if bias is None else bias.data}
    for k in (0, 1):
        b = net.blocks[k]
        p.update({f"blocks.{k}.scale": b.scale.data, f"blocks.{k}.inner.weight": b.inner.weight.data,
                  f"blocks.{k}.inner.bias": b.inner.bias.data})
    p.update(override)
    y = x @ p["first.weight"].T + p["first.bias"]
    for k in (0, 1):
        y = (y @ p[f"blocks.{k}.inner.weight"].T + p[f"blocks.{k}.inner.bias"]) * p[f"blocks.{k}.scale"]
    return y + p["offset"]


def test_functional_call_swaps_nested_parameters_and_restores_them():
    net, rng = Net(), np.random.default_rng(0)
    x, W, s = rng.standard_normal((4, 2)), rng.standard_normal((3, 3)), rng.standard_normal(3)
    before = dict(net.named_parameters())
    y = nn.functional_call(net, {"blocks.1.inner.weight": W, "blocks.0.scale": Tensor(s)}, Tensor(x))
    want = _net_numpy(net, x, **{"blocks.1.inner.weight": W, "blocks.0.scale": s})
    np.testing.assert_allclose(y.data, want, rtol=1e-13, atol=1e-13)
    after = dict(net.named_parameters())
    assert all(after[n] is p and isinstance(p, nn.Parameter) for n, p in before.items())
    np.testing.assert_allclose(net(Tensor(x)).data, _net_numpy(net, x), rtol=1e-13, atol=1e-13)
    # keyword arguments reach forward
    np.testing.assert_allclose(nn.functional_call(net, {}, x=Tensor(x)).data, _net_numpy(net, x), rtol=1e-13)


def test_functional_call_gradients_reach_the_override_tensors():
    rng = np.random.default_rng(1)
    lin = nn.Linear(3, 2, dtype=np.float64, rng=0)
    x, u = rng.standard_normal((5, 3)), rng.standard_normal((5, 2))
    source = Tensor(rng.standard_normal((2, 3)), requires_grad=True)
    W = source * 2.0                                     # a derived parameter
    y = nn.functional_call(lin, {"weight": W}, Tensor(x))
    (y * u).sum().backward()
    np.testing.assert_allclose(source.grad.data, 2.0 * u.T @ x, rtol=1e-13)   # d<u, x W^T>/dW = u^T x
    np.testing.assert_allclose(lin.bias.grad.data, u.sum(0), rtol=1e-13)      # not replaced: own grad
    assert lin.weight.grad is None                                            # replaced: no grad


def test_functional_call_restores_on_exception():
    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(2, 2, dtype=np.float64, rng=0)

        def forward(self, x):
            self.inner(x)
            raise RuntimeError("boom")

    m = Boom()
    original = m.inner.weight
    with pytest.raises(RuntimeError, match="boom"):
        nn.functional_call(m, {"inner.weight": np.zeros((2, 2))}, Tensor(np.ones((1, 2))))
    assert m.inner.weight is original and m.inner._parameters["weight"] is original


def test_functional_call_ties_and_empty_slots():
    net, x = Net(), np.random.default_rng(2).standard_normal((2, 2))
    net.blocks[1].inner.weight = net.blocks[0].inner.weight          # tied
    W = np.eye(3)
    y = nn.functional_call(net, {"blocks.0.inner.weight": W}, Tensor(x))
    ref = _net_numpy(net, x, **{"blocks.0.inner.weight": W, "blocks.1.inner.weight": W})
    np.testing.assert_allclose(y.data, ref, rtol=1e-13, atol=1e-13)
    with pytest.raises(ConfigError, match="same .tied. parameter"):
        nn.functional_call(net, {"blocks.0.inner.weight": W, "blocks.1.inner.weight": 2 * W}, Tensor(x))
    net.first.bias = None                                             # an empty slot takes any value
    b = np.array([1.0, 2.0, 3.0])
    y = nn.functional_call(net, {"first.bias": b}, Tensor(x))
    assert net.first.bias is None
    np.testing.assert_allclose(y.data, _net_numpy(net, x, **{"first.bias": b}), rtol=1e-13, atol=1e-13)


def test_functional_call_errors():
    net, x = Net(), Tensor(np.ones((1, 2)))
    with pytest.raises(ConfigError, match=r"functional_call: Net has no parameter 'first\.wieght'.*valid "
                                          r"names: offset, first\.weight"):
        nn.functional_call(net, {"first.wieght": np.zeros((3, 2))}, x)
    with pytest.raises(ConfigError, match="counter"):                 # buffers are not parameters
        nn.functional_call(net, {"counter": np.zeros(1)}, x)
    with pytest.raises(ShapeError, match=r"functional_call: override 'first\.weight' has shape \(2, 3\).*"
                                         r"\(3, 2\)"):
        nn.functional_call(net, {"first.weight": np.zeros((2, 3))}, x)
    with pytest.raises(DTypeError, match=r"'first\.weight' is float32.*float64"):
        nn.functional_call(net, {"first.weight": np.zeros((3, 2), np.float32)}, x)
    with pytest.raises(ConfigError, match="mapping"):
        nn.functional_call(net, [("offset", 0.0)], x)
    with pytest.raises(ConfigError, match="expected a Module"):
        nn.functional_call(lambda x: x, {}, x)
    assert all(isinstance(p, nn.Parameter) for p in net.parameters())


def test_override_parameters_runs_any_method_and_restores():
    lin = nn.Linear(2, 2, dtype=np.float64, rng=0)
    W = np.array([[1.0, 2.0], [3.0, 4.0]])
    with nn.override_parameters(lin, {"weight": W}) as m:
        assert m is lin and np.array_equal(lin.weight.data, W) and not isinstance(lin.weight, nn.Parameter)
        assert "weight" in dict(lin.named_parameters())
    assert isinstance(lin.weight, nn.Parameter) and not np.array_equal(lin.weight.data, W)
    with pytest.raises(KeyError), nn.override_parameters(lin, {"bias": np.zeros(2)}):
        raise KeyError("inside")
    assert isinstance(lin.bias, nn.Parameter) and lin.bias.data.any()
