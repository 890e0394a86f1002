"""Losses: cross_entropy over integer class targets (torch semantics) and mse_loss.

Both are compositions of big ops (log_softmax, multiply, sum), so every derivative, of any order,
comes from the ops' own VJPs.
"""
from ...autograd.backend import xp_of
from ...autograd.ops import mean, multiply, reshape
from ...autograd.ops import sum as _sum
from ...autograd.ops._util import raw
from ...errors import ConfigError, DTypeError, ShapeError, describe
from .softmax import log_softmax

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(name, reduction):
    if reduction not in _REDUCTIONS:
        raise ConfigError(f"{name}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _check_target(logits, target, ignore_index):
    """Validate shapes, dtype and range of an integer class target; return the raw target array."""
    shape = tuple(logits.shape)
    t = raw(target)
    if not hasattr(t, "dtype"):
        t = xp_of(raw(logits)).asarray(t)
    if t.dtype.kind not in "iu":
        raise DTypeError(
            f"cross_entropy: target must hold integer class indices, got {describe(t)}; "
            "class-probability targets are not supported (cast indices with .astype('int64'))")
    expected = shape[:1] + shape[2:] if len(shape) > 1 else ()
    if tuple(t.shape) != expected:
        raise ShapeError(
            f"cross_entropy: target has shape {tuple(t.shape)}, expected {expected} "
            f"for logits of shape {shape} (logits are (N, C) or (N, C, d1, ...), classes on axis 1)")
    classes = shape[1] if len(shape) > 1 else shape[0]
    bad = (t != ignore_index) & ((t < 0) | (t >= classes))
    if bool(bad.any()):
        value = int(t[bad].ravel()[0])
        raise ConfigError(
            f"cross_entropy: target value {value} is out of range for {classes} classes "
            f"(expected 0 <= target < {classes}, or target == ignore_index={ignore_index})")
    return t


def cross_entropy(logits, target, ignore_index=-100, label_smoothing=0.0, reduction="mean"):
    """Cross-entropy between ``logits`` and integer class ``target``, as torch.nn.functional.

    logits: (N, C), (N, C, d1, ...) or (C,); target: (N,), (N, d1, ...) or () integers in [0, C)
    or equal to ``ignore_index``. With p = log_softmax(logits) over the class axis and eps the
    label smoothing, each non-ignored position t contributes

        l_t = -sum_c q_c p_c,    q = (1 - eps) onehot(target_t) + eps / C,

    and an ignored one contributes 0. reduction 'mean' divides the sum by the number of
    non-ignored positions (nan when every position is ignored, as torch), 'sum' sums, 'none'
    returns l with target's shape.
    """
    _check_reduction("cross_entropy", reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ConfigError(f"cross_entropy: label_smoothing must lie in [0, 1], got {label_smoothing!r}")
    label_smoothing = float(label_smoothing)  # a numpy scalar would upcast float32 logits
    data = raw(logits)
    if getattr(data, "dtype", None) is None or data.dtype.kind != "f":
        raise DTypeError(f"cross_entropy: logits must be floating, got {describe(data)}")
    if data.ndim == 0:
        raise ShapeError("cross_entropy: logits must be (C,), (N, C) or (N, C, d1, ...), got shape ()")
    t = _check_target(logits, target, ignore_index)
    unbatched = data.ndim == 1
    if unbatched:
        logits = reshape(logits, (1,) + tuple(data.shape))
        data, t = raw(logits), t.reshape((1,))
    xp = xp_of(data)
    classes = data.shape[1]
    # q as a constant array: one-hot by broadcasting a comparison against arange(C) on axis 1.
    arange = xp.arange(classes).reshape((1, classes) + (1,) * (data.ndim - 2))
    keep = t != ignore_index
    onehot = (arange == xp.expand_dims(t, 1)).astype(data.dtype)
    q = (1.0 - label_smoothing) * onehot + label_smoothing / classes
    q = q * xp.expand_dims(keep, 1).astype(data.dtype)
    losses = -_sum(multiply(log_softmax(logits, axis=1), q), axis=1)
    if reduction == "none":
        return reshape(losses, ()) if unbatched else losses
    total = _sum(losses)
    if reduction == "sum":
        return total
    count = int(keep.sum())
    # 0/0 is nan, as torch; say so explicitly instead of letting numpy warn.
    return total / count if count else total * float("nan")


def mse_loss(input, target, reduction="mean"):
    """Mean squared error: (input - target)^2 reduced by 'mean' (default), 'sum' or 'none'.

    input and target must have the same shape (no silent broadcasting); both may require grad.
    """
    _check_reduction("mse_loss", reduction)
    a, b = raw(input), raw(target)
    if tuple(getattr(a, "shape", ())) != tuple(getattr(b, "shape", ())):
        raise ShapeError(
            f"mse_loss: input has shape {tuple(getattr(a, 'shape', ()))} and target "
            f"{tuple(getattr(b, 'shape', ()))}; they must be equal (broadcast explicitly if intended)")
    d = input - target
    sq = d * d
    if reduction == "none":
        return sq
    return mean(sq) if reduction == "mean" else _sum(sq)
