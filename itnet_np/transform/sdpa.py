"""scaled_dot_product_attention: torch's SDPA semantics, evaluated through the transform planner.

    out = softmax(scale q k^T + bias, axis=-1) v,     scale = 1/sqrt(d) unless given

q (B, H, N, d), k (B, H, M, d), v (B, H, M, dv), arrays or Tensors of one float dtype (float32 or
float64; float16 for CuPy arrays, which 'auto' sends to the tensor-core backend 'cupy'). attn_mask,
broadcastable to (B, H, N, M): bool, True = attend (False pairs are excluded), or float (added to
the logits; -inf excludes). is_causal: keep j <= i (top-left aligned tril, as torch); it cannot be
combined with attn_mask (torch raises too). Rows with no attended source give zeros (torch gives
NaN) and zero gradients, never NaN.

The call is the operator's: a planner.TransformCall with a parameter-free DotProductKernel (the
given q, k are its per-point projections), values v, no quadrature weights, normalisation 'softmax',
the support as a support.SupportPlan on the index grid p_i = i, p_j = j (is_causal -> the causal
support; a bool mask, or the -inf entries of a float mask, -> its explicit mask) and the float mask
as the score bias. ``planner.plan(backend, call)`` then decides, with the rule and the decline
reasons IntegralTransform uses; :func:`explain` returns that decision in words.

backend: 'dense' (planner.dense: engine ops, the stable masked softmax of normalization.py; any
order of derivatives), 'numba' (one fused engine node, FlashAttention-2 tiles; first-order
gradients; create_graph raises GraphError; a call it declines, e.g. CuPy arrays, raises ConfigError
with the reason), any registered backend, or 'auto': the first backend whose plan pays (numba from
N M >= fused.numba_plans.MIN_PAIRS on NumPy arrays), else 'dense'.

'auto' crossover of this entry point, measured (forward + backward, is_causal, B = 1, H = 4, d = 32,
numba warm, a shared 2-core CPU, so +-30% noise): fused / dense time at N = M = 32, 48, 64, 96, 128,
256 was 1.9, 1.8, 0.5, 0.6, 0.015, 0.03 in float64 and 1.6, 1.4, 0.96, 1.05, 0.3, 0.02 in float32,
within the noise of the operator's 48^2 crossover. Numba's first call compiles the kernels (cached on
disk: cache=True), which 'auto' does not count.
"""
import math

import numpy as np

from ..autograd import ops
from ..autograd.backend import xp_of
from ..autograd.tensor import Tensor
from ..errors import ConfigError, DTypeError, ShapeError, describe
from . import planner
from .kernels.base import Kernel, Projection
from .kernels.dot import DotProductKernel
from .support import Support


def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False, scale=None, backend="auto"):
    """Attention of q (B, H, N, d) over k (B, H, M, d), v (B, H, M, dv) -> (B, H, N, dv).

    See the module docstring. Returns a Tensor when any argument is a Tensor, else an ndarray
    (the engine's convention: raw arrays in, raw array out).
    """
    return planner.plan(backend, attention_call(q, k, v, attn_mask, is_causal, scale, backend)).run()


def explain(q, k, v, attn_mask=None, is_causal=False, scale=None, backend="auto"):
    """In words: which backend scaled_dot_product_attention with these arguments runs, and what every
    available backend answers (its plan, or why it declines). Evaluates nothing."""
    return planner.explain(backend, attention_call(q, k, v, attn_mask, is_causal, scale, backend))


