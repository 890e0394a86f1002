"""Adagrad (Duchi, Hazan & Singer, 2011) with torch's options and exact arithmetic.

At step t = 1, 2, ... with gradient g of parameter p (the sum s starts at initial_accumulator_value):

    lr_t = lr / (1 + (t - 1) lr_decay)
    g   <- g + weight_decay * p                        (L2 penalty folded into the gradient)
    s_t  = s_{t-1} + g^2
    p   <- p - lr_t g / (sqrt(s_t) + eps)
"""
from ..autograd.backend import xp_of
from ..errors import ConfigError
from .optimizer import Optimizer, scalars


class Adagrad(Optimizer):
    """Adagrad(params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0, eps=1e-10)."""

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0,
                 eps=1e-10):
        super().__init__(params, {"lr": lr, "lr_decay": lr_decay, "weight_decay": weight_decay,
                                  "initial_accumulator_value": initial_accumulator_value, "eps": eps})

    def _check(self, group):
        super()._check(group)
        for key in ("lr_decay", "initial_accumulator_value", "eps"):
            if not group[key] >= 0:
                raise ConfigError(f"Adagrad: {key} must be >= 0, got {group[key]}")

    def _state_keys(self, group):
        return {"step", "sum"}

    def _update(self, data, grad, state, group):
        xp = xp_of(data)
        if not state:
            state.update(step=0, sum=xp.full_like(data, group["initial_accumulator_value"]))
        state["step"] += 1
        clr, wd, eps = scalars(data, group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"]),
                               group["weight_decay"], group["eps"])
        if wd != 0:
            grad = grad + wd * data
        s = state["sum"]
        s += grad * grad
        data -= clr * (grad / (xp.sqrt(s) + eps))
