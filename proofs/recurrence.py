"""Elman RNN, GRU and LSTM as causal Volterra equations solved by the ITNet operator (docs/theory.md §11).

Statement. Any recurrence h_t = F(h_{t-1}, x_t) with initial state h_{-1} = h0 is the unique
solution y of the discrete Volterra equation of the second kind

    y = Phi(T_K[y], u),    T_K[y]_t = y_{t-1}   (y_{-1} = h0, the boundary),

where T_K is the strictly causal lag-1 shift, an IntegralTransform with the one-tap StencilKernel([-1])
and identity value/output maps (``itnet_np.transform.shift_transform``), the initial state is its
boundary source at position -1, and Phi(z, u_t) = F(z, x_t) is the cell written with engine ops. The
part of the gates that does not depend on the unknown, u = x W_ih^T + b_ih (B, T, G H), is computed
once for the whole sequence and drives the equation (cuDNN does the same). Torch's formulas (docs of
torch.nn.RNN / GRU / LSTM; weights act as x W^T, gate rows [r, z, n] and [i, f, g, o]):

    Elman   h_t = act(u_t + z W_hh^T + b_hh),  act = tanh | relu,  z = h_{t-1}
    GRU     r, z_t = sigma(u_{r,z} + (h W_hh^T + b_hh)_{r,z});  n = tanh(u_n + r * (W_hn h + b_hn))
            h_t = (1 - z_t) n_t + z_t h_{t-1}
    LSTM    unknown y = [h | c] (B, T, 2H); z = [h_{t-1} | c_{t-1}]; i, f, o = sigma, g = tanh of
            u + h W_hh^T + b_hh;  c_t = f c_{t-1} + i g;  h_t = o tanh(c_t); Phi returns [h_t | c_t].

Because T_K[y]_t only reads y_s for s < t, two solvers are exact:
- forward substitution y_t = Phi(T_K[y_{<t}]_t, u_t), t = 0, 1, ...: T sequential steps, exact;
- Picard iteration y^(k+1) = Phi(T_K[y^(k)], u) from y^(0) = 0: y^(k)_t is exact for t < k (induction
  on t: y^(k+1)_t reads only y^(k)_{t-1}), so it is prefix-exact after k sweeps and exact after T. The
  position k (0-based) generally differs after k sweeps: it is F applied k times to the wrong start 0.
The shift is exact in floating point (x * 1 and sums with exact zeros), so the Picard prefix agrees with
substitution to the last bit, and both agree with the loops of ``proofs.reference`` to rounding.

Multiplicative (gated) Volterra form. Unrolling h_t = z_t h_{t-1} + (1 - z_t) n_t gives

    GRU   h_t = [prod_{r<=t} z_r] h0 + sum_{s<=t} [prod_{r=s+1}^{t} z_r] (1 - z_s) n_s
    LSTM  c_t = [prod_{r<=t} f_r] c0 + sum_{s<=t} [prod_{r=s+1}^{t} f_r] i_s g_s,   h_t = o_t tanh(c_t)

with the gates evaluated on the solution (z_r, n_s read h_{r-1}, h_{s-1}): a causal integral whose
kernel K(t, s) = prod_{r=s+1}^t z_r is a data-dependent cumulative product (the kernels of minGRU and
gated linear attention, docs/theory.md §11), with the gates frozen at the solution. ``layer.multiplicative_form(x, hx)`` evaluates it
densely (O(T^3 H), a check, not a fast path).

Pitfalls: torch applies r to (W_hn h + b_hn) ("reset after", ONNX linear_before_reset=1), so b_hn is not
redundant while the other b_ih + b_hh pairs are; torch's z multiplies h_{t-1} (minGRU's is the opposite);
other frameworks order gates differently and store kernels transposed. The identity maps of the shift
are frozen (requires_grad False): training them would leave the class of torch recurrences.

Construction: ``rnn_as_itnet`` / ``gru_as_itnet`` / ``lstm_as_itnet`` (weights in torch's layout; arrays
become trainable Parameters, Tensors are used as given so gradients reach them), ``from_torch(module)``;
reverse map ``layer.torch_weights()``. Tests: tests/proofs/test_recurrence.py.
"""
import functools

import numpy as np

from itnet_np.autograd import ops
from itnet_np.autograd.backend import to_device, xp_of
from itnet_np.autograd.ops._util import raw
from itnet_np.errors import ConfigError, DTypeError, ShapeError, describe
from itnet_np.nn import functional as F
from itnet_np.nn.module import Module
from itnet_np.transform import Volterra, shift_transform

from ._common import weight

