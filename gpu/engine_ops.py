"""The GPU kernels as engine primitives: one graph node per call, the kernels' backward as its VJP.

    cuda_attention(q, k, v, bias, slopes; scale, causal, window, mask, normalization, ranges)
        = gpu.attention.attention_forward(...)[0]                         (B, H, N, dv)
    cuda_mlp(a, b, x, y, W, W2, b2, v, w; act, causal, window, mask, normalization, ranges)
        = gpu.mlp.mlp_forward(...)[0]                                     (B, H, N, dv)
    cuda_selective_scan(loga, B, C, v; strict) = gpu.selective_scan.selective_forward(...)  (B, H, N, d)
    cuda_decay_scan(v, log_rate, coef, log_mod, angle, coef_re, coef_im; strict)
        = gpu.decay_scan.decay_forward(...)                               (B, H, N, d)
    cuda_stencil(table, w, v, idx) = gpu.stencil.stencil_forward(idx, table, w, v)   (B, H, N, d)

The same declaration as the CPU ops (itnet_np.transform.fused.engine_ops): the forward saves its
output and returns the row statistic (B, H, N) as residuals (nothing N x M is kept); one VJP for all
inputs (the scans and the stencil save nothing: their backward recomputes from the inputs); not twice
differentiable (backward(create_graph=True) raises GraphError: use 'dense').
"""
from itnet_np.autograd.primitive import primitive

from .attention import attention_backward, attention_forward
from .decay_scan import decay_backward, decay_forward
from .mlp import mlp_backward, mlp_forward
from .selective_scan import selective_backward, selective_forward
from .stencil import stencil_backward, stencil_forward

__all__ = ["cuda_attention", "cuda_decay_scan", "cuda_mlp", "cuda_selective_scan", "cuda_stencil"]

_MLP_NAMES = ("a", "b", "x", "y", "W", "W2", "b2", "v", "w")


def _attention_forward(q, k, v, bias, slopes, *, scale, causal, window, mask, normalization, ranges):
    return attention_forward(q, k, v, scale, causal=causal, mask=mask, bias=bias, alibi_slopes=slopes,
                             window=window, normalization=normalization, ranges=ranges)


def _attention_vjp(g, out, needs, q, k, v, bias, slopes, *, scale, causal, window, mask, normalization,
                   ranges, residuals):
    return attention_backward(q, k, v, out, residuals, g, scale, causal=causal, mask=mask, bias=bias,
                              alibi_slopes=slopes, window=window, normalization=normalization,
                              bias_grad=needs[3], ranges=ranges)


def _mlp_forward(a, b, x, y, W, W2, b2, v, w, *, act, causal, window, mask, normalization, ranges):
    return mlp_forward(a, b, x, y, W, W2, b2, v, w, act=act, causal=causal, mask=mask, window=window,
                       normalization=normalization, ranges=ranges)


def _mlp_vjp(g, out, needs, a, b, x, y, W, W2, b2, v, w, *, act, causal, window, mask, normalization, ranges,
             residuals):
    grads = mlp_backward(a, b, x, y, W, W2, b2, v, w, out, residuals, g, act=act, causal=causal, mask=mask,
                         window=window, normalization=normalization, ranges=ranges)
    return tuple(grads[name] for name in _MLP_NAMES)


_attention = primitive(_attention_forward, "cuda_attention", save_output=True, saves_residuals=True,
                       twice_differentiable=False).defvjp_all(_attention_vjp)
_mlp = primitive(_mlp_forward, "cuda_mlp", save_output=True, saves_residuals=True,
                 twice_differentiable=False).defvjp_all(_mlp_vjp)


def cuda_attention(q, k, v, *, scale, bias=None, alibi_slopes=None, causal=False, window=None, mask=None,
                   normalization="softmax", ranges=None):
    """One engine node: the GPU fused attention (arguments as fused.engine_ops.fused_attention)."""
    return _attention(q, k, v, bias, alibi_slopes, scale=scale, causal=bool(causal), window=window, mask=mask,
                      normalization=normalization, ranges=ranges)


def cuda_mlp(a, b, x, y, W, W2, b2, v, w, *, act, causal=False, window=None, mask=None, normalization="softmax",
             ranges=None):
    """One engine node: the GPU fused MLP-kernel transform (arguments as fused.engine_ops.fused_mlp)."""
    return _mlp(a, b, x, y, W, W2, b2, v, w, act=act, causal=bool(causal), window=window, mask=mask,
                normalization=normalization, ranges=ranges)


def _selective_vjp(g, out, needs, loga, Bm, Cm, v, *, strict):
    return selective_backward(loga, Bm, Cm, v, g, strict)


_selective = primitive(lambda loga, Bm, Cm, v, *, strict: selective_forward(loga, Bm, Cm, v, strict),
                       "cuda_scan_selective", twice_differentiable=False).defvjp_all(_selective_vjp)


def cuda_selective_scan(loga, Bm, Cm, v, *, strict=False):
    """One engine node: the selective scan on the GPU (arguments as fused.scan_plan.selective_scan)."""
    return _selective(loga, Bm, Cm, v, strict=bool(strict))


def _decay_vjp(g, out, needs, v, log_rate, coef, log_mod, angle, coef_re, coef_im, *, strict):
    return decay_backward(v, log_rate, coef, log_mod, angle, coef_re, coef_im, g, strict)


_decay = primitive(lambda v, *params, strict: decay_forward(v, *params, strict), "cuda_scan_decay",
                   twice_differentiable=False).defvjp_all(_decay_vjp)


def cuda_decay_scan(v, log_rate, coef, log_mod, angle, coef_re, coef_im, *, strict=False):
    """One engine node: the decay scan on the GPU (arguments as fused.scan_plan.decay_scan)."""
    return _decay(v, log_rate, coef, log_mod, angle, coef_re, coef_im, strict=bool(strict))


def _stencil_vjp(g, out, needs, table, w, v, *, idx):
    return stencil_backward(idx, table, w, v, g, want_w=needs[1])


_stencil = primitive(lambda table, w, v, *, idx: stencil_forward(idx, table, w, v), "cuda_stencil",
                     twice_differentiable=False).defvjp_all(_stencil_vjp)


def cuda_stencil(table, w, v, idx):
    """One engine node: the banded stencil on the GPU (arguments as fused.stencil_plan.fused_stencil:
    table (H, T), w (1|B, 1|H, M), v (B, H, M, d), idx a raw int64 constant (1|B, N, T), -1 = none)."""
    return _stencil(table, w, v, idx=idx)
