"""GRU: torch.nn.GRUCell / torch.nn.GRU's one-layer recurrence, gate order [r, z, n], torch's layout.

    r_t = sigma(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z_t = sigma(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

weight_ih (3H, I) = [W_ir; W_iz; W_in], weight_hh (3H, H) = [W_hr; W_hz; W_hn], bias_ih / bias_hh
(3H,); all start U(-1/sqrt(H), 1/sqrt(H)) as in torch. :class:`GRUCell` is one step, x (B, I), h (B, H)
-> h' (B, H). :class:`GRU` is batch first, x (B, T, I) -> (output (B, T, H), h_n (1, B, H)); the input
projections of all steps are one matmul, the recurrence a loop over T of the cell's update.
"""
import math

import numpy as np

from ..autograd import ops
from ..errors import ShapeError
from . import functional as F
from . import init
from .layers import _dtype
from .module import Module, Parameter


def gru_update(gi, h, weight_hh, bias_hh):
    """h_t from the input projection gi = W_i x_t + b_i (B, 3H) and h_{t-1} (B, H) (the equations above)."""
    H = h.shape[-1]
    gh = F.linear(h, weight_hh, bias_hh)
    r = F.sigmoid(gi[:, :H] + gh[:, :H])
    z = F.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
    n = ops.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
    return (1.0 - z) * n + z * h


class _GRUBase(Module):
    def __init__(self, input_size, hidden_size, bias=True, rng=None, dtype=None):
        super().__init__()
        dtype, rng = _dtype(dtype), init._generator(rng)
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)
        H, bound = self.hidden_size, 1.0 / math.sqrt(hidden_size)

        def uniform(shape):
            return Parameter(rng.uniform(-bound, bound, size=shape).astype(dtype))

        self.weight_ih = uniform((3 * H, self.input_size))
        self.weight_hh = uniform((3 * H, H))
        self.bias_ih = uniform((3 * H,)) if bias else None
        self.bias_hh = uniform((3 * H,)) if bias else None

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, bias={self.bias_ih is not None}"

    def _initial(self, h0, B, shapes):
        if h0 is None:
            return np.zeros((B, self.hidden_size), self.weight_hh.dtype)
        if tuple(h0.shape) not in shapes:
            raise ShapeError(f"{type(self).__name__}: h0 must be " + " or ".join(map(str, shapes))
                             + f", got shape {tuple(h0.shape)}")
        return ops.reshape(h0, (B, self.hidden_size))


class GRUCell(_GRUBase):
    """``GRUCell(input_size, hidden_size, bias=True, rng=None, dtype=None)``: ``cell(x (B, I), h=None)``
    -> h' (B, H) (h defaults to zeros)."""

    def forward(self, x, h=None):
        s = tuple(x.shape)
        if len(s) != 2 or s[1] != self.input_size:
            raise ShapeError(f"GRUCell: x must be (B, {self.input_size}), got shape {s}")
        h = self._initial(h, s[0], ((s[0], self.hidden_size),))
        return gru_update(F.linear(x, self.weight_ih, self.bias_ih), h, self.weight_hh, self.bias_hh)


class GRU(_GRUBase):
    """``GRU(input_size, hidden_size, bias=True, rng=None, dtype=None)``, batch first, one layer:
    ``gru(x (B, T, I), h0=None)`` -> (output (B, T, H), h_n (1, B, H)); h0 (1, B, H) or (B, H)."""

    def forward(self, x, h0=None):
        s, H = tuple(x.shape), self.hidden_size
        if len(s) != 3 or s[2] != self.input_size:
            raise ShapeError(f"GRU: x must be (B, T, {self.input_size}), got shape {s}")
        B, T = s[0], s[1]
        if T == 0:
            raise ShapeError("GRU: x has no time steps (T = 0)")
        h = self._initial(h0, B, ((1, B, H), (B, H)))
        gi = F.linear(x, self.weight_ih, self.bias_ih)                       # (B, T, 3H), all steps
        outputs = []
        for t in range(T):
            h = gru_update(gi[:, t], h, self.weight_hh, self.bias_hh)
            outputs.append(h)
        return ops.stack(outputs, axis=1), ops.reshape(h, (1, B, H))
