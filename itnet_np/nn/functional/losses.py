"""Losses with torch's semantics: cross_entropy, nll_loss, binary_cross_entropy_with_logits,
mse_loss, l1_loss, huber_loss; and relative_l2_loss, the operator-learning loss.

All are compositions of big ops (log_softmax, softplus, multiply, sum, where), so every
derivative, of any order, comes from the ops' own VJPs. Reductions: 'mean' (default), 'sum' or
'none' (the per-element losses). Constants enter in the input's dtype, so float32 stays float32.
"""
import numbers

import numpy as np

from ...autograd.backend import xp_of
from ...autograd.ops import abs as _abs
from ...autograd.ops import mean, multiply, norm, reshape, where
from ...autograd.ops import sum as _sum
from ...autograd.ops._util import raw
from ...errors import ConfigError, DTypeError, ShapeError, describe
from ._args import array_of, positive
from .activations import softplus
from .softmax import log_softmax

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(name, reduction):
    if reduction not in _REDUCTIONS:
        raise ConfigError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _reduce(losses, reduction):
    if reduction == "none":
        return losses
    return mean(losses) if reduction == "mean" else _sum(losses)


# ----- classification over a class axis: cross_entropy and nll_loss -------------------------------
def _class_input(name, x, arg="input"):
    """Floating (C,), (N, C) or (N, C, d1, ...) scores; returns the array."""
    d = array_of(name, x, arg)
    if d.dtype.kind != "f":
        raise DTypeError(f"{name}: {arg} must be floating, got {describe(d)}")
    if d.ndim == 0:
        raise ShapeError(f"{name}: {arg} must be (C,), (N, C) or (N, C, d1, ...), got shape ()")
    return d


def _check_target(name, shape, target, ignore_index):
    """Validate shape, dtype and range of an integer class target; return the raw target array."""
    t = array_of(name, target, "target")
    if t.dtype.kind not in "iu":
        raise DTypeError(f"{name}: target must hold integer class indices, got {describe(t)} "
                         "(cast indices with .astype('int64'))")
    expected = shape[:1] + shape[2:] if len(shape) > 1 else ()
    if tuple(t.shape) != expected:
        raise ShapeError(
            f"{name}: target has shape {tuple(t.shape)}, expected {expected} for input of shape "
            f"{shape} (input is (N, C) or (N, C, d1, ...), classes on axis 1)")
    classes = shape[1] if len(shape) > 1 else shape[0]
    bad = (t != ignore_index) & ((t < 0) | (t >= classes))
    if bool(bad.any()):
        value = int(t[bad].ravel()[0])
        raise ConfigError(
            f"{name}: target value {value} is out of range for {classes} classes "
            f"(expected 0 <= target < {classes}, or target == ignore_index={ignore_index})")
    return t


def _class_weight(name, weight, classes, dtype):
    """The (C,) class weights as a constant array (no gradient flows to them, as in torch)."""
    if weight is None:
        return None
    w = array_of(name, weight, "weight")
    if getattr(weight, "requires_grad", False):
        raise ConfigError(f"{name}: weight is a constant rescaling (no gradient flows to it); pass "
                          "weight.detach()")
    if tuple(w.shape) != (classes,):
        raise ShapeError(f"{name}: weight has shape {tuple(w.shape)}, expected ({classes},) (one per class)")
    if w.dtype != dtype:
        raise DTypeError(f"{name}: weight is {w.dtype} but the input is {dtype}; convert explicitly")
    return w


def _along_classes(w, ndim):
    return w.reshape((1, -1) + (1,) * (ndim - 2))


def _index_loss(logp, t, weight, ignore_index, label_smoothing, reduction):
    """-sum_c w_c q_c logp_c per position, q = (1 - eps) onehot(t) + eps / C, 0 where ignored;
    'mean' divides the total by sum over kept positions of w[t] (their number without weight)."""
    data = raw(logp)
    xp, dtype, classes = xp_of(data), data.dtype, data.shape[1]
    arange = xp.arange(classes).reshape((1, classes) + (1,) * (data.ndim - 2))
    keep = t != ignore_index
    onehot = (arange == xp.expand_dims(t, 1)).astype(dtype)
    q = dtype.type(1 - label_smoothing) * onehot + dtype.type(label_smoothing / classes)
    q = q * xp.expand_dims(keep, 1).astype(dtype)
    if weight is not None:
        q = q * _along_classes(weight, data.ndim)
    losses = -_sum(multiply(logp, q), axis=1)
    if reduction != "mean":
        return _reduce(losses, reduction)
    if weight is None:
        denominator = keep.sum()
    else:
        denominator = xp.where(keep, weight[xp.where(keep, t, 0)], dtype.type(0)).sum()
    return _mean_over(_sum(losses), denominator)


