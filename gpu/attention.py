"""The GPU attention kernels behind one pair of calls with the CPU kernels' signatures.

``attention_forward(q, k, v, scale, ...) -> (out, stats)`` and ``attention_backward(...) -> (dq, dk,
dv, dbias, dslopes)`` take the arguments of ``itnet_np.transform.fused.attention_numba``'s functions
(formulas there and in attention_forward.py / attention_backward.py) and return the same arrays;
they check the arguments, then launch the kernels. Arrays: CuPy on a GPU, NumPy under the simulator.
"""
from types import SimpleNamespace

from itnet_np.transform.fused._arguments import (
    attention_support,
    check_attention_arguments,
    check_saved,
    ranges_of,
    unbroadcast,
    window_of,
)

from . import attention_backward as _bwd
from . import attention_forward as _fwd
from ._cuda import xp_of_args

__all__ = ["attention_backward", "attention_forward"]


def _prepare(op, q, k, v, scale, causal, mask, bias, alibi_slopes, window, normalization, ranges):
    xp = xp_of_args(op, (q, k, v, bias, alibi_slopes))
    q, k, v, scale, mode = check_attention_arguments(op, q, k, v, scale, normalization, xp)
    B, H, N, _ = q.shape
    M = k.shape[2]
    mask4, use_mask, bias4, use_bias, slopes, use_alibi = attention_support(op, mask, bias, alibi_slopes,
                                                                            (B, H, N, M), q.dtype, xp)
    rlo, rhi, use_ranges = ranges_of(op, ranges, N, M, xp)
    args = SimpleNamespace(scale=scale, mask=mask4, use_mask=use_mask, bias=bias4, use_bias=use_bias,
                           slopes=slopes, use_alibi=use_alibi, causal=bool(causal), window=window_of(op, window),
                           rlo=rlo, rhi=rhi, use_ranges=use_ranges, mode=mode)
    return args, (q, k, v), xp


def attention_forward(q, k, v, scale, causal=False, mask=None, bias=None, alibi_slopes=None, window=None,
                      normalization="softmax", ranges=None):
    """Fused attention forward on the GPU: (out (B, H, N, dv), stats (B, H, N)) (attention_forward.py)."""
    args, (q, k, v), xp = _prepare("gpu attention_forward", q, k, v, scale, causal, mask, bias,
                                   alibi_slopes, window, normalization, ranges)
    return _fwd.launch(args, q, k, v, xp)


def attention_backward(q, k, v, out, stats, dout, scale, causal=False, mask=None, bias=None,
                       alibi_slopes=None, window=None, normalization="softmax", bias_grad=True, ranges=None):
    """Gradients of attention_forward: (dq, dk, dv, dbias (bias's shape, or None), dslopes (H,) or None)."""
    op = "gpu attention_backward"
    args, (q, k, v), xp = _prepare(op, q, k, v, scale, causal, mask, bias, alibi_slopes, window,
                                   normalization, ranges)
    B, H, N, _ = q.shape
    dvd = v.shape[3]
    out, stats, dout = check_saved(op, out, stats, dout, (B, H, N, dvd), q.dtype, xp)
    want_dbias = bias is not None and bias_grad
    dq, dk, dv, dbias, dslope_rows = _bwd.launch(args, q, k, v, out, stats, dout, want_dbias, xp)
    dbias = unbroadcast(dbias, bias.shape, xp) if want_dbias else None
    dslopes = dslope_rows.sum((0, 2)) if alibi_slopes is not None else None
    return dq, dk, dv, dbias, dslopes
