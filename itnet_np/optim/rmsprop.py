"""RMSprop (Hinton, Lecture 6e, 2012) with torch's options and exact arithmetic.

At step t = 1, 2, ... with gradient g of parameter p (v, gbar, b start at 0):

    g    <- g + weight_decay * p                      (L2 penalty folded into the gradient)
    v_t   = alpha v_{t-1} + (1 - alpha) g^2           (running mean of g^2)
    vt    = v_t - gbar_t^2,  gbar_t = alpha gbar_{t-1} + (1 - alpha) g    if centered, else v_t
    b_t   = momentum b_{t-1} + g / (sqrt(vt) + eps),   p <- p - lr b_t     if momentum > 0
    p    <- p - lr g / (sqrt(vt) + eps)                                   otherwise

eps is added after the square root, as in torch (not inside it, as in TensorFlow).
"""
from ..autograd.backend import xp_of
from ..errors import ConfigError
from .optimizer import Optimizer, scalars


class RMSprop(Optimizer):
    """RMSprop(params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False)."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps, "weight_decay": weight_decay,
                                  "momentum": momentum, "centered": centered})

    def _check(self, group):
        super()._check(group)
        if not 0.0 <= group["alpha"] <= 1.0:
            raise ConfigError(f"RMSprop: alpha must be in [0, 1], got {group['alpha']}")
        for key in ("eps", "momentum"):
            if not group[key] >= 0:
                raise ConfigError(f"RMSprop: {key} must be >= 0, got {group[key]}")

    def _state_keys(self, group):
        keys = {"step", "square_avg"}
        if group["momentum"] > 0:
            keys.add("momentum_buffer")
        if group["centered"]:
            keys.add("grad_avg")
        return keys

    def _update(self, data, grad, state, group):
        xp = xp_of(data)
        if not state:
            state.update(step=0, square_avg=xp.zeros_like(data))
            if group["momentum"] > 0:
                state["momentum_buffer"] = xp.zeros_like(data)
            if group["centered"]:
                state["grad_avg"] = xp.zeros_like(data)
        state["step"] += 1
        lr, alpha, rest, eps, wd, momentum = scalars(data, group["lr"], group["alpha"], 1 - group["alpha"],
                                                     group["eps"], group["weight_decay"], group["momentum"])
        if wd != 0:
            grad = grad + wd * data
        v = state["square_avg"]
        v *= alpha
        v += rest * grad * grad
        if group["centered"]:
            gbar = state["grad_avg"]
            gbar *= alpha
            gbar += rest * grad
            denom = xp.sqrt(v - gbar * gbar) + eps
        else:
            denom = xp.sqrt(v) + eps
        if momentum > 0:
            buf = state["momentum_buffer"]
            buf *= momentum
            buf += grad / denom
            data -= lr * buf
        else:
            data -= lr * (grad / denom)