__all__ = ["VolterraRecurrence", "from_torch", "gru_as_itnet", "lstm_as_itnet", "rnn_as_itnet"]

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
_BUILDERS = {"rnn": "rnn_as_itnet", "gru": "gru_as_itnet", "lstm": "lstm_as_itnet"}
_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _linear(a, weight, bias):
    """a W^T (+ b)."""
    y = ops.matmul(a, ops.transpose(weight))
    return y if bias is None else y + bias


def _gru_gates(h_prev, u, weight_hh, bias_hh, H):
    """(z, n) of the GRU for previous states h_prev and input gates u = x W_ih^T + b_ih."""
    gh = _linear(h_prev, weight_hh, bias_hh)
    r = F.sigmoid(u[..., :H] + gh[..., :H])
    z = F.sigmoid(u[..., H:2 * H] + gh[..., H:2 * H])
    return z, ops.tanh(u[..., 2 * H:] + r * gh[..., 2 * H:])


def _lstm_gates(h_prev, u, weight_hh, bias_hh, H):
    """(i, f, g, o) of the LSTM."""
    pre = u + _linear(h_prev, weight_hh, bias_hh)
    return (F.sigmoid(pre[..., :H]), F.sigmoid(pre[..., H:2 * H]), ops.tanh(pre[..., 2 * H:3 * H]),
            F.sigmoid(pre[..., 3 * H:]))


# The cells Phi(z, u): z = T_K[y] (the previous state), u the input gates; any number of time steps.
def _rnn_cell(z, u, weight_hh, bias_hh, H, act):
    return act(u + _linear(z, weight_hh, bias_hh))


def _gru_cell(z, u, weight_hh, bias_hh, H, act):
    zg, n = _gru_gates(z, u, weight_hh, bias_hh, H)
    return (1.0 - zg) * n + zg * z


def _lstm_cell(z, u, weight_hh, bias_hh, H, act):
    i, f, g, o = _lstm_gates(z[..., :H], u, weight_hh, bias_hh, H)
    c = f * z[..., H:] + i * g
    return ops.concatenate([o * ops.tanh(c), c], axis=-1)


_CELLS = {"rnn": _rnn_cell, "gru": _gru_cell, "lstm": _lstm_cell}


