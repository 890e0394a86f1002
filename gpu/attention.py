"""The GPU attention kernels behind one pair of calls with the CPU kernels' signatures.

``attention_forward(q, k, v, scale, ...) -> (out, stats)`` and ``attention_backward(...) -> (dq, dk,
dv, dbias, dslopes)`` take the arguments of ``itnet_np.transform.fused.attention_numba``'s functions
(formulas there and in attention_forward.py / attention_backward.py) and return the same arrays;
they check the arguments, then launch the kernels. Arrays: CuPy on a GPU, NumPy under the simulator.
"""
from types import SimpleNamespace

import numpy as np

from itnet_np.errors import ConfigError, ShapeError

from . import attention_backward as _bwd
from . import attention_forward as _fwd
from ._cuda import broadcast4, check_float, code_of, ranges_of, unbroadcast, window_code, xp_of_args

__all__ = ["attention_backward", "attention_forward"]


def _prepare(op, q, k, v, scale, causal, mask, bias, alibi_slopes, window, normalization, ranges):
    xp = xp_of_args(op, (q, k, v, bias, alibi_slopes))
    q = check_float(op, "q", q, 4)
    dt = q.dtype
    k, v = check_float(op, "k", k, 4, dt), check_float(op, "v", v, 4, dt)
    B, H, N, d = q.shape
    M = k.shape[2]
    if k.shape[:2] != (B, H) or k.shape[3] != d:
        raise ShapeError(f"{op}: k must have shape ({B}, {H}, M, {d}) to match q {q.shape}, got {k.shape}")
    if v.shape[:3] != (B, H, M):
        raise ShapeError(f"{op}: v must have shape ({B}, {H}, {M}, dv) to match k {k.shape}, got {v.shape}")
    if not np.isscalar(scale) or not np.isfinite(scale):
        raise ConfigError(f"{op}: scale must be a finite real number, got {scale!r}")
    full = (B, H, N, M)
    use_mask, use_bias, use_alibi = mask is not None, bias is not None, alibi_slopes is not None
    mask4 = broadcast4(op, "mask", mask, full, bool, xp) if use_mask else xp.ones((1, 1, 1, 1), bool)
    bias4 = broadcast4(op, "bias", bias, full, dt, xp) if use_bias else xp.zeros((1, 1, 1, 1), dt)
    if use_alibi:
        slopes = check_float(op, "alibi_slopes", alibi_slopes, 1, dt)
        if slopes.shape != (H,):
            raise ShapeError(f"{op}: alibi_slopes must have shape ({H},), got {slopes.shape}")
    else:
        slopes = xp.zeros(H, dt)
    rlo, rhi, use_ranges = ranges_of(op, ranges, N, M, xp)
    args = SimpleNamespace(scale=dt.type(scale), mask=mask4, use_mask=use_mask, bias=bias4, use_bias=use_bias,
                           slopes=xp.ascontiguousarray(slopes), use_alibi=use_alibi, causal=bool(causal),
                           window=window_code(op, window), rlo=rlo, rhi=rhi, use_ranges=use_ranges,
                           mode=code_of(op, "normalization", normalization, _fwd.NORMALIZATIONS))
    return args, tuple(xp.ascontiguousarray(z) for z in (q, k, v)), xp


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
    for name, x, shape, nd in (("out", out, (B, H, N, dvd), 4), ("dout", dout, (B, H, N, dvd), 4),
                               ("stats", stats, (B, H, N), 3)):
        check_float(op, name, x, nd, q.dtype)
        if x.shape != shape:
            raise ShapeError(f"{op}: {name} must have shape {shape}, got {x.shape}")
    want_dbias = bias is not None and bias_grad
    dq, dk, dv, dbias, dslope_rows = _bwd.launch(args, q, k, v, xp.ascontiguousarray(out),
                                                 xp.ascontiguousarray(stats), xp.ascontiguousarray(dout),
                                                 want_dbias, xp)
    dbias = unbroadcast(dbias, bias.shape) if want_dbias else None
    dslopes = dslope_rows.sum((0, 2)) if alibi_slopes is not None else None
    return dq, dk, dv, dbias, dslopes
