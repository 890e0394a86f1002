"""GRU: torch.nn.GRU's one-layer recurrence, gate order [r, z, n], in torch's weight layout.

    r_t = sigma(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z_t = sigma(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

weight_ih (3H, I) = [W_ir; W_iz; W_in], weight_hh (3H, H) = [W_hr; W_hz; W_hn], bias_ih / bias_hh
(3H,); all start U(-1/sqrt(H), 1/sqrt(H)) as in torch. Batch first: x (B, T, I) -> (output (B, T, H),
h_n (1, B, H)). The input projections of all steps are one matmul; the recurrence is a loop over T.
"""
import math

import numpy as np

from ..autograd import ops
from ..errors import ShapeError
from ..nn import functional as F
from ..nn import init
from ..nn.layers import _dtype
from ..nn.module import Module, Parameter


class GRU(Module):
    """``GRU(input_size, hidden_size, bias=True, rng=None, dtype=None)``, batch first, one layer."""

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

    def forward(self, x, h0=None):
        s, H = tuple(x.shape), self.hidden_size
        if len(s) != 3 or s[2] != self.input_size:
            raise ShapeError(f"GRU: x must be (B, T, {self.input_size}), got shape {s}")
        B, T = s[0], s[1]
        if h0 is None:
            h = np.zeros((B, H), self.weight_hh.dtype)
        else:
            if tuple(h0.shape) not in ((1, B, H), (B, H)):
                raise ShapeError(f"GRU: h0 must be (1, {B}, {H}) or ({B}, {H}), got shape {tuple(h0.shape)}")
            h = ops.reshape(h0, (B, H))
        gi = F.linear(x, self.weight_ih, self.bias_ih)                       # (B, T, 3H), all steps
        outputs = []
        for t in range(T):
            gh = F.linear(h, self.weight_hh, self.bias_hh)                    # (B, 3H)
            g = gi[:, t]
            r = F.sigmoid(g[:, :H] + gh[:, :H])
            z = F.sigmoid(g[:, H:2 * H] + gh[:, H:2 * H])
            n = ops.tanh(g[:, 2 * H:] + r * gh[:, 2 * H:])
            h = (1.0 - z) * n + z * h
            outputs.append(h)
        if not outputs:
            raise ShapeError("GRU: x has no time steps (T = 0)")
        return ops.stack(outputs, axis=1), ops.reshape(h, (1, B, H))
