"""Adam (Kingma & Ba, 2015) and AdamW (Loshchilov & Hutter, 2019), with torch's exact arithmetic.

At step t = 1, 2, ... with gradient g of parameter p:

    Adam:   g <- g + weight_decay * p            (L2 penalty, coupled to the adaptive scaling)
    AdamW:  p <- p * (1 - lr * weight_decay)     (decoupled decay, applied before the Adam step)
    m_t = beta1 m_{t-1} + (1 - beta1) g
    v_t = beta2 v_{t-1} + (1 - beta2) g^2
    vhat = max(vhat_{t-1}, v_t)  if amsgrad  else  v_t
    p <- p - (lr / (1 - beta1^t)) * m_t / ( sqrt(vhat) / sqrt(1 - beta2^t) + eps )

eps is added AFTER the bias correction of sqrt(v), as torch does (not inside the square root,
and not to the uncorrected sqrt(v)).
"""
import math

from ..autograd.backend import xp_of
from ..errors import ConfigError
from .optimizer import Optimizer, scalars


class Adam(Optimizer):
    """Adam(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False)."""

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                                      "amsgrad": amsgrad})

    def _check(self, group):
        super()._check(group)
        betas = tuple(group["betas"])
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ConfigError(f"{type(self).__name__}: betas must be two numbers in [0, 1), got {betas}")
        if group["eps"] < 0:
            raise ConfigError(f"{type(self).__name__}: eps must be >= 0, got {group['eps']}")
        group["betas"] = betas

    def _state_keys(self, group):
        keys = {"step", "exp_avg", "exp_avg_sq"}
        return keys | {"max_exp_avg_sq"} if group["amsgrad"] else keys

    def _update(self, data, grad, state, group):
        xp = xp_of(data)
        beta1, beta2 = group["betas"]
        if not state:
            state.update(step=0, exp_avg=xp.zeros_like(data), exp_avg_sq=xp.zeros_like(data))
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = xp.zeros_like(data)
        state["step"] += 1
        t = state["step"]
        bias1, bias2 = 1 - beta1 ** t, 1 - beta2 ** t
        wd, decay, b1, b2, c1, c2, eps, root_bias2, step_size = scalars(
            data, group["weight_decay"], 1 - group["lr"] * group["weight_decay"], beta1, beta2, 1 - beta1,
            1 - beta2, group["eps"], math.sqrt(bias2), group["lr"] / bias1)
        if wd != 0:
            if self.decoupled:
                data *= decay
            else:
                grad = grad + wd * data
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= b1
        m += c1 * grad
        v *= b2
        v += c2 * grad * grad
        if group["amsgrad"]:
            xp.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
            v = state["max_exp_avg_sq"]
        denom = xp.sqrt(v) / root_bias2 + eps
        data -= step_size * (m / denom)


class AdamW(Adam):
    """AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
    Adam with decoupled weight decay p <- p (1 - lr weight_decay)."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
