"""Stochastic gradient descent with momentum, dampening, Nesterov and L2 weight decay (torch's rule).

With g the gradient of parameter p at step t (t = 1, 2, ...):

    g   <- g + weight_decay * p                              (L2 penalty folded into the gradient)
    b_1  = g,   b_t = momentum * b_{t-1} + (1 - dampening) * g    (only when momentum != 0)
    g   <- g + momentum * b_t    if nesterov,    else   g <- b_t
    p   <- p - lr * g

Note that the first buffer is g itself (no dampening on step 1), as in torch.
"""
from ..autograd.backend import xp_of
from ..errors import ConfigError
from .optimizer import Optimizer, scalars


class SGD(Optimizer):
    """SGD(params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False)."""

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                      "weight_decay": weight_decay, "nesterov": nesterov})

    def _check(self, group):
        super()._check(group)
        if group["momentum"] < 0:
            raise ConfigError(f"SGD: momentum must be >= 0, got {group['momentum']}")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ConfigError("SGD: nesterov=True needs momentum > 0 and dampening = 0, got "
                              f"momentum={group['momentum']}, dampening={group['dampening']}")

    def _state_keys(self, group):
        return {"momentum_buffer"} if group["momentum"] != 0 else set()

    def _update(self, data, grad, state, group):
        lr, momentum, wd, undamped = scalars(data, group["lr"], group["momentum"], group["weight_decay"],
                                             1 - group["dampening"])
        g = grad + wd * data if wd != 0 else grad
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                # xp.array, not g.copy(): for a 0-d parameter g may be a NumPy scalar, and the buffer
                # must be an array that the in-place updates below reach.
                buf = state["momentum_buffer"] = xp_of(data).array(g)
            else:
                buf *= momentum
                buf += undamped * g
            g = g + momentum * buf if group["nesterov"] else buf
        data -= lr * g
