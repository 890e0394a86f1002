"""Suite checks for :mod:`itnet_np.proofs.recurrence`: Elman RNN, GRU and LSTM as Volterra solves
(forward substitution and Picard iteration)."""
import numpy as np

from itnet_np.autograd import ops
from itnet_np.verify import Measurement, directional_gradient_error, max_abs, reduction

from .. import reference as R
from ..recurrence import GATES, VolterraRecurrence

_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
_REFS = {"rnn": R.rnn_ref, "gru": R.gru_ref, "lstm": R.lstm_ref}


def draw_case(rng, mode, max_T=7, bias=None, state=None):
    """A random configuration: dict of named float64 arrays (x, h0, [c0], weights, [biases]) + sizes."""
    B, T, I, H = (int(rng.integers(1, m + 1)) for m in (3, max_T, 4, 4))
    G = GATES[mode]
    case = {"x": rng.standard_normal((B, T, I)),
            "weight_ih": rng.standard_normal((G * H, I)) * 0.6,
            "weight_hh": rng.standard_normal((G * H, H)) * 0.6}
    if (rng.random() < 0.5) if bias is None else bias:
        case["bias_ih"], case["bias_hh"] = rng.standard_normal(G * H) * 0.5, rng.standard_normal(G * H) * 0.5
    if (rng.random() < 0.5) if state is None else state:
        case["h0"] = rng.standard_normal((1, B, H))
        if mode == "lstm":
            case["c0"] = rng.standard_normal((1, B, H))
    return case


def _hx(mode, a):
    if mode == "lstm":
        return (a["h0"], a["c0"]) if "h0" in a else None
    return a.get("h0")


def flat_itnet(mode, a, nonlinearity="tanh", method="substitution"):
    """ITNet output and final states joined along time: (B, T + 1 [+ 1], H)."""
    layer = VolterraRecurrence(mode, *(a.get(n) for n in _NAMES), nonlinearity=nonlinearity)
    out, states = layer(a["x"], _hx(mode, a), method=method)
    states = states if mode == "lstm" else (states,)
    return ops.concatenate([out] + [ops.transpose(s, axes=(1, 0, 2)) for s in states], axis=1)


def flat_reference(mode, a, nonlinearity="tanh"):
    """The same from proofs.reference."""
    kw = {"nonlinearity": nonlinearity} if mode == "rnn" else {}
    out, states = _REFS[mode](a["x"], _hx(mode, a), *(a.get(n) for n in _NAMES), **kw)
    states = states if mode == "lstm" else (states,)
    return np.concatenate([out] + [s.transpose(1, 0, 2) for s in states], axis=1)


def _check(rng, mode, method="substitution"):
    act = str(rng.choice(["tanh", "relu"])) if mode == "rnn" else "tanh"
    a = draw_case(rng, mode)
    names = list(a)
    fwd = max_abs(flat_itnet(mode, a, act, method), flat_reference(mode, a, act))
    grad = directional_gradient_error(
        lambda *v: flat_itnet(mode, dict(zip(names, v)), act, method),
        lambda *v: flat_reference(mode, dict(zip(names, v)), act), [a[n] for n in names], rng)
    return Measurement(forward=fwd, gradient=grad)


@reduction("Elman RNN (Volterra)", tolerance=1e-10, grad_tolerance=1e-6)
def _verify_rnn(rng):
    """torch RNN (tanh/relu) == Volterra solve with the lag-1 shift, forward substitution."""
    return _check(rng, "rnn")


@reduction("GRU (Volterra)", tolerance=1e-10, grad_tolerance=1e-6)
def _verify_gru(rng):
    """torch GRU == Volterra solve with the lag-1 shift, forward substitution."""
    return _check(rng, "gru")


@reduction("LSTM (Volterra)", tolerance=1e-10, grad_tolerance=1e-6)
def _verify_lstm(rng):
    """torch LSTM == Volterra solve of the pair (h, c), forward substitution."""
    return _check(rng, "lstm")


@reduction("GRU (Picard, T iterations)", tolerance=1e-10, grad_tolerance=1e-6)
def _verify_gru_picard(rng):
    """torch GRU == T Picard sweeps of the Volterra equation from zero."""
    return _check(rng, "gru", method="picard")


@reduction("Picard prefix-exactness", tolerance=1e-12)
def _verify_picard_prefix(rng):
    """After k Picard sweeps the first k positions equal forward substitution (RNN/GRU/LSTM)."""
    mode = str(rng.choice(list(GATES)))
    a = draw_case(rng, mode)
    layer = VolterraRecurrence(mode, *(a.get(n) for n in _NAMES))
    exact = layer.solve(a["x"], _hx(mode, a)).data
    _, iterates = layer.solve(a["x"], _hx(mode, a), method="picard", return_iterates=True)
    return Measurement(forward=max(max_abs(y.data[:, :k], exact[:, :k]) for k, y in enumerate(iterates, 1)))
