"""Torch-API plumbing for the attention constructions: what torch's calling conventions mean for the
operator, kept apart from the constructions themselves (:mod:`itnet_np.proofs.attention`).

- Masks. torch has two polarities (docs/theory.md §3): nn.MultiheadAttention's bool masks say True =
  NOT allowed, scaled_dot_product_attention's say True = attend. Float masks are added to the scores
  in both; a float -inf blocks like a bool. The operator takes a *support* (True = attend, per head
  where the masks differ by head) and an additive ``score_bias``: :func:`torch_masks` converts.
- Layout. torch SDPA works on (B, H, L, E); the operator on (B, L, H E), head-major columns:
  :func:`heads_last` / :func:`heads_first`.
- Shapes. :func:`check_shape` raises the ShapeError that names the torch argument.
"""
import numpy as np

from itnet_np.autograd import ops
from itnet_np.autograd.ops._util import raw
from itnet_np.autograd.tensor import Tensor
from itnet_np.errors import ShapeError, describe

from ._common import shape_of


def as_array(a):
    """A Tensor as given (gradients reach it), anything else (nested lists too) as an array."""
    return a if isinstance(a, Tensor) else np.asarray(a)


def check_shape(name, value, expected, why=""):
    """ShapeError naming ``name`` unless ``value`` has exactly the shape ``expected``."""
    if shape_of(raw(value)) != tuple(expected):
        got = describe(np.asarray(raw(value)))
        raise ShapeError(f"{name}: expected shape {tuple(expected)}{why}, got {got}")


def causal_block(L, S):
    """(L, S) bool, True = blocked: j > i (torch's is_causal, the top-left aligned tril(L, S))."""
    return ~np.tril(np.ones((L, S), dtype=bool))


def _split(mask, shape4, true_blocks, name):
    """One torch mask -> (blocked raw bool, additive float or None), both broadcastable to shape4."""
    data = np.asarray(raw(mask))
    if data.ndim > 4 or any(a not in (1, b) for a, b in zip(data.shape[::-1], shape4[::-1])):
        raise ShapeError(f"{name}: expected a shape broadcastable to {shape4}, got {describe(data)}")
    view = (1,) * (4 - data.ndim) + data.shape
    if data.dtype == bool:
        blocked = data if true_blocks else ~data
        return blocked.reshape(view), None
    if data.dtype.kind != "f":
        raise ShapeError(f"{name}: expected a bool or floating mask, got {describe(data)}")
    blocked = np.isneginf(data)       # a float -inf is a block too; the rest is an additive score
    additive = ops.where(blocked, 0.0, mask) if blocked.any() else mask
    return blocked.reshape(view), ops.reshape(additive, view)


def torch_masks(parts, B, H, L, S, dtype):
    """(keep, score_bias) for the operator from torch-style ``parts``: (mask, true_blocks, name)
    triples (mask None to skip), each broadcastable to (B, H, L, S); ``true_blocks`` is the polarity
    of a bool mask. keep: (B|1, H|1, L, S) bool, True = attend (a head axis of 1 is a mask shared by
    the heads), or None when nothing is blocked; score_bias: (B|1, H|1, L, S) or None."""
    blocked, additive = None, None
    for mask, true_blocks, name in parts:
        if mask is None:
            continue
        b, a = _split(mask, (B, H, L, S), true_blocks, name)
        b = np.broadcast_to(b, b.shape[:2] + (L, S))            # the operator wants full (L, S) axes
        blocked = b if blocked is None else blocked | b
        if a is not None:
            a = ops.broadcast_to(a, shape_of(raw(a))[:2] + (L, S))
            additive = a if additive is None else additive + a
    keep = None if blocked is None or not blocked.any() else ~blocked
    if additive is not None and not isinstance(additive, Tensor):
        additive = np.asarray(additive, dtype)
    return keep, additive


def heads_last(t, B, n, H, d):
    """(B, H, n, d) -> (B, n, H d), head-major columns (engine ops: gradients flow)."""
    return ops.reshape(ops.transpose(t, (0, 2, 1, 3)), (B, n, H * d))


def heads_first(t, B, n, H, d):
    """(B, n, H d) -> (B, H, n, d), the inverse of :func:`heads_last`."""
    return ops.transpose(ops.reshape(t, (B, n, H, d)), (0, 2, 1, 3))
