"""PyTorch RNN / GRU / LSTM (one layer, unidirectional, batch_first=True) from the documented formulas.

Sources: PyTorch docs, torch.nn.RNN, torch.nn.GRU, torch.nn.LSTM (and LSTMCell). Weights act as x W^T;
there are two redundant biases b_ih + b_hh (only b_hn matters on its own, inside the GRU reset product).
Gate orders (rows of weight_ih / weight_hh / biases): GRU [r, z, n], LSTM [i, f, g, o].

Conventions: x (B, T, I) batch-first; h0 (1, B, H), (B, H) or None (zeros); outputs (B, T, H) and final
states (1, B, H) like torch with num_layers=1. Explicit loop over time. Note PyTorch's GRU z multiplies
h_{t-1} (the opposite of minGRU's convention) and r is applied to (W_hn h + b_hn) ("reset after").
"""
import numpy as np

__all__ = ["gru_ref", "lstm_ref", "rnn_ref", "sigmoid"]


def sigmoid(x):
    """sigma(x) = 1 / (1 + exp(-x)), evaluated without overflow for large |x|."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _prepare(name, x, h0, weight_ih, weight_hh, bias_ih, bias_hh, n_gates):
    """float64 copies, shape checks, zero biases / state for None. Returns x, h0 (B, H), W_ih, W_hh, b_ih, b_hh."""
    x = np.asarray(x, dtype=np.float64)
    w_ih = np.asarray(weight_ih, dtype=np.float64)
    w_hh = np.asarray(weight_hh, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"{name}: x must be batch-first (B, T, I), got shape {x.shape}")
    n_batch, _, n_in = x.shape
    hidden = w_hh.shape[1]
    if w_ih.shape != (n_gates * hidden, n_in) or w_hh.shape != (n_gates * hidden, hidden):
        raise ValueError(f"{name}: expected weight_ih ({n_gates}H, I) = {(n_gates * hidden, n_in)} and "
                         f"weight_hh ({n_gates}H, H) = {(n_gates * hidden, hidden)}, got {w_ih.shape}, "
                         f"{w_hh.shape}")
    b_ih = np.zeros(n_gates * hidden) if bias_ih is None else np.asarray(bias_ih, dtype=np.float64)
    b_hh = np.zeros(n_gates * hidden) if bias_hh is None else np.asarray(bias_hh, dtype=np.float64)
    return x, _state(name, h0, n_batch, hidden), w_ih, w_hh, b_ih, b_hh


def _state(name, s0, n_batch, hidden):
    if s0 is None:
        return np.zeros((n_batch, hidden))
    s0 = np.asarray(s0, dtype=np.float64)
    if s0.shape == (1, n_batch, hidden):
        s0 = s0[0]
    if s0.shape != (n_batch, hidden):
        raise ValueError(f"{name}: initial state must be (1, B, H) or (B, H) = {(n_batch, hidden)}, "
                         f"got {s0.shape}")
    return s0.copy()


def rnn_ref(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None, nonlinearity="tanh"):
    """torch.nn.RNN (Elman), one layer:

        h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),   act = tanh or relu.

    Shapes: x (B, T, I), h0 (1, B, H) | (B, H) | None, weight_ih (H, I), weight_hh (H, H), biases (H,).
    Returns (output (B, T, H), h_n (1, B, H)).
    """
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"rnn_ref: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    x, h, w_ih, w_hh, b_ih, b_hh = _prepare("rnn_ref", x, h0, weight_ih, weight_hh, bias_ih, bias_hh, 1)
    act = np.tanh if nonlinearity == "tanh" else (lambda a: np.maximum(a, 0.0))
    outputs = []
    for t in range(x.shape[1]):
        h = act(x[:, t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
        outputs.append(h)
    return _stack(outputs, x, h.shape[1]), h[None]


def gru_ref(x, h0, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """torch.nn.GRU, one layer (PyTorch docs), gate order [r, z, n]:

        r_t = sigma(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
        z_t = sigma(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
        n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
        h_t = (1 - z_t) * n_t + z_t * h_{t-1}

    Shapes: x (B, T, I), h0 (1, B, H) | (B, H) | None, weight_ih (3H, I) = [W_ir; W_iz; W_in],
    weight_hh (3H, H) = [W_hr; W_hz; W_hn], biases (3H,). Returns (output (B, T, H), h_n (1, B, H)).
    """
    x, h, w_ih, w_hh, b_ih, b_hh = _prepare("gru_ref", x, h0, weight_ih, weight_hh, bias_ih, bias_hh, 3)
    n_h = h.shape[1]
    w_ir, w_iz, w_in = w_ih[:n_h], w_ih[n_h:2 * n_h], w_ih[2 * n_h:]
    w_hr, w_hz, w_hn = w_hh[:n_h], w_hh[n_h:2 * n_h], w_hh[2 * n_h:]
    b_ir, b_iz, b_in = b_ih[:n_h], b_ih[n_h:2 * n_h], b_ih[2 * n_h:]
    b_hr, b_hz, b_hn = b_hh[:n_h], b_hh[n_h:2 * n_h], b_hh[2 * n_h:]
    outputs = []
    for t in range(x.shape[1]):
        x_t = x[:, t]
        r = sigmoid(x_t @ w_ir.T + b_ir + h @ w_hr.T + b_hr)
        z = sigmoid(x_t @ w_iz.T + b_iz + h @ w_hz.T + b_hz)
        n = np.tanh(x_t @ w_in.T + b_in + r * (h @ w_hn.T + b_hn))
        h = (1.0 - z) * n + z * h
        outputs.append(h)
    return _stack(outputs, x, n_h), h[None]


def lstm_ref(x, hc0, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """torch.nn.LSTM, one layer, no projection (PyTorch docs), gate order [i, f, g, o]:

        i_t = sigma(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)
        f_t = sigma(W_if x_t + b_if + W_hf h_{t-1} + b_hf)
        g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)
        o_t = sigma(W_io x_t + b_io + W_ho h_{t-1} + b_ho)
        c_t = f_t * c_{t-1} + i_t * g_t
        h_t = o_t * tanh(c_t)

    Shapes: x (B, T, I), hc0 = (h0, c0) each (1, B, H) | (B, H) | None, or hc0 None (zeros);
    weight_ih (4H, I) = [W_ii; W_if; W_ig; W_io], weight_hh (4H, H), biases (4H,).
    Returns (output (B, T, H), (h_n (1, B, H), c_n (1, B, H))).
    """
    h0, c0 = (None, None) if hc0 is None else hc0
    x, h, w_ih, w_hh, b_ih, b_hh = _prepare("lstm_ref", x, h0, weight_ih, weight_hh, bias_ih, bias_hh, 4)
    n_h = h.shape[1]
    c = _state("lstm_ref", c0, x.shape[0], n_h)
    rows = [slice(q * n_h, (q + 1) * n_h) for q in range(4)]          # i, f, g, o
    outputs = []
    for t in range(x.shape[1]):
        x_t = x[:, t]
        pre = [x_t @ w_ih[s].T + b_ih[s] + h @ w_hh[s].T + b_hh[s] for s in rows]
        i, f, g, o = sigmoid(pre[0]), sigmoid(pre[1]), np.tanh(pre[2]), sigmoid(pre[3])
        c = f * c + i * g
        h = o * np.tanh(c)
        outputs.append(h)
    return _stack(outputs, x, n_h), (h[None], c[None])


def _stack(outputs, x, hidden):
    """Stack per-step states into (B, T, H); T = 0 gives an empty (B, 0, H) array."""
    if not outputs:
        return np.zeros((x.shape[0], 0, hidden))
    return np.stack(outputs, axis=1)
