"""Layers against NumPy written from their formulas; initialisers against torch's fan/gain rules."""
import math

import numpy as np
import pytest

from itnet_np import nn
from itnet_np.autograd.tensor import Tensor
from itnet_np.errors import ConfigError, DTypeError, ShapeError
from itnet_np.nn import init


def _grads_of(module, x, g):
    """Backward of <module(x), g>; returns (dx, {name: grad})."""
    xt = Tensor(x, requires_grad=True)
    y = module(xt)
    (y * Tensor(g)).sum().backward()
    return xt.grad.data, {n: p.grad.data for n, p in module.named_parameters()}


# ----- Linear ---------------------------------------------------------------------------------
def test_linear_forward_and_gradients_match_numpy():
    rng = np.random.default_rng(0)
    lin = nn.Linear(4, 3, dtype=np.float64, rng=0)
    assert lin.weight.shape == (3, 4) and lin.bias.shape == (3,)  # torch layout (out, in)
    x = rng.standard_normal((2, 5, 4))
    W, b = lin.weight.data, lin.bias.data
    np.testing.assert_allclose(lin(Tensor(x)).data, np.einsum("bti,oi->bto", x, W) + b, rtol=1e-13, atol=1e-13)
    g = rng.standard_normal((2, 5, 3))
    dx, grads = _grads_of(lin, x, g)
    np.testing.assert_allclose(dx, np.einsum("bto,oi->bti", g, W), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(grads["weight"], np.einsum("bto,bti->oi", g, x), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(grads["bias"], g.sum(axis=(0, 1)), rtol=1e-12, atol=1e-13)


def test_linear_init_dtype_and_reproducibility():
    lin = nn.Linear(50, 40, rng=3)
    assert lin.weight.dtype == np.float32 and lin.bias.dtype == np.float32
    bound = 1 / math.sqrt(50)  # torch default: kaiming_uniform(a=sqrt(5)) == U(+-1/sqrt(fan_in))
    assert np.abs(lin.weight.data).max() <= bound and np.abs(lin.bias.data).max() <= bound
    assert np.abs(lin.weight.data).max() > 0.95 * bound  # really uses the whole interval
    np.testing.assert_allclose(lin.weight.data.std(), bound / math.sqrt(3), rtol=0.05)
    np.testing.assert_array_equal(lin.weight.data, nn.Linear(50, 40, rng=3).weight.data)
    assert not np.array_equal(lin.weight.data, nn.Linear(50, 40, rng=4).weight.data)
    l64 = nn.Linear(50, 40, rng=3, dtype=np.float64)
    assert l64.weight.dtype == np.float64
    np.testing.assert_allclose(l64.weight.data, lin.weight.data, rtol=1e-6)  # same draws, cast
    assert nn.Linear(3, 2, bias=False).bias is None
    assert [n for n, _ in nn.Linear(3, 2, bias=False).named_parameters()] == ["weight"]
    with pytest.raises(DTypeError):
        nn.Linear(3, 2, dtype=np.int32)


# ----- LayerNorm, Embedding, Dropout ----------------------------------------------------------
def test_layer_norm_matches_formula():
    rng = np.random.default_rng(1)
    ln = nn.LayerNorm((3, 4), eps=1e-5, dtype=np.float64)
    assert ln.weight.shape == (3, 4) and np.all(ln.weight.data == 1) and np.all(ln.bias.data == 0)
    ln.weight.data[...] = rng.standard_normal((3, 4))
    ln.bias.data[...] = rng.standard_normal((3, 4))
    x = rng.standard_normal((2, 3, 4))
    mu = x.mean(axis=(1, 2), keepdims=True)
    var = ((x - mu) ** 2).mean(axis=(1, 2), keepdims=True)
    expected = (x - mu) / np.sqrt(var + 1e-5) * ln.weight.data + ln.bias.data
    np.testing.assert_allclose(ln(Tensor(x)).data, expected, rtol=1e-12, atol=1e-12)
    bare = nn.LayerNorm(4, elementwise_affine=False)
    assert list(bare.parameters()) == [] and bare.normalized_shape == (4,)
    assert [n for n, _ in nn.LayerNorm(4, bias=False).named_parameters()] == ["weight"]


def test_embedding_lookup_and_repeated_index_gradient():
    emb = nn.Embedding(5, 3, dtype=np.float64, rng=0)
    assert emb.weight.shape == (5, 3)
    idx = np.array([[0, 2, 2], [4, 2, 0]])
    np.testing.assert_array_equal(emb(idx).data, emb.weight.data[idx])
    g = np.random.default_rng(2).standard_normal((2, 3, 3))
    (emb(idx) * Tensor(g)).sum().backward()
    expected = np.zeros((5, 3))
    np.add.at(expected, idx, g)  # repeated rows accumulate
    np.testing.assert_allclose(emb.weight.grad.data, expected, rtol=1e-13)
    w = nn.Embedding(400, 100, rng=1).weight.data  # torch default: N(0, 1)
    assert abs(w.mean()) < 0.02 and abs(w.std() - 1) < 0.02


def test_dropout_train_and_eval():
    x = np.ones((200, 100), np.float32)
    drop = nn.Dropout(0.25, rng=0)
    y = drop(Tensor(x)).data
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)  # inverted dropout scaling
    assert not np.array_equal(y, drop(Tensor(x)).data)  # the layer's generator advances
    np.testing.assert_array_equal(y, nn.Dropout(0.25, rng=0)(Tensor(x)).data)  # seeded
    drop.eval()
    t = Tensor(x)
    assert drop(t) is t
    with pytest.raises(ConfigError):
        nn.Dropout(1.5)


# ----- containers and MLP ---------------------------------------------------------------------
def test_sequential_and_module_list():
    a, b = nn.Linear(2, 3, rng=0, dtype=np.float64), nn.Linear(3, 1, rng=1, dtype=np.float64)
    seq = nn.Sequential(a, b)
    assert len(seq) == 2 and seq[0] is a and seq[-1] is b and list(seq) == [a, b]
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    x = np.random.default_rng(0).standard_normal((4, 2))
    np.testing.assert_allclose(seq(Tensor(x)).data, (x @ a.weight.data.T + a.bias.data) @ b.weight.data.T
                               + b.bias.data, rtol=1e-13)
    assert isinstance(seq[1:], nn.Sequential) and seq[1:][0] is b
    ml = nn.ModuleList([a])
    ml.append(b)
    ml[0] = b
    assert list(ml) == [b, b] and [n for n, _ in ml.named_parameters()] == ["0.weight", "0.bias"]
    with pytest.raises(TypeError):
        ml.append(3)


@pytest.mark.parametrize("activation, fn", [
    ("relu", lambda z: np.maximum(z, 0)), ("tanh", np.tanh), ("identity", lambda z: z),
    ("sigmoid", lambda z: 1 / (1 + np.exp(-z)))])
def test_mlp_matches_numpy(activation, fn):
    mlp = nn.MLP([3, 8, 5, 2], activation=activation, dtype=np.float64, rng=0)
    assert [tuple(p.shape) for p in mlp.parameters()] == [(8, 3), (8,), (5, 8), (5,), (2, 5), (2,)]
    x = np.random.default_rng(1).standard_normal((6, 3))
    h = x
    for k, layer in enumerate(mlp.layers):
        h = h @ layer.weight.data.T + layer.bias.data
        if k < 2:
            h = fn(h)  # no activation after the last layer
    np.testing.assert_allclose(mlp(Tensor(x)).data, h, rtol=1e-12, atol=1e-13)


def test_mlp_dropout_and_config_errors():
    mlp = nn.MLP([4, 16, 1], dropout=0.5, rng=0)
    x = Tensor(np.ones((3, 4), np.float32))
    assert not np.array_equal(mlp(x).data, mlp(x).data)  # dropout active in training
    mlp.eval()
    np.testing.assert_array_equal(mlp(x).data, mlp(x).data)
    assert "dropout" not in dict(nn.MLP([4, 1]).named_children())
    np.testing.assert_array_equal(nn.MLP([4, 6, 1], rng=7).layers[1].weight.data,
                                  nn.MLP([4, 6, 1], rng=7).layers[1].weight.data)
    with pytest.raises(ConfigError, match="activation: unknown name .swoosh."):
        nn.MLP([2, 2], activation="swoosh")
    with pytest.raises(ConfigError):
        nn.MLP([2])


# ----- init -----------------------------------------------------------------------------------
def test_fan_in_fan_out_and_gain_follow_torch_conventions():
    assert init.calculate_fan_in_and_fan_out(np.empty((7, 5))) == (5, 7)
    assert init.calculate_fan_in_and_fan_out(np.empty((6, 4, 3, 2))) == (4 * 6, 6 * 6)  # conv (out, in, kh, kw)
    with pytest.raises(ShapeError):
        init.calculate_fan_in_and_fan_out(np.empty(5))
    assert init.calculate_gain("relu") == math.sqrt(2) and init.calculate_gain("tanh") == 5 / 3
    assert init.calculate_gain("leaky_relu", 0.2) == math.sqrt(2 / 1.04)
    torch = pytest.importorskip("torch")
    for shape in [(7, 5), (6, 4, 3, 2), (3, 2, 5)]:
        assert init.calculate_fan_in_and_fan_out(np.empty(shape)) == \
            torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    for name, param in [("linear", None), ("sigmoid", None), ("tanh", None), ("relu", None),
                        ("leaky_relu", None), ("leaky_relu", math.sqrt(5)), ("selu", None), ("conv2d", None)]:
        assert init.calculate_gain(name, param) == pytest.approx(torch.nn.init.calculate_gain(name, param))


@pytest.mark.parametrize("fn, kwargs, kind, scale", [
    # (fan_in, fan_out) = (300 * 2, 200 * 2) for the (200, 300, 2) weight below
    (init.xavier_uniform_, {"gain": 2.0}, "uniform", 2.0 * math.sqrt(6 / 1000)),
    (init.xavier_normal_, {}, "normal", math.sqrt(2 / 1000)),
    (init.kaiming_uniform_, {"nonlinearity": "relu"}, "uniform", math.sqrt(2) * math.sqrt(3 / 600)),
    (init.kaiming_uniform_, {"a": math.sqrt(5)}, "uniform", 1 / math.sqrt(600)),
    (init.kaiming_normal_, {"mode": "fan_out", "nonlinearity": "relu"}, "normal", math.sqrt(2 / 400)),
])
def test_initialiser_distributions(fn, kwargs, kind, scale):
    w = nn.Parameter(np.empty((200, 300, 2), np.float32))
    assert fn(w, rng=0, **kwargs) is w
    a = w.data.astype(np.float64)
    if kind == "uniform":  # U(-scale, scale): std scale / sqrt(3), support reached
        assert np.abs(a).max() <= scale * (1 + 1e-6) and np.abs(a).max() > 0.99 * scale
        np.testing.assert_allclose(a.std(), scale / math.sqrt(3), rtol=0.01)
    else:
        np.testing.assert_allclose(a.std(), scale, rtol=0.01)
    assert abs(a.mean()) < 0.01 * scale
    b = nn.Parameter(np.empty((200, 300, 2), np.float32))
    fn(b, rng=np.random.default_rng(0), **kwargs)
    np.testing.assert_array_equal(b.data, w.data)  # an int seed and a Generator agree


def test_simple_initialisers():
    w = np.empty((3, 4), np.float64)
    init.zeros_(w)
    assert np.all(w == 0)
    init.ones_(w)
    assert np.all(w == 1)
    init.uniform_(w, 2.0, 3.0, rng=0)
    assert np.all((w >= 2) & (w < 3))
    init.normal_(w, mean=10.0, std=1e-3, rng=0)
    assert np.all(np.abs(w - 10) < 0.01)
    with pytest.raises(ConfigError):
        init.normal_(w, rng="seed")
