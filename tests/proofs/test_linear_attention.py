"""Linear attention = RNN = one ITNet transform (itnet_np.proofs.linear_attention).

The ITNet (parallel) layer is compared with the recurrent form (causal_linear_attention_recurrent_ref)
and the masked quadratic form (causal_linear_attention_ref) of itnet_np.proofs.reference, the
non-causal layer with the formula written out below; gradients with central differences of the
reference (and with torch autograd when torch is importable).
"""
import numpy as np
import pytest
from _proof_helpers import assert_gradients_match
from hypothesis import given, settings
from hypothesis import strategies as st
from itnet_np.proofs import reference as R
from itnet_np.proofs.linear_attention import linear_attention_as_itnet, linear_attention_weights

from itnet_np import Tensor
from itnet_np.errors import ConfigError, ShapeError
from itnet_np.transform import DotProductKernel, IntegralTransform, LowRankKernel

NAMES = ("q_weight", "k_weight", "v_weight", "out_weight", "q_bias", "k_bias", "v_bias", "out_bias")


def noncausal_ref(q, k, v, keep=None):
    """V'_i = phi(q_i) . sum_j phi(k_j) v_j^T / phi(q_i) . sum_j phi(k_j), keys with keep = False zeroed."""
    fq, fk = R.elu_plus_one(q), R.elu_plus_one(k)
    if keep is not None:
        fk = fk * keep[:, None, :, None]
    S = np.einsum("bhjd,bhjv->bhdv", fk, v)
    return np.einsum("bhid,bhdv->bhiv", fq, S) / np.einsum("bhid,bhd->bhi", fq, fk.sum(axis=2))[..., None]