def _mean_over(total, denominator):
    """total / denominator in total's dtype; 0/0 is nan, as torch (said explicitly, no numpy warning)."""
    dtype = raw(total).dtype
    if not denominator:
        return total * dtype.type(float("nan"))
    return total / dtype.type(denominator)


def _unbatch(x, t, d):
    """(C,) scores with a () target as one sample: (1, C) and (1,)."""
    return reshape(x, (1,) + tuple(d.shape)), t.reshape((1,) + tuple(t.shape[1:]))


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log-likelihood of integer class ``target`` under log-probabilities ``input``.

    input: (C,), (N, C) or (N, C, d1, ...) (log_softmax outputs); target: (), (N,) or (N, d1, ...)
    integers in [0, C) or ``ignore_index``. Each kept position contributes l = -w[t] input[t]
    (w = weight, ones by default), an ignored one 0; 'mean' is sum(l) / sum of w[t] over kept
    positions (torch's weighted mean; nan when nothing is kept).
    """
    _check_reduction("nll_loss", reduction)
    d = _class_input("nll_loss", input)
    t = _check_target("nll_loss", tuple(d.shape), target, ignore_index)
    w = _class_weight("nll_loss", weight, d.shape[1] if d.ndim > 1 else d.shape[0], d.dtype)
    if d.ndim == 1:
        input, t = _unbatch(input, t, d)
        out = _index_loss(input, t, w, ignore_index, 0.0, reduction)
        return reshape(out, ()) if reduction == "none" else out
    return _index_loss(input, t, w, ignore_index, 0.0, reduction)


def _soft_loss(logp, q, weight, label_smoothing, reduction):
    """-sum_c w_c q_c logp_c with q = (1 - eps) target + eps / C; 'mean' divides by the number of
    positions (N * d1 * ...), not by the weights (torch's rule for probability targets)."""
    data = raw(logp)
    dtype, classes = data.dtype, data.shape[1]
    if label_smoothing:
        q = q * dtype.type(1 - label_smoothing) + dtype.type(label_smoothing / classes)
    if weight is not None:
        q = q * _along_classes(weight, data.ndim)
    losses = -_sum(multiply(logp, q), axis=1)
    if reduction != "mean":
        return _reduce(losses, reduction)
    return _mean_over(_sum(losses), data.size // classes if classes else 0)


def cross_entropy(logits, target, weight=None, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    """Cross-entropy between ``logits`` and ``target``, as torch.nn.functional.cross_entropy.

    logits: (C,), (N, C) or (N, C, d1, ...); with p = log_softmax(logits) over the class axis, eps
    the label smoothing and w the class ``weight`` (ones by default), each position contributes

        l = -sum_c w_c q_c p_c.

    Class-index target ((), (N,) or (N, d1, ...) integers in [0, C), or ``ignore_index``):
    q = (1 - eps) onehot(target) + eps / C, ignored positions give 0, and 'mean' divides the sum
    by the sum of w[target] over the kept positions (their number without weight; nan when every
    position is ignored, as torch). Probability target (floating, logits' shape and dtype, each
    row a distribution over classes; differentiable): q = (1 - eps) target + eps / C and 'mean'
    divides by the number of positions. 'sum' sums, 'none' returns l with the positions' shape.
    """
    name = "cross_entropy"
    _check_reduction(name, reduction)
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real) \
            or not 0.0 <= label_smoothing <= 1.0:
        raise ConfigError(f"{name}: label_smoothing must lie in [0, 1], got {label_smoothing!r}")
    label_smoothing = float(label_smoothing)
    d = _class_input(name, logits, "logits")
    classes = d.shape[1] if d.ndim > 1 else d.shape[0]
    w = _class_weight(name, weight, classes, d.dtype)
    t = array_of(name, target, "target")
    unbatched = d.ndim == 1
    if t.dtype.kind == "f":
        if tuple(t.shape) != tuple(d.shape):
            raise ShapeError(f"{name}: a probability target must have the logits' shape {tuple(d.shape)}, "
                             f"got {tuple(t.shape)} (class indices must be integers)")
        if t.dtype != d.dtype:
            raise DTypeError(f"{name}: target is {t.dtype} but the logits are {d.dtype}; convert explicitly")
        if unbatched:
            logits, target = reshape(logits, (1, classes)), reshape(target, (1, classes))
        out = _soft_loss(log_softmax(logits, axis=1), target, w, label_smoothing, reduction)
    else:
        t = _check_target(name, tuple(d.shape), target, ignore_index)
        if unbatched:
            logits, t = _unbatch(logits, t, d)
        out = _index_loss(log_softmax(logits, axis=1), t, w, ignore_index, label_smoothing, reduction)
    return reshape(out, ()) if unbatched and reduction == "none" else out


# ----- elementwise losses -------------------------------------------------------------------------
def _same_shape(name, input, target):
    a, b = array_of(name, input), array_of(name, target, "target")
    if tuple(a.shape) != tuple(b.shape):
        raise ShapeError(f"{name}: input has shape {tuple(a.shape)} and target {tuple(b.shape)}; they "
                         "must be equal (broadcast explicitly if intended)")
    return a


def _broadcasts_to(name, arg, p, shape):
    """None, or an array / Tensor that broadcasts to ``shape`` without enlarging it."""
    if p is None:
        return None
    s = tuple(array_of(name, p, arg).shape)
    try:
        ok = np.broadcast_shapes(s, shape) == shape
    except ValueError:
        ok = False
    if not ok:
        raise ShapeError(f"{name}: {arg} of shape {s} does not broadcast to the input's shape {shape}")
    return p


def binary_cross_entropy_with_logits(input, target, weight=None, pos_weight=None, reduction="mean"):
    """Binary cross-entropy on logits x with targets y in [0, 1], as torch:

        l = -w [pw y log s(x) + (1 - y) log(1 - s(x))] = w [(1 - y) x + (1 + (pw - 1) y) softplus(-x)]

    using log s(x) = -softplus(-x) and log(1 - s(x)) = -x - softplus(-x): no exp overflows and no
    log(0) for any x. ``weight`` (w) and ``pos_weight`` (pw, e.g. (C,) for the last axis) broadcast
    to the input's shape; target has the input's shape. Differentiable in input and target.
    """
    name = "binary_cross_entropy_with_logits"
    _check_reduction(name, reduction)
    d = _same_shape(name, input, target)
    t = array_of(name, target, "target")
    if d.dtype.kind != "f" or t.dtype != d.dtype:
        raise DTypeError(f"{name}: input and target must be floating of one dtype (targets are "
                         f"probabilities), got input {describe(d)} and target {describe(t)}")
    shape, one = tuple(d.shape), d.dtype.type(1)
    weight = _broadcasts_to(name, "weight", weight, shape)
    pos_weight = _broadcasts_to(name, "pos_weight", pos_weight, shape)
    tail = softplus(-input, threshold=float("inf"))   # the exact, overflow-free log(1 + e^-x)
    if pos_weight is not None:
        tail = (one + (pos_weight - one) * target) * tail
    losses = (one - target) * input + tail
    if weight is not None:
        losses = losses * weight
    return _reduce(losses, reduction)


def mse_loss(input, target, reduction="mean"):
    """Mean squared error: (input - target)^2 reduced by 'mean' (default), 'sum' or 'none'.

    input and target must have the same shape (no silent broadcasting); both may require grad.
    """
    _check_reduction("mse_loss", reduction)
    _same_shape("mse_loss", input, target)
    d = input - target
    return _reduce(d * d, reduction)


def l1_loss(input, target, reduction="mean"):
    """Mean absolute error |input - target| (same shapes), gradient sign(input - target) (0 at 0)."""
    _check_reduction("l1_loss", reduction)
    _same_shape("l1_loss", input, target)
    return _reduce(_abs(input - target), reduction)


def huber_loss(input, target, reduction="mean", delta=1.0):
    """Huber loss, torch's: with d = input - target (same shapes),

        l = d^2 / 2                   where |d| < delta,
            delta (|d| - delta / 2)   elsewhere;

    quadratic near 0, linear beyond delta, continuous with a continuous first derivative.
    """
    _check_reduction("huber_loss", reduction)
    a = _same_shape("huber_loss", input, target)
    delta = positive("huber_loss", "delta", delta)
    dl, half = a.dtype.type(delta), a.dtype.type(0.5)
    d = input - target
    size = _abs(d)
    losses = where(raw(size) < dl, half * d * d, dl * (size - half * dl))
    return _reduce(losses, reduction)


def relative_l2_loss(input, target, reduction="mean"):
    """Per-sample relative L2 error, the loss of operator learning (FNO's training loss):

        l_b = ||input_b - target_b||_2 / ||target_b||_2      (norms over every axis but the first)

    reduced over the batch axis by 'mean' (default), 'sum' or 'none' ((B,) losses). It weighs every
    sample alike whatever its scale, so training on it optimises the metric reported
    (itnet_np.train.relative_l2) instead of the mean squared error, which large-norm samples dominate.
    input and target have the same shape (B, ...); a target with a zero norm is an error (the ratio
    is undefined). Where input == target the gradient is 0 (ops.norm's subgradient), not NaN.
    """
    name = "relative_l2_loss"
    _check_reduction(name, reduction)
    a = _same_shape(name, input, target)
    if a.ndim < 2:
        raise ShapeError(f"{name}: input and target must be (B, ...) with at least one axis per sample, "
                         f"got shape {tuple(a.shape)}")
    axes = tuple(range(1, a.ndim))
    scale = norm(target, axis=axes)
    if (raw(scale) == 0).any():
        raise ShapeError(f"{name}: target sample(s) {np.flatnonzero(raw(scale) == 0).tolist()} have norm 0; "
                         "the relative error is undefined there")
    return _reduce(norm(input - target, axis=axes) / scale, reduction)
