"""Elman RNN / GRU / LSTM as causal Volterra equations (itnet_np.proofs.recurrence, docs/theory.md §11).

Every check compares the ITNet layer with proofs.reference (independent NumPy loops of torch's formulas),
in float64: forward outputs and final states (<= 1e-10 abs and rel), gradients w.r.t. x, hx and all four
weight/bias arrays (engine VJP against central differences of the reference, per array), Picard
prefix-exactness, causality, the GRU/LSTM multiplicative Volterra form, the reverse map and the errors.
torch, when importable, is an extra cross-check (autograd gradients, nn.GRU/LSTM outputs).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from itnet_np.proofs import reference as R
from itnet_np.proofs.recurrence import (
    VolterraRecurrence,
    from_torch,
    gru_as_itnet,
    lstm_as_itnet,
    rnn_as_itnet,
)

import itnet_np as itn
from itnet_np.errors import ConfigError, DTypeError, ShapeError

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
REFS = {"rnn": R.rnn_ref, "gru": R.gru_ref, "lstm": R.lstm_ref}
NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def make(mode, B, T, I, H, bias, state, seed, scale=0.6):
    rng = np.random.default_rng(seed)
    G = GATES[mode]
    a = {"x": rng.standard_normal((B, T, I)), "weight_ih": rng.standard_normal((G * H, I)) * scale,
         "weight_hh": rng.standard_normal((G * H, H)) * scale}
    if bias:
        a["bias_ih"], a["bias_hh"] = rng.standard_normal(G * H) * 0.5, rng.standard_normal(G * H) * 0.5
    if state:
        a["h0"] = rng.standard_normal((1, B, H))
        if mode == "lstm":
            a["c0"] = rng.standard_normal((1, B, H))
    return a


@st.composite
def cases(draw, modes=("rnn", "gru", "lstm")):
    mode = draw(st.sampled_from(modes))
    act = draw(st.sampled_from(["tanh", "relu"])) if mode == "rnn" else "tanh"
    dims = [draw(st.integers(1, m)) for m in (3, 12, 4, 4)]
    a = make(mode, *dims, draw(st.booleans()), draw(st.booleans()), draw(st.integers(0, 2**16)))
    return mode, act, a


def hx_of(mode, a):
    if mode == "lstm":
        return (a["h0"], a["c0"]) if "h0" in a else None
    return a.get("h0")


def build(mode, act, a):
    kw = {"nonlinearity": act} if mode == "rnn" else {}
    return {"rnn": rnn_as_itnet, "gru": gru_as_itnet, "lstm": lstm_as_itnet}[mode](
        *(a.get(n) for n in NAMES), **kw)


def run_itnet(mode, act, a, method="substitution"):
    """[output, h_n(, c_n)] of the ITNet layer (Tensors)."""
    out, states = build(mode, act, a)(a["x"], hx_of(mode, a), method=method)
    return [out] + (list(states) if mode == "lstm" else [states])


def run_reference(mode, act, a):
    kw = {"nonlinearity": act} if mode == "rnn" else {}
    out, states = REFS[mode](a["x"], hx_of(mode, a), *(a.get(n) for n in NAMES), **kw)
    return [out] + (list(states) if mode == "lstm" else [states])


def close(got, want, tol=1e-10):
    got = np.asarray(getattr(got, "data", got))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


# ------------------------------------------------------------------------------------------- forward

@pytest.mark.parametrize("method", ["substitution", "picard"])
@given(case=cases())
def test_forward_equals_reference(method, case):
    mode, act, a = case
    got, want = run_itnet(mode, act, a, method), run_reference(mode, act, a)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        close(g, w)


@given(case=cases(), method=st.sampled_from(["substitution", "picard"]))
def test_gradients_equal_central_differences_of_reference(case, method):
    """Per input array k: <VJP_k(u), v_k> == d/de <u, reference(a + e v_k)> at e = 0."""
    mode, act, a = case
    rng = np.random.default_rng(1)
    names = list(a)
    ts = {n: itn.tensor(v, requires_grad=True) for n, v in a.items()}
    got = run_itnet(mode, act, ts, method)
    us = [rng.standard_normal(g.shape) for g in got]
    sum((g * u).sum() for g, u in zip(got, us)).backward()
    eps = 1e-6
    for n in names:
        v = rng.standard_normal(a[n].shape)
        plus = run_reference(mode, act, {**a, n: a[n] + eps * v})
        minus = run_reference(mode, act, {**a, n: a[n] - eps * v})
        numeric = sum(np.sum(u * (p - m)) for u, p, m in zip(us, plus, minus)) / (2 * eps)
        analytic = float(np.sum(ts[n].grad.data * v))
        assert abs(analytic - numeric) <= 1e-7 * max(1.0, abs(numeric)), (n, analytic, numeric)


@settings(max_examples=8)
@given(case=cases())
def test_gradients_equal_torch_autograd(case):
    torch = pytest.importorskip("torch")
    mode, act, a = case
    ts = {n: itn.tensor(v, requires_grad=True) for n, v in a.items()}
    got = run_itnet(mode, act, ts)
    rng = np.random.default_rng(2)
    us = [rng.standard_normal(g.shape) for g in got]
    sum((g * u).sum() for g, u in zip(got, us)).backward()

    H, I = a["weight_hh"].shape[1], a["x"].shape[2]
    cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[mode]
    kw = {"nonlinearity": act} if mode == "rnn" else {}
    m = cls(I, H, batch_first=True, bias="bias_ih" in a, **kw).double()
    tt = {n: torch.tensor(v, requires_grad=True) for n, v in a.items()}
    for n in NAMES:
        if n in a:
            setattr(m, f"{n}_l0", torch.nn.Parameter(tt[n]))
    hx = ((tt["h0"], tt["c0"]) if mode == "lstm" else tt["h0"]) if "h0" in a else None
    out, states = m(tt["x"], hx)
    outs = [out] + (list(states) if mode == "lstm" else [states])
    loss = sum((o * torch.as_tensor(u)).sum() for o, u in zip(outs, us))
    loss.backward()
    for n in a:
        grad = getattr(m, f"{n}_l0").grad if n in NAMES else tt[n].grad
        close(ts[n].grad, grad.numpy())


def test_ndarray_weights_become_trainable_parameters():
    a = make("gru", 2, 5, 3, 2, True, True, seed=3)
    layer = build("gru", "tanh", a)
    trainable = [n for n, p in layer.named_parameters() if p.requires_grad]
    assert trainable == list(NAMES)                       # the shift's identity maps are frozen
    out, h_n = layer(a["x"], a["h0"])
    (out.sum() + h_n.sum()).backward()
    ts = {n: itn.tensor(a[n], requires_grad=True) for n in NAMES}
    out, h_n = gru_as_itnet(*(ts[n] for n in NAMES))(a["x"], a["h0"])
    (out.sum() + h_n.sum()).backward()
    for n in NAMES:
        close(getattr(layer, n).grad, ts[n].grad.data, tol=1e-13)
    a["weight_hh"][...] = 0.0                              # the layer owns a copy
    assert np.abs(layer.weight_hh.data).max() > 0


# ------------------------------------------------------------------------------------ Picard solver

@pytest.mark.parametrize("mode", ["rnn", "gru", "lstm"])
def test_picard_prefix_exact_then_exact_after_T(mode):
    a = make(mode, 2, 8, 3, 3, True, True, seed=4, scale=1.0)
    layer = build(mode, "tanh", a)
    exact = layer.solve(a["x"], hx_of(mode, a)).data
    T = a["x"].shape[1]
    for k in range(1, T + 1):
        y = layer.solve(a["x"], hx_of(mode, a), method="picard", iterations=k).data
        close(y[:, :k], exact[:, :k], tol=1e-12)
        if k < T:                                          # position k+1 (1-based) is not yet right
            assert np.abs(y[:, k] - exact[:, k]).max() > 1e-6
    for k in (T, T + 3):                                   # exact after T, and a fixed point beyond
        out, states = layer(a["x"], hx_of(mode, a), method="picard", iterations=k)
        for g, w in zip([out] + (list(states) if mode == "lstm" else [states]), run_reference(mode, "tanh", a)):
            close(g, w, tol=1e-12)


@given(case=cases())
def test_picard_iterates_are_prefix_exact(case):
    mode, act, a = case
    layer = build(mode, act, a)
    exact = layer.solve(a["x"], hx_of(mode, a)).data
    _, its = layer.solve(a["x"], hx_of(mode, a), method="picard", return_iterates=True)
    assert len(its) == a["x"].shape[1]
    for k, y in enumerate(its, start=1):
        close(y.data[:, :k], exact[:, :k], tol=1e-12)


@pytest.mark.parametrize("method", ["substitution", "picard"])
@pytest.mark.parametrize("mode", ["rnn", "gru", "lstm"])
def test_causality(mode, method):
    a = make(mode, 2, 7, 3, 3, True, True, seed=5)
    layer = build(mode, "tanh", a)
    base = layer(a["x"], hx_of(mode, a), method=method)[0].data
    for s in (0, 3, 6):
        x = a["x"].copy()
        x[:, s] += 1.0
        moved = layer(x, hx_of(mode, a), method=method)[0].data
        np.testing.assert_array_equal(moved[:, :s], base[:, :s])
        assert np.abs(moved[:, s] - base[:, s]).max() > 1e-6


# ---------------------------------------------------------------------- multiplicative Volterra form

@given(case=cases(modes=("gru", "lstm")))
def test_multiplicative_volterra_form(case):
    """GRU: h_t = [prod z] h0 + sum_s [prod_{r=s+1}^t z_r] (1 - z_s) n_s (LSTM: the same for c)."""
    mode, act, a = case
    layer = build(mode, act, a)
    form = layer.multiplicative_form(a["x"], hx_of(mode, a))
    close(form, layer(a["x"], hx_of(mode, a))[0].data, tol=1e-12)
    close(form, run_reference(mode, act, a)[0], tol=1e-12)


def test_multiplicative_form_is_not_trivially_the_recurrence():
    """The form really uses h0: dropping it (h0 -> 0 inside the sum only) changes the result."""
    a = make("gru", 1, 6, 2, 3, True, True, seed=6)
    layer = build("gru", "tanh", a)
    form = layer.multiplicative_form(a["x"], a["h0"]).data
    with_zero_start = layer(a["x"], np.zeros_like(a["h0"]))[0].data
    assert np.abs(form - with_zero_start).max() > 1e-6
    with pytest.raises(ConfigError, match="no gates"):
        build("rnn", "tanh", make("rnn", 1, 2, 2, 2, False, False, 0)).multiplicative_form(a["x"][..., :2])


# ---------------------------------------------------------------------------------- reverse map, torch

@pytest.mark.parametrize("mode", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("biases", [(), ("bias_ih",), ("bias_ih", "bias_hh")])
def test_torch_weights_round_trip(mode, biases):
    a = make(mode, 2, 4, 3, 2, True, True, seed=7)
    for n in ("bias_ih", "bias_hh"):
        if n not in biases:
            a.pop(n)
    layer = build(mode, "tanh", a)
    w = layer.torch_weights()
    assert sorted(w) == sorted(f"{n}_l0" for n in (NAMES if biases else NAMES[:2]))
    for n in NAMES:
        if n in a:
            np.testing.assert_array_equal(w[f"{n}_l0"], a[n])
        elif biases:
            np.testing.assert_array_equal(w[f"{n}_l0"], 0.0)
    again = VolterraRecurrence(mode, *(w.get(f"{n}_l0") for n in NAMES))
    for g, h in zip(run_itnet(mode, "tanh", a), [again(a["x"], hx_of(mode, a))[0]]):
        np.testing.assert_array_equal(g.data, h.data)


@pytest.mark.parametrize("mode,act", [("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh")])
def test_from_torch_and_torch_weights_match_torch(mode, act):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[mode]
    m = cls(3, 4, batch_first=True, **({"nonlinearity": act} if mode == "rnn" else {})).double()
    layer = from_torch(m)
    x = np.random.default_rng(8).standard_normal((2, 6, 3))
    want, _ = m(torch.as_tensor(x))
    close(layer(x)[0], want.detach().numpy())
    m2 = cls(3, 4, batch_first=True, **({"nonlinearity": act} if mode == "rnn" else {})).double()
    m2.load_state_dict({k: torch.as_tensor(v) for k, v in layer.torch_weights().items()})
    close(m2(torch.as_tensor(x))[0].detach().numpy(), want.detach().numpy(), tol=0)
    with pytest.raises(ConfigError, match="num_layers=1"):
        from_torch(cls(3, 4, num_layers=2))


def test_float32_layer_keeps_its_dtype():
    a = make("lstm", 2, 3, 2, 2, True, True, seed=9)
    a32 = {n: v.astype(np.float32) for n, v in a.items()}
    out, (h, c) = build("lstm", "tanh", a32)(a32["x"], hx_of("lstm", a32))
    assert out.dtype == h.dtype == c.dtype == np.float32
    close(out, run_reference("lstm", "tanh", a)[0], tol=1e-5)


# ---------------------------------------------------------------------------------------------- errors

def test_errors():
    rng = np.random.default_rng(10)
    w = lambda *s: rng.standard_normal(s)
    with pytest.raises(ShapeError, match=r"gru_as_itnet: weight_ih must be \(3H, I\) = \(9, I\).*\(8, 2\)"):
        gru_as_itnet(w(8, 2), w(9, 3))
    with pytest.raises(ShapeError, match=r"lstm_as_itnet: weight_hh must be \(4H, H\) = \(12, 3\).*\(9, 3\)"):
        lstm_as_itnet(w(12, 2), w(9, 3))
    with pytest.raises(ShapeError, match=r"weight_hh must be 2-D"):
        rnn_as_itnet(w(3, 2), w(3))
    with pytest.raises(ShapeError, match=r"bias_hh must be \(3H,\) = \(6,\), got shape \(2,\)"):
        gru_as_itnet(w(6, 2), w(6, 2), w(6), w(2))
    with pytest.raises(ConfigError, match="nonlinearity must be 'tanh' or 'relu', got 'gelu'"):
        rnn_as_itnet(w(3, 2), w(3, 3), nonlinearity="gelu")
    with pytest.raises(DTypeError, match="share one dtype"):
        gru_as_itnet(w(6, 2), w(6, 2).astype(np.float32))
    gru, lstm = gru_as_itnet(w(6, 3), w(6, 2)), lstm_as_itnet(w(8, 3), w(8, 2))
    x = w(2, 4, 3)
    with pytest.raises(ShapeError, match=r"hx must be \(1, B, H\) = \(1, 2, 2\), got shape \(2, 2\)"):
        gru(x, w(2, 2))
    with pytest.raises(ShapeError, match=r"c0 must be \(1, B, H\) = \(1, 2, 2\), got shape \(1, 2, 3\)"):
        lstm(x, (w(1, 2, 2), w(1, 2, 3)))
    with pytest.raises(ShapeError, match=r"hx must be a pair \(h0, c0\)"):
        lstm(x, w(1, 2, 2))
    with pytest.raises(ShapeError, match=r"x must be batch-first \(B, T, I\) = \(B, T, 3\), got shape \(4, 3\)"):
        gru(w(4, 3))
    with pytest.raises(ShapeError, match=r"x must be batch-first .* got shape \(2, 4, 2\)"):
        gru(w(2, 4, 2))
    with pytest.raises(ShapeError, match="T >= 1"):
        gru(w(2, 0, 3))
    with pytest.raises(ConfigError, match="only for method='picard'"):
        gru(x, iterations=2)
    with pytest.raises(ConfigError, match=r"method must be one of \('substitution', 'picard'\), got 'newton'"):
        gru(x, method="newton")
