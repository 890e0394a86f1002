"""scaled_dot_product_attention: torch's SDPA semantics on the engine, dense or fused.

    out = softmax(scale q k^T + bias, axis=-1) v,     scale = 1/sqrt(d) unless given

q (B, H, N, d), k (B, H, M, d), v (B, H, M, dv), arrays or Tensors of one float dtype. attn_mask,
broadcastable to (B, H, N, M): bool, True = attend (False pairs are excluded), or float (added to
the logits; -inf excludes). is_causal: keep j <= i (top-left aligned tril, as torch); it cannot be
combined with attn_mask (torch raises too). Rows with no attended source give zeros (torch gives
NaN) and zero gradients, never NaN.

backend: 'dense' (engine ops: matmul, the stable masked softmax of normalization.py, matmul; any
order of derivatives), 'numba' (one fused engine node, FlashAttention-2 tiles; first-order
gradients; create_graph raises GraphError), or 'auto': 'numba' for NumPy inputs when numba can run and
N M reaches the numba backend's one crossover rule for attention (fused.numba_plans.pays_from, the
rule IntegralTransform's planner applies), else 'dense'.

'auto' crossover of this entry point, measured (forward + backward, is_causal, B = 1, H = 4, d = 32,
numba warm, a shared 2-core CPU, so +-30% noise): fused / dense time at N = M = 32, 48, 64, 96, 128,
256 was 1.9, 1.8, 0.5, 0.6, 0.015, 0.03 in float64 and 1.6, 1.4, 0.96, 1.05, 0.3, 0.02 in float32,
within the noise of the operator's 48^2 crossover. Numba's first call compiles the kernels (cached on
disk: cache=True), which 'auto' does not count.
"""
import math

import numpy as np

from ..autograd import ops
from ..autograd.tensor import Tensor
from ..errors import ConfigError, DTypeError, ShapeError, describe
from .normalization import transform_matrix

BACKENDS = ("auto", "dense", "numba")


def scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False, scale=None, backend="auto"):
    """Attention of q (B, H, N, d) over k (B, H, M, d), v (B, H, M, dv) -> (B, H, N, dv).

    See the module docstring. Returns a Tensor when any argument is a Tensor, else an ndarray
    (the engine's convention: raw arrays in, raw array out).
    """
    qd, kd, vd = (_check(a, name) for a, name in ((q, "q"), (k, "k"), (v, "v")))
    B, H, N, d = qd.shape
    M = kd.shape[2]
    if kd.shape[:2] != (B, H) or kd.shape[3] != d or vd.shape[:3] != (B, H, M):
        raise ShapeError(f"scaled_dot_product_attention: expected q (B, H, N, d), k (B, H, M, d), "
                         f"v (B, H, M, dv); got q {qd.shape}, k {kd.shape}, v {vd.shape}")
    if not (qd.dtype == kd.dtype == vd.dtype):
        raise DTypeError(f"scaled_dot_product_attention: q, k, v must share one dtype, got "
                         f"{qd.dtype}, {kd.dtype}, {vd.dtype}")
    if backend not in BACKENDS:
        raise ConfigError(f"scaled_dot_product_attention: backend must be one of {BACKENDS}, got {backend!r}")
    if is_causal and attn_mask is not None:
        raise ConfigError("scaled_dot_product_attention: pass either attn_mask or is_causal=True, not both")
    scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    if not math.isfinite(scale):
        raise ConfigError(f"scaled_dot_product_attention: scale must be finite, got {scale!r}")
    keep, bias = _split_mask(attn_mask, (B, H, N, M), qd.dtype)
    if backend == "auto":
        backend = "numba" if _numpy(q, k, v, bias) and _numba_pays(N * M, qd.dtype.itemsize) else "dense"
    if backend == "numba":
        _require_numba()
        return _fused(q, k, v, keep, bias, bool(is_causal), scale)
    return _dense(q, k, v, keep, bias, bool(is_causal), scale)


def _dense(q, k, v, keep, bias, causal, scale):
    """The reference: scores, additive bias, the stable masked softmax (empty rows -> 0), then A v."""
    s = ops.matmul(q, ops.swapaxes(k, -1, -2)) * scale
    if bias is not None:
        s = s + bias
    n, m = s.shape[-2:]
    if causal:
        tril = np.tri(n, m, dtype=bool)[None, None]
        keep = tril if keep is None else keep & tril
    return ops.matmul(transform_matrix(s, None, keep, "softmax"), v)


def _fused(q, k, v, keep, bias, causal, scale):
    from .fused.engine_ops import fused_attention
    from .fused.numba_plans import band_of
    window = None
    n, m = _data(q).shape[2], _data(k).shape[2]
    if keep is not None and keep.shape[-2:] == (n, m):
        banded, window, keep = band_of(keep)           # tile skipping for causal / banded masks
        causal = causal or banded
    return fused_attention(q, k, v, scale=scale, bias=bias, causal=causal, window=window, mask=keep,
                           normalization="softmax")


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
    if data.dtype not in (np.float32, np.float64):
        raise DTypeError(f"scaled_dot_product_attention: {name} must be float32 or float64, got {describe(data)}")
    return data


def _data(a):
    return a.data if isinstance(a, Tensor) else a


def _numpy(*arrays):
    return all(a is None or type(_data(a)) is np.ndarray for a in arrays)


def _numba_pays(pairs, itemsize):
    from . import planner
    if "numba" not in planner.available_backends():
        return False
    from .fused.numba_plans import pays_from
    return pays_from("dot", pairs, itemsize)[0]


def _require_numba():
    from . import planner
    planner.check_backend("numba")
