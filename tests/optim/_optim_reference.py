"""Explicit loops written from torch's documented optimiser algorithms (torch.optim docs), in
float64 NumPy, independent of itnet_np.optim. Each takes the initial parameter and the list of
gradients and returns the parameter after len(grads) steps.

Imported as ``from _optim_reference import ...`` (tests/ has no __init__.py, so pytest puts this
folder on sys.path).
"""
import numpy as np


def sgd(p, grads, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    p, b = np.array(p, dtype=np.float64), None
    for t, g in enumerate(grads, start=1):
        g = g + weight_decay * p
        if momentum != 0:
            b = g if t == 1 else momentum * b + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        p = p - lr * g
    return p


def adam(p, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False):
    b1, b2 = betas
    p = np.array(p, dtype=np.float64)
    m, v, vmax = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g ** 2
        vmax = np.maximum(vmax, v)
        vhat = (vmax if amsgrad else v) / (1 - b2 ** t)
        p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(vhat) + eps)
    return p


def rmsprop(p, grads, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    p = np.array(p, dtype=np.float64)
    v, g_ave, b = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for g in grads:
        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g ** 2
        v_tilde = v
        if centered:
            g_ave = alpha * g_ave + (1 - alpha) * g
            v_tilde = v_tilde - g_ave ** 2
        if momentum > 0:
            b = momentum * b + g / (np.sqrt(v_tilde) + eps)
            p = p - lr * b
        else:
            p = p - lr * g / (np.sqrt(v_tilde) + eps)
    return p


def adagrad(p, grads, lr, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
    p = np.array(p, dtype=np.float64)
    state_sum = np.full_like(p, initial_accumulator_value)
    for t, g in enumerate(grads, start=1):
        lr_t = lr / (1 + (t - 1) * lr_decay)
        g = g + weight_decay * p
        state_sum = state_sum + g ** 2
        p = p - lr_t * g / (np.sqrt(state_sum) + eps)
    return p


def reference(name, p, grads, **kwargs):
    """The reference for optimiser class ``name`` ('SGD', 'Adam', 'AdamW', 'RMSprop', 'Adagrad')."""
    if name == "AdamW":
        return adam(p, grads, decoupled=True, **{"weight_decay": 1e-2, **kwargs})
    return {"SGD": sgd, "Adam": adam, "RMSprop": rmsprop, "Adagrad": adagrad}[name](p, grads, **kwargs)
