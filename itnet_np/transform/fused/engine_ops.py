"""The fused kernels as engine primitives: one graph node per call, the raw tiled backward as its VJP.

    fused_attention(q, k, v, bias, slopes; scale, causal, window, mask, normalization)
        = attention_forward(...)[0]                                   (B, H, N, dv)
    fused_mlp(a, b, x, y, W, W2, b2, v, w; act, causal, window, mask, normalization)
        = mlp_forward(...)[0]                                         (B, H, N, dv)

(formulas in attention_numba.py and mlp_numba.py). Every array argument may be a Tensor; the node
records them all, so the engine routes gradients to whatever produced q, k, v (a kernel's
projections), a, b, x, y, W, W2, b2, v, w or the additive bias and the ALiBi slopes.

Residuals: the forward keeps ``out`` (save_output) and the per-row statistic ``stats`` (B, H, N) --
the log-sum-exp for softmax, the row sum Z for 'sum' -- in a small per-call ``Saved`` record that
travels with the node as a keyword parameter (the engine keeps a node's params until it frees the
node). Nothing of size N x M is kept: the backward recomputes the score tiles (FlashAttention-2).

One backward for all inputs: the engine asks a node for one VJP per input that needs a gradient,
but the raw backward produces them together. The first VJP call runs it and keeps the results in
the record; later calls with the *same* upstream gradient ``g`` take theirs; once every input that
needs one has been served, the results are dropped (a later backward with retain_graph recomputes).

The VJPs run raw NumPy/Numba code, so the primitives are declared ``twice_differentiable=False``:
``backward(create_graph=True)`` through them raises GraphError (use backend='dense' for
higher-order gradients).
"""
from ...autograd.primitive import primitive
from ...autograd.tensor import Tensor
from .attention_numba import attention_backward, attention_forward
from .mlp_numba import mlp_backward, mlp_forward

__all__ = ["ATTENTION_OP", "MLP_OP", "fused_attention", "fused_mlp"]

ATTENTION_OP = "fused_attention"
MLP_OP = "fused_mlp"


class Saved:
    """Residuals of one fused call: stats, which inputs need a gradient, and the shared backward."""

    __slots__ = ("g", "grads", "needs", "served", "stats")

    def __init__(self, args):
        self.stats = None
        self.needs = frozenset(i for i, a in enumerate(args) if isinstance(a, Tensor) and a.requires_grad)
        self.served = set()
        self.g = self.grads = None

    def grad(self, argnum, g, backward):
        """The gradient for input ``argnum``, running ``backward()`` once per upstream gradient."""
        if self.grads is None or self.g is not g:
            self.g, self.grads, self.served = g, backward(), set()
        result = self.grads[argnum]
        self.served.add(argnum)
        if self.served >= self.needs:
            self.g = self.grads = None
        return result


# ----------------------------------------------------------------------------------- attention

def _attention_forward(q, k, v, bias, slopes, *, scale, causal, window, mask, normalization, ranges, saved):
    out, saved.stats = attention_forward(q, k, v, scale, causal=causal, mask=mask, bias=bias,
                                         alibi_slopes=slopes, window=window, normalization=normalization,
                                         ranges=ranges)
    return out


def _attention_vjp(argnum, g, out, q, k, v, bias, slopes, *, scale, causal, window, mask, normalization,
                   ranges, saved):
    def backward():
        return attention_backward(q, k, v, out, saved.stats, g, scale, causal=causal, mask=mask, bias=bias,
                                  alibi_slopes=slopes, window=window, normalization=normalization,
                                  bias_grad=3 in saved.needs, ranges=ranges)
    return saved.grad(argnum, g, backward)


_attention = primitive(_attention_forward, ATTENTION_OP, save_output=True,
                       twice_differentiable=False).defvjp_argnum(_attention_vjp)


def fused_attention(q, k, v, *, scale, bias=None, alibi_slopes=None, causal=False, window=None, mask=None,
                    normalization="softmax", ranges=None):
    """One engine node computing the fused attention of q (B, H, N, d), k (B, H, M, d), v (B, H, M, dv).

    bias: float, broadcastable to (B, H, N, M) (its gradient needs one (B, H, M, N) buffer, only
    when it requires grad); alibi_slopes (H,) adds -slope_h |i - j|; mask: raw bool broadcastable to
    (B, H, N, M), True = attend; causal: j <= i; window: |i - j| <= window; ranges: per-row source
    ranges (lo (N,), hi (N,)), j in [lo_i, hi_i) (support.SupportPlan.row_ranges). Arrays or Tensors;
    returns a Tensor when any input is one (raw arrays in give a raw array out).
    """
    args = (q, k, v, bias, alibi_slopes)
    return _attention(*args, scale=scale, causal=bool(causal), window=window, mask=mask,
                      normalization=normalization, ranges=ranges, saved=Saved(args))


# ----------------------------------------------------------------------------------------- MLP

def _mlp_forward(a, b, x, y, W, W2, b2, v, w, *, act, causal, window, mask, normalization, ranges, saved):
    out, saved.stats = mlp_forward(a, b, x, y, W, W2, b2, v, w, act=act, causal=causal, mask=mask,
                                   window=window, normalization=normalization, ranges=ranges)
    return out


_MLP_NAMES = ("a", "b", "x", "y", "W", "W2", "b2", "v", "w")


def _mlp_vjp(argnum, g, out, a, b, x, y, W, W2, b2, v, w, *, act, causal, window, mask, normalization,
             ranges, saved):
    def backward():
        grads = mlp_backward(a, b, x, y, W, W2, b2, v, w, out, saved.stats, g, act=act, causal=causal,
                             mask=mask, window=window, normalization=normalization, ranges=ranges)
        return [grads[name] for name in _MLP_NAMES]
    return saved.grad(argnum, g, backward)


_mlp = primitive(_mlp_forward, MLP_OP, save_output=True, twice_differentiable=False).defvjp_argnum(_mlp_vjp)


def fused_mlp(a, b, x, y, W, W2, b2, v, w, *, act, causal=False, window=None, mask=None,
              normalization="softmax", ranges=None):
    """One engine node computing the fused MLP-kernel transform (mlp_numba.py's formula).

    a (B, N, K), b (B, M, K), x (B, N, R), y (B, M, R), W (K, R), W2 (H, K), b2 (H,), v (B, H, M, dv),
    w (B, M) or (B, H, M) (w >= 0 for softmax); act a name in _tiles.ACTIVATIONS. Arrays or Tensors.
    """
    args = (a, b, x, y, W, W2, b2, v, w)
    return _mlp(*args, act=act, causal=bool(causal), window=window, mask=mask, normalization=normalization,
                ranges=ranges, saved=Saved(args))