class VolterraRecurrence(Module):
    """A torch RNN/GRU/LSTM layer (one layer, unidirectional, batch-first) as the Volterra solve
    y = Phi(T_K[y], x W_ih^T + b_ih) (module docstring). Build it with rnn_as_itnet / gru_as_itnet /
    lstm_as_itnet. ``layer(x, hx=None, method='substitution'|'picard', iterations=None)`` returns what
    torch returns: (output (B, T, H), h_n (1, B, H)), or (output, (h_n, c_n)) for the LSTM.
    """

    def __init__(self, mode, weight_ih, weight_hh, bias_ih=None, bias_hh=None, nonlinearity="tanh"):
        super().__init__()
        builder = _BUILDERS[mode]
        if mode == "rnn" and nonlinearity not in ("tanh", "relu"):
            raise ConfigError(f"{builder}: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        G = GATES[mode]
        w_ih, w_hh, b_ih, b_hh = (weight(v, n, builder) for v, n in
                                  zip((weight_ih, weight_hh, bias_ih, bias_hh), _NAMES))
        if w_hh is None or w_ih is None:
            raise ConfigError(f"{builder}: weight_ih and weight_hh are required")
        if len(w_hh.shape) != 2 or w_hh.shape[1] < 1:
            raise ShapeError(f"{builder}: weight_hh must be 2-D ({G}H, H), got {describe(raw(w_hh))}")
        if w_hh.shape[0] != G * w_hh.shape[1]:
            raise ShapeError(f"{builder}: weight_hh must be ({G}H, H) = ({G * w_hh.shape[1]}, {w_hh.shape[1]}), "
                             f"got {describe(raw(w_hh))}")
        H = w_hh.shape[1]
        if len(w_ih.shape) != 2 or w_ih.shape[0] != G * H or w_ih.shape[1] < 1:
            raise ShapeError(f"{builder}: weight_ih must be ({G}H, I) = ({G * H}, I) with H = {H} (from "
                             f"weight_hh), got {describe(raw(w_ih))}")
        for name, b in (("bias_ih", b_ih), ("bias_hh", b_hh)):
            if b is not None and tuple(b.shape) != (G * H,):
                raise ShapeError(f"{builder}: {name} must be ({G}H,) = ({G * H},), got {describe(raw(b))}")
        dtypes = {raw(w).dtype for w in (w_ih, w_hh, b_ih, b_hh) if w is not None}
        if len(dtypes) != 1:
            raise DTypeError(f"{builder}: weights and biases must share one dtype, got {sorted(map(str, dtypes))}")
        self.mode, self.nonlinearity, self._builder = mode, nonlinearity, builder
        self.hidden_size, self.input_size = H, w_ih.shape[1]
        self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh = w_ih, w_hh, b_ih, b_hh
        width = 2 * H if mode == "lstm" else H
        self.solver = Volterra(shift_transform(width, query_features=G * H, dtype=dtypes.pop()))
        for p in self.solver.parameters():
            p.requires_grad_(False)

    def extra_repr(self):
        act = f", nonlinearity={self.nonlinearity!r}" if self.mode == "rnn" else ""
        return f"mode={self.mode!r}, input_size={self.input_size}, hidden_size={self.hidden_size}{act}"

    def _cell(self):
        """Phi bound to the weights as they are now (so Tensors given by the caller get gradients)."""
        act = F.relu if self.nonlinearity == "relu" else ops.tanh
        return functools.partial(_CELLS[self.mode], weight_hh=self.weight_hh, bias_hh=self.bias_hh,
                                 H=self.hidden_size, act=act)

    def _check_x(self, x):
        shape = tuple(getattr(x, "shape", ()))
        if len(shape) != 3 or shape[2] != self.input_size:
            raise ShapeError(f"{self._builder}: x must be batch-first (B, T, I) = (B, T, {self.input_size}), "
                             f"got {describe(raw(x))}")
        if shape[1] == 0:
            raise ShapeError(f"{self._builder}: x must have T >= 1 time steps (like torch), got {describe(raw(x))}")
        return shape[0], shape[1]

    def _state(self, s, name, B, dtype):
        """(1, B, H) state -> (B, 1, H) boundary; None -> zeros."""
        H = self.hidden_size
        if s is None:
            return xp_of(raw(self.weight_hh)).zeros((B, 1, H), dtype)
        if tuple(getattr(s, "shape", ())) != (1, B, H):
            raise ShapeError(f"{self._builder}: {name} must be (1, B, H) = (1, {B}, {H}), got {describe(raw(s))}")
        return ops.transpose(s, axes=(1, 0, 2))

    def boundary(self, hx, B, dtype):
        """The Volterra boundary (B, 1, W) from torch's hx: h0, or [h0 | c0] for the LSTM."""
        if self.mode != "lstm":
            return self._state(hx, "hx", B, dtype)
        if hx is None:
            hx = (None, None)
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise ShapeError(f"{self._builder}: hx must be a pair (h0, c0) of (1, B, H) states, got "
                             f"{type(hx).__name__}")
        return ops.concatenate([self._state(hx[0], "h0", B, dtype), self._state(hx[1], "c0", B, dtype)],
                               axis=-1)

    def solve(self, x, hx=None, method="substitution", iterations=None, return_iterates=False):
        """The Volterra unknown y (B, T, H) ((B, T, 2H) = [h | c] for the LSTM), or (y, iterates)."""
        B = self._check_x(x)[0]
        if method == "substitution" and iterations is not None:
            raise ConfigError(f"{self._builder}: iterations={iterations!r} is only for method='picard'")
        if iterations is not None and int(iterations) < 0:
            raise ConfigError(f"{self._builder}: iterations must be >= 0, got {iterations!r}")
        boundary = self.boundary(hx, B, raw(self.weight_hh).dtype)
        u = _linear(x, self.weight_ih, self.bias_ih)
        return self.solver(u, boundary=boundary, method=method, iterations=iterations,
                           return_iterates=return_iterates, cell=self._cell())

    def outputs(self, y):
        """torch's return value from the unknown y."""
        H, T = self.hidden_size, y.shape[1]
        last = ops.transpose(y[:, T - 1:T], axes=(1, 0, 2))            # (1, B, W)
        if self.mode != "lstm":
            return y, last
        return y[..., :H], (last[..., :H], last[..., H:])

    def forward(self, x, hx=None, method="substitution", iterations=None):
        """x (B, T, I), hx torch's initial state or None; see the class docstring."""
        return self.outputs(self.solve(x, hx, method, iterations))

    def multiplicative_form(self, x, hx=None):
        """The output (B, T, H) from the gated Volterra form of the module docstring (GRU, LSTM),
        gates evaluated on the forward-substitution solution."""
        if self.mode == "rnn":
            raise ConfigError("multiplicative_form: the Elman RNN has no gates; it exists for GRU and LSTM")
        y = self.solve(x, hx)
        B, T, H = y.shape[0], y.shape[1], self.hidden_size
        boundary = self.boundary(hx, B, raw(self.weight_hh).dtype)
        prev = ops.concatenate([boundary, y[:, :T - 1]], axis=1)       # T_K[y]: states h_{t-1}, c_{t-1}
        u = _linear(x, self.weight_ih, self.bias_ih)
        if self.mode == "gru":
            z, n = _gru_gates(prev, u, self.weight_hh, self.bias_hh, H)
            return _cumulative_product_integral(z, (1.0 - z) * n, boundary)
        i, f, g, o = _lstm_gates(prev[..., :H], u, self.weight_hh, self.bias_hh, H)
        c = _cumulative_product_integral(f, i * g, boundary[..., H:])
        return o * ops.tanh(c)

    def torch_weights(self):
        """The reverse map: torch's state_dict entries (copies) for nn.RNN/GRU/LSTM(num_layers=1).
        A missing bias is zeros when the other is given; without biases, torch's bias=False."""
        host = lambda w: np.array(to_device(raw(w), "cpu"), copy=True)
        out = {f"{n}_l0": host(getattr(self, n)) for n in _NAMES[:2]}
        if self.bias_ih is not None or self.bias_hh is not None:
            zeros = np.zeros(GATES[self.mode] * self.hidden_size, raw(self.weight_hh).dtype)
            for n in _NAMES[2:]:
                b = getattr(self, n)
                out[f"{n}_l0"] = zeros.copy() if b is None else host(b)
        return out


def _cumulative_product_integral(a, source, initial):
    """y_t = [prod_{r<=t} a_r] initial + sum_{s<=t} [prod_{r=s+1}^t a_r] source_s, densely.

    a, source (B, T, H), initial (B, 1, H). Source index s runs over -1 (the initial state), 0..T-1;
    the kernel K(t, s) = prod_{r=s+1}^t a_r is 0 for s > t (strictly a causal integral)."""
    T, xp = a.shape[1], xp_of(raw(a))
    t, s, r = xp.arange(T), xp.arange(-1, T), xp.arange(T)
    inside = (s[None, :, None] < r[None, None, :]) & (r[None, None, :] <= t[:, None, None])  # (T, T+1, T)
    a5 = ops.reshape(a, (a.shape[0], 1, 1, T, a.shape[2]))
    factors = ops.where(inside[None, :, :, :, None], a5, 1.0)                # (B, T, T+1, T, H)
    causal = (s[None, :] <= t[:, None]).astype(raw(a).dtype)[None, :, :, None]
    kernel = ops.prod(factors, axis=3) * causal                              # (B, T, T+1, H)
    return ops.einsum("btsh,bsh->bth", kernel, ops.concatenate([initial, source], axis=1))


def rnn_as_itnet(weight_ih, weight_hh, bias_ih=None, bias_hh=None, nonlinearity="tanh"):
    """torch.nn.RNN (Elman) as a Volterra layer: weight_ih (H, I), weight_hh (H, H), biases (H,)."""
    return VolterraRecurrence("rnn", weight_ih, weight_hh, bias_ih, bias_hh, nonlinearity)


def gru_as_itnet(weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """torch.nn.GRU as a Volterra layer: weight_ih (3H, I) = [W_ir; W_iz; W_in], weight_hh (3H, H),
    biases (3H,)."""
    return VolterraRecurrence("gru", weight_ih, weight_hh, bias_ih, bias_hh)


def lstm_as_itnet(weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """torch.nn.LSTM (no projection) as a Volterra layer: weight_ih (4H, I) = [W_ii; W_if; W_ig; W_io],
    weight_hh (4H, H), biases (4H,)."""
    return VolterraRecurrence("lstm", weight_ih, weight_hh, bias_ih, bias_hh)


def from_torch(module):
    """The Volterra layer of a torch nn.RNN / GRU / LSTM (num_layers=1, unidirectional, no projection).
    Weights are copied (trainable Parameters); the layer is batch-first whatever module.batch_first."""
    if (getattr(module, "num_layers", 1) != 1 or getattr(module, "bidirectional", False)
            or getattr(module, "proj_size", 0)):
        raise ConfigError("from_torch: only num_layers=1, bidirectional=False, proj_size=0 are supported")
    modes = {"RNN_TANH": ("rnn", "tanh"), "RNN_RELU": ("rnn", "relu"), "GRU": ("gru", "tanh"),
             "LSTM": ("lstm", "tanh")}
    if getattr(module, "mode", None) not in modes:
        raise ConfigError(f"from_torch: expected nn.RNN, nn.GRU or nn.LSTM, got {type(module).__name__}")
    mode, act = modes[module.mode]
    weights = [getattr(module, f"{n}_l0", None) for n in _NAMES]
    return VolterraRecurrence(mode, *weights, nonlinearity=act)