@st.composite
def configs(draw, max_len=16):
    """(x, weights dict, num_heads): random heads, widths, optional out projection and biases."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n_batch, L, C, H, r, dv = (draw(st.integers(1, m)) for m in (2, max_len, 5, 3, 4, 3))
    cout = draw(st.integers(1, 4))
    shapes = {"q_weight": (H * r, C), "k_weight": (H * r, C), "v_weight": (H * dv, C),
              "out_weight": (cout, H * dv), "q_bias": (H * r,), "k_bias": (H * r,), "v_bias": (H * dv,),
              "out_bias": (cout,)}
    w = {n: rng.standard_normal(s) for n, s in shapes.items() if n in ("q_weight", "k_weight", "v_weight")
         or draw(st.booleans())}
    if "out_weight" not in w:
        w.pop("out_bias", None)
    return rng.standard_normal((n_batch, L, C)), w, H


@given(configs())
def test_causal_layer_equals_rnn_and_masked_quadratic_form(cfg):
    x, w, H = cfg
    y = linear_attention_as_itnet(num_heads=H, **w)(x).data
    for form in (R.causal_linear_attention_recurrent_ref, R.causal_linear_attention_ref):
        np.testing.assert_allclose(y, R.linear_attention_layer_ref(x, w, H, form), rtol=1e-12, atol=1e-12)


@given(configs())
def test_noncausal_layer_and_key_padding_mask(cfg):
    x, w, H = cfg
    layer = linear_attention_as_itnet(num_heads=H, causal=False, **w)
    np.testing.assert_allclose(layer(x).data, R.linear_attention_layer_ref(x, w, H, noncausal_ref),
                               rtol=1e-12, atol=1e-12)
    keep = np.random.default_rng(0).random(x.shape[:2]) < 0.7
    keep[:, 0] = True
    mask = np.broadcast_to(keep[:, None, :], (x.shape[0], x.shape[1], x.shape[1]))
    masked = R.linear_attention_layer_ref(x, w, H, lambda q, k, v: noncausal_ref(q, k, v, keep))
    np.testing.assert_allclose(layer(x, mask=mask).data, masked, rtol=1e-12, atol=1e-12)


@settings(max_examples=10)
@given(configs(max_len=8))
def test_gradients_match_reference(cfg):
    x, w, H = cfg
    names = list(w)

    def itnet(x, *ws):
        return linear_attention_as_itnet(num_heads=H, **dict(zip(names, ws)))(x)

    def reference(x, *ws):
        return R.linear_attention_layer_ref(x, dict(zip(names, ws)), H)
    inputs = [x] + [w[n] for n in names]
    assert_gradients_match(itnet, reference, inputs)


def test_gradients_match_torch_autograd():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x, H = rng.standard_normal((2, 7, 4)), 2
    shapes = {"q_weight": (6, 4), "k_weight": (6, 4), "v_weight": (4, 4), "out_weight": (3, 4),
              "q_bias": (6,), "v_bias": (4,)}
    w = {n: rng.standard_normal(s) for n, s in shapes.items()}
    cot = rng.standard_normal((2, 7, 3))
    ours = {n: Tensor(a, requires_grad=True) for n, a in dict(w, x=x).items()}
    (linear_attention_as_itnet(num_heads=H, **{n: ours[n] for n in w})(ours["x"]) * cot).sum().backward()
    tt = {n: torch.tensor(a, requires_grad=True) for n, a in dict(w, x=x).items()}

    def split(y):
        return y.reshape(2, 7, H, -1).transpose(1, 2)
    phi = lambda t: torch.nn.functional.elu(t) + 1
    q = phi(split(tt["x"] @ tt["q_weight"].T + tt["q_bias"]))
    k = phi(split(tt["x"] @ tt["k_weight"].T))
    v = split(tt["x"] @ tt["v_weight"].T + tt["v_bias"])
    S, Z, outs = 0, 0, []
    for i in range(7):                                        # the RNN, step by step
        S = S + k[:, :, i, :, None] * v[:, :, i, None, :]
        Z = Z + k[:, :, i]
        outs.append(torch.einsum("bhd,bhdv->bhv", q[:, :, i], S) / (q[:, :, i] * Z).sum(-1, keepdim=True))
    y = torch.stack(outs, 2).transpose(1, 2).reshape(2, 7, -1) @ tt["out_weight"].T
    (y * torch.tensor(cot)).sum().backward()
    for n in ours:
        np.testing.assert_allclose(ours[n].grad.data, tt[n].grad.numpy(), rtol=1e-10, atol=1e-12)


def test_eps_of_fast_transformers_is_only_approximately_equal():
    x, w, H = np.random.default_rng(2).standard_normal((1, 6, 3)), None, 1
    rng = np.random.default_rng(3)
    w = {"q_weight": rng.standard_normal((2, 3)), "k_weight": rng.standard_normal((2, 3)),
         "v_weight": rng.standard_normal((2, 3))}
    y = linear_attention_as_itnet(num_heads=H, **w)(x).data
    eps_ref = R.linear_attention_layer_ref(x, w, H, lambda q, k, v: R.causal_linear_attention_ref(q, k, v, eps=1e-6))
    err = np.max(np.abs(y - eps_ref) / np.abs(y))
    assert 1e-12 < err < 1e-5


@given(configs(), st.integers(0, 15))
def test_causality(cfg, t0):
    x, w, H = cfg
    t0 = t0 % x.shape[1]
    layer = linear_attention_as_itnet(num_heads=H, **w)
    moved = x.copy()
    moved[:, t0:] += 1.0
    np.testing.assert_array_equal(layer(moved).data[:, :t0], layer(x).data[:, :t0])


@given(configs(max_len=6))
def test_arrays_become_parameters_and_reverse_map_round_trips(cfg):
    x, w, H = cfg
    layer = linear_attention_as_itnet(num_heads=H, **w)
    assert sorted(n for n, _ in layer.named_parameters()) == sorted(w)
    back = linear_attention_weights(layer)
    assert back["num_heads"] == H and back["causal"]
    again = linear_attention_as_itnet(**{n: back[n] for n in NAMES}, num_heads=H)
    np.testing.assert_array_equal(again(x).data, layer(x).data)


def test_reverse_map_of_a_plain_transform():
    rng = np.random.default_rng(4)
    kernel = LowRankKernel(4, heads=2, feature_dim=3, bias=True, rng=5, dtype=np.float64)
    kernel.b_q.data[...], kernel.b_k.data[...] = rng.standard_normal(6), rng.standard_normal(6)
    op = IntegralTransform(4, 3, kernel, embed_dim=6, normalization="sum", support="causal", value_bias=True,
                           rng=6, dtype=np.float64)
    w = linear_attention_weights(op)
    assert w["q_bias"] is not None and w["k_bias"] is not None
    x = rng.standard_normal((2, 5, 4))
    np.testing.assert_allclose(R.linear_attention_layer_ref(x, w, 2), op(x).data, rtol=1e-12, atol=1e-12)
    with pytest.raises(ConfigError, match="LowRankKernel"):
        linear_attention_weights(IntegralTransform(4, 4, DotProductKernel(4), normalization="sum"))
    with pytest.raises(ConfigError, match="skip"):
        linear_attention_weights(IntegralTransform(4, 3, kernel, embed_dim=6, normalization="sum", skip=True))


def test_errors_name_the_argument_and_shapes():
    W = np.ones((4, 3))
    with pytest.raises(ShapeError, match=r"q_weight must be \(num_heads \* r, C\) with num_heads = 3, got "
                                         r"shape \(4, 3\)"):
        linear_attention_as_itnet(W, W, W, 3)
    with pytest.raises(ShapeError, match=r"k_weight must have shape \(4, 3\), got \(4, 2\)"):
        linear_attention_as_itnet(W, np.ones((4, 2)), W, 2)
    with pytest.raises(ShapeError, match=r"v_weight must be"):
        linear_attention_as_itnet(W, W, np.ones((4, 2)), 2)
    with pytest.raises(ShapeError, match=r"out_weight must have shape \(5, 4\), got \(5, 3\)"):
        linear_attention_as_itnet(W, W, W, 2, out_weight=np.ones((5, 3)))
    with pytest.raises(ShapeError, match=r"q_bias must have shape \(4,\)"):
        linear_attention_as_itnet(W, W, W, 2, q_bias=np.ones(3))
    with pytest.raises(ShapeError, match=r"out_bias must have shape \(4,\)"):
        linear_attention_as_itnet(W, W, W, 2, out_bias=np.ones(5))
    with pytest.raises(ConfigError, match="num_heads"):
        linear_attention_as_itnet(W, W, W, 0)
    with pytest.raises(ShapeError, match=r"x must be \(B, L, 3\), got shape \(1, 5, 4\)"):
        linear_attention_as_itnet(W, W, W, 2)(np.ones((1, 5, 4)))
