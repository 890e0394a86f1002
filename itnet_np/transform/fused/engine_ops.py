"""The fused kernels as engine primitives: one graph node per call, the raw tiled backward as its VJP.

    fused_attention(q, k, v, bias, slopes; scale, causal, window, mask, normalization)
        = attention_forward(...)[0]                                   (B, H, N, dv)
    fused_mlp(a, b, x, y, W, W2, b2, v, w; act, causal, window, mask, normalization)
        = mlp_forward(...)[0]                                         (B, H, N, dv)
    neighbour_attention(q, k, v; scale, lists, normalization), neighbour_mlp(a, ..., w; act, lists,
    normalization): the same over CSR neighbour lists (pair_lists.PairLists; the transposed lists
    are built once per backward)

(formulas in attention_numba.py and mlp_numba.py). Every array argument may be a Tensor; the node
records them all, so the engine routes gradients to whatever produced q, k, v (a kernel's
projections), a, b, x, y, W, W2, b2, v, w or the additive bias and the ALiBi slopes.

Residuals: the forward keeps ``out`` (save_output) and returns the per-row statistic ``stats``
(B, H, N) -- the log-sum-exp for softmax, the row sum Z for 'sum' -- as its residuals
(saves_residuals): the node holds them beside ``out`` and frees them with itself. Nothing of size
N x M is kept: the backward recomputes the score tiles (FlashAttention-2).

One backward for all inputs (``defvjp_all``): the engine calls the raw tiled backward once per node
and backward, with the tuple of which inputs need a gradient, and routes each gradient it returns.

The VJPs run raw NumPy/Numba code, so the primitives are declared ``twice_differentiable=False``:
``backward(create_graph=True)`` through them raises GraphError (use backend='dense' for
higher-order gradients).
"""
from ...autograd.primitive import primitive
from .attention_numba import attention_backward, attention_forward
from .mlp_numba import mlp_backward, mlp_forward
from .neighbour_attention_numba import neighbour_attention_backward, neighbour_attention_forward
from .neighbour_mlp_numba import neighbour_mlp_backward, neighbour_mlp_forward

__all__ = ["ATTENTION_OP", "MLP_OP", "NEIGHBOUR_ATTENTION_OP", "NEIGHBOUR_MLP_OP", "fused_attention", "fused_mlp",
           "neighbour_attention", "neighbour_mlp"]

ATTENTION_OP = "fused_attention"
MLP_OP = "fused_mlp"
NEIGHBOUR_ATTENTION_OP = "neighbour_attention"
NEIGHBOUR_MLP_OP = "neighbour_mlp"


# ----------------------------------------------------------------------------------- attention

def _attention_forward(q, k, v, bias, slopes, *, scale, causal, window, mask, normalization, ranges):
    return attention_forward(q, k, v, scale, causal=causal, mask=mask, bias=bias, alibi_slopes=slopes,
                             window=window, normalization=normalization, ranges=ranges)  # (out, stats)


def _attention_vjp(g, out, needs, q, k, v, bias, slopes, *, scale, causal, window, mask, normalization,
                   ranges, residuals):
    return attention_backward(q, k, v, out, residuals, g, scale, causal=causal, mask=mask, bias=bias,
                              alibi_slopes=slopes, window=window, normalization=normalization,
                              bias_grad=needs[3], ranges=ranges)


_attention = primitive(_attention_forward, ATTENTION_OP, save_output=True, saves_residuals=True,
                       twice_differentiable=False).defvjp_all(_attention_vjp)


def fused_attention(q, k, v, *, scale, bias=None, alibi_slopes=None, causal=False, window=None, mask=None,
                    normalization="softmax", ranges=None):
    """One engine node computing the fused attention of q (B, H, N, d), k (B, H, M, d), v (B, H, M, dv).

    bias: float, broadcastable to (B, H, N, M) (its gradient needs one (B, H, M, N) buffer, only
    when it requires grad); alibi_slopes (H,) adds -slope_h |i - j|; mask: raw bool broadcastable to
    (B, H, N, M), True = attend; causal: j <= i; window: |i - j| <= window; ranges: per-row source
    ranges (lo (N,), hi (N,)), j in [lo_i, hi_i) (support.SupportPlan.row_ranges). Arrays or Tensors;
    returns a Tensor when any input is one (raw arrays in give a raw array out).
    """
    return _attention(q, k, v, bias, alibi_slopes, scale=scale, causal=bool(causal), window=window, mask=mask,
                      normalization=normalization, ranges=ranges)