def attention_call(q, k, v, attn_mask=None, is_causal=False, scale=None, backend="auto"):
    """The checked planner.TransformCall of one scaled_dot_product_attention call (module docstring)."""
    qd, kd, vd = (_check(a, name) for a, name in ((q, "q"), (k, "k"), (v, "v")))
    B, H, N, d = qd.shape
    M = kd.shape[2]
    if kd.shape[:2] != (B, H) or kd.shape[3] != d or vd.shape[:3] != (B, H, M):
        raise ShapeError(f"scaled_dot_product_attention: expected q (B, H, N, d), k (B, H, M, d), "
                         f"v (B, H, M, dv); got q {qd.shape}, k {kd.shape}, v {vd.shape}")
    if not (qd.dtype == kd.dtype == vd.dtype):
        raise DTypeError(f"scaled_dot_product_attention: q, k, v must share one dtype, got "
                         f"{qd.dtype}, {kd.dtype}, {vd.dtype}")
    try:
        planner.check_backend(backend)
    except ConfigError as exc:
        raise ConfigError(f"scaled_dot_product_attention: {exc}") from exc
    if is_causal and attn_mask is not None:
        raise ConfigError("scaled_dot_product_attention: pass either attn_mask or is_causal=True, not both")
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    if not math.isfinite(scale):
        raise ConfigError(f"scaled_dot_product_attention: scale must be finite, got {scale!r}")
    keep, bias = _split_mask(attn_mask, (B, H, N, M), qd.dtype)
    xp = xp_of(qd)
    # p_i = i, p_j = j; float32 for float16 data (float16 integers are exact only up to 2048)
    grid_dtype = np.float32 if qd.dtype == np.float16 else qd.dtype
    grid = [xp.arange(n, dtype=grid_dtype).reshape(1, n, 1) for n in (N, M)]
    support = Support("causal" if is_causal else "full").plan(grid[0], grid[1], keep)
    proj = Projection({"q": ops.transpose(q, (0, 2, 1, 3))}, {"k": ops.transpose(k, (0, 2, 1, 3))})
    return planner.TransformCall(_GivenDot(H, d, scale), proj, v, None, support, "softmax", bias)


class _GivenDot(DotProductKernel):
    """s^h_ij = scale q^h_i . k^h_j on q, k given per head: a DotProductKernel without parameters, so
    that every backend treats SDPA exactly as the operator's attention (proj: q (B, N, H, d), k
    (B, M, H, d))."""

    def __init__(self, heads, head_dim, scale):
        Kernel.__init__(self, heads)
        self.in_features = self.query_features = self.head_dim = head_dim
        self.scale, self.position_bias = scale, None

    def project(self, query, source):
        raise ConfigError("scaled_dot_product_attention's kernel takes q and k as given; it projects nothing")


def _split_mask(mask, full, dtype):
    """(keep, bias): a bool mask as a raw 4-D bool array, a float mask as a 4-D array/Tensor; the
    float mask's -inf entries become excluded pairs (bias 0 there, gradient 0), so that no -inf
    enters the arithmetic (detect_anomaly passes; NaN entries are kept and propagate)."""
    if mask is None:
        return None, None
    data = _data(mask)
    if not hasattr(data, "shape"):
        mask = data = np.asarray(data)
    if data.ndim > 4 or any(s not in (1, f) for s, f in zip(data.shape[::-1], full[::-1])):
        raise ShapeError(f"scaled_dot_product_attention: attn_mask must broadcast to {full}, got {describe(data)}")
    shape4 = (1,) * (4 - data.ndim) + tuple(data.shape)
    if data.dtype.kind == "b":
        return data.reshape(shape4), None
    if data.dtype != dtype:
        raise DTypeError(f"scaled_dot_product_attention: a float attn_mask must be {dtype} like q, got "
                         f"{describe(data)} (bool masks: True = attend)")
    bias = ops.reshape(mask, shape4) if data.ndim < 4 else mask
    excluded = (data == -np.inf).reshape(shape4)           # NaN entries stay and propagate
    if not excluded.any():
        return None, bias
    return ~excluded, ops.where(excluded, 0.0, bias)


def _check(a, name):
    data = _data(a)
    if not hasattr(data, "shape") or data.ndim != 4:
        raise ShapeError(f"scaled_dot_product_attention: {name} must be a 4-D array (B, H, L, E), got "
                         f"{describe(data)}")
    if data.dtype == np.float16 and xp_of(data) is not np:
        return data              # CuPy float16: the tensor-core backend 'cupy' (gpu/plan_cupy.py)
    if data.dtype not in (np.float32, np.float64):
        raise DTypeError(f"scaled_dot_product_attention: {name} must be float32 or float64 (float16 only as CuPy "
                         f"arrays on a GPU, for the tensor-core kernels), got {describe(data)}")
    return data


def _data(a):
    return a.data if isinstance(a, Tensor) else a