# ----------------------------------------------------------------------------------------- MLP

def _mlp_forward(a, b, x, y, W, W2, b2, v, w, *, act, causal, window, mask, normalization, ranges):
    return mlp_forward(a, b, x, y, W, W2, b2, v, w, act=act, causal=causal, mask=mask, window=window,
                       normalization=normalization, ranges=ranges)  # (out, stats)


_MLP_NAMES = ("a", "b", "x", "y", "W", "W2", "b2", "v", "w")


def _mlp_vjp(g, out, needs, a, b, x, y, W, W2, b2, v, w, *, act, causal, window, mask, normalization, ranges,
             residuals):
    grads = mlp_backward(a, b, x, y, W, W2, b2, v, w, out, residuals, g, act=act, causal=causal, mask=mask,
                         window=window, normalization=normalization, ranges=ranges)
    return tuple(grads[name] for name in _MLP_NAMES)


_mlp = primitive(_mlp_forward, MLP_OP, save_output=True, saves_residuals=True,
                 twice_differentiable=False).defvjp_all(_mlp_vjp)


def fused_mlp(a, b, x, y, W, W2, b2, v, w, *, act, causal=False, window=None, mask=None,
              normalization="softmax", ranges=None):
    """One engine node computing the fused MLP-kernel transform (mlp_numba.py's formula).

    a (B, N, K), b (B, M, K), x (B, N, R), y (B, M, R), W (K, R), W2 (H, K), b2 (H,), v (B, H, M, dv),
    w (B, M) or (B, H, M) (w >= 0 for softmax); act a name in _tiles.ACTIVATIONS. Arrays or Tensors.
    """
    return _mlp(a, b, x, y, W, W2, b2, v, w, act=act, causal=bool(causal), window=window, mask=mask,
                normalization=normalization, ranges=ranges)


# ------------------------------------------------------------------------- over neighbour lists

def _neighbour_attention_forward(q, k, v, *, scale, lists, normalization):
    return neighbour_attention_forward(q, k, v, scale, lists, normalization)  # (out, stats)


def _neighbour_attention_vjp(g, out, needs, q, k, v, *, scale, lists, normalization, residuals):
    return neighbour_attention_backward(q, k, v, out, residuals, g, scale, lists, normalization)


_neighbour_attention = primitive(_neighbour_attention_forward, NEIGHBOUR_ATTENTION_OP, save_output=True,
                                 saves_residuals=True, twice_differentiable=False
                                 ).defvjp_all(_neighbour_attention_vjp)


def neighbour_attention(q, k, v, *, scale, lists, normalization="softmax"):
    """One engine node: attention of q (B, H, N, d) over k (B, H, M, d), v (B, H, M, dv) restricted
    to the listed pairs ``lists`` (pair_lists.PairLists, indptr (1|B, 1|H, N + 1))."""
    return _neighbour_attention(q, k, v, scale=scale, lists=lists, normalization=normalization)


def _neighbour_mlp_forward(a, b, x, y, W, W2, b2, v, w, *, act, lists, normalization):
    return neighbour_mlp_forward(a, b, x, y, W, W2, b2, v, w, lists, act=act, normalization=normalization)


def _neighbour_mlp_vjp(g, out, needs, a, b, x, y, W, W2, b2, v, w, *, act, lists, normalization, residuals):
    grads = neighbour_mlp_backward(a, b, x, y, W, W2, b2, v, w, out, residuals, g, lists, act=act,
                                   normalization=normalization)
    return tuple(grads[name] for name in _MLP_NAMES)


_neighbour_mlp = primitive(_neighbour_mlp_forward, NEIGHBOUR_MLP_OP, save_output=True, saves_residuals=True,
                           twice_differentiable=False).defvjp_all(_neighbour_mlp_vjp)


def neighbour_mlp(a, b, x, y, W, W2, b2, v, w, *, act, lists, normalization="softmax"):
    """One engine node: the fused MLP-kernel transform (shapes as fused_mlp) over the listed pairs
    ``lists`` (pair_lists.PairLists, indptr (1|B, 1, N + 1): one list for every head)."""
    return _neighbour_mlp(a, b, x, y, W, W2, b2, v, w, act=act, lists=lists, normalization=normalization)
