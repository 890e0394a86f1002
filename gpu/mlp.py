"""The GPU MLP-kernel transform behind one pair of calls with the CPU kernels' signatures.

``mlp_forward(a, b, x, y, W, W2, b2, v, w, act, ...) -> (out, stats)`` and ``mlp_backward(...) ->
{a, b, x, y, W, W2, b2, v, w: gradient}`` take the arguments of
``itnet_np.transform.fused.mlp_numba``'s functions (formulas there and in mlp_forward.py /
mlp_backward.py) and return the same arrays. Arrays: CuPy on a GPU, NumPy under the simulator.
"""
from types import SimpleNamespace

from itnet_np.transform.fused._arguments import (
    broadcast4,
    check_mlp_arguments,
    check_saved,
    ranges_of,
    window_of,
)

from . import mlp_backward as _bwd
from . import mlp_forward as _fwd
from ._cuda import xp_of_args

__all__ = ["mlp_backward", "mlp_forward"]


def _prepare(op, a, b, x, y, W, W2, b2, v, w, act, causal, mask, window, normalization, ranges):
    xp = xp_of_args(op, (a, b, x, y, W, W2, b2, v, w))
    (a, b, x, y, W, W2, b2, v, w), code, mode = check_mlp_arguments(op, a, b, x, y, W, W2, b2, v, w, act,
                                                                     normalization, xp)
    B, N, _ = a.shape
    M, H = b.shape[1], W2.shape[0]
    use_mask = mask is not None
    mask4 = broadcast4(op, "mask", mask, (B, H, N, M), bool, xp) if use_mask else xp.ones((1, 1, 1, 1), bool)
    rlo, rhi, use_ranges = ranges_of(op, ranges, N, M, xp)
    arrays = (a, b, x, y, W, W2, b2, v, w.reshape(B, 1 if w.ndim == 2 else H, M))
    return SimpleNamespace(arrays=arrays, code=code, mask=mask4, use_mask=use_mask, causal=bool(causal),
                           window=window_of(op, window), rlo=rlo, rhi=rhi, use_ranges=use_ranges, mode=mode,
                           w_shape=w.shape), xp


def mlp_forward(a, b, x, y, W, W2, b2, v, w, act="gelu_tanh", causal=False, mask=None, window=None,
                normalization="softmax", ranges=None):
    """Fused MLP-kernel transform forward on the GPU: (out (B, H, N, dv), stats (B, H, N))."""
    args, xp = _prepare("gpu mlp_forward", a, b, x, y, W, W2, b2, v, w, act, causal, mask, window,
                        normalization, ranges)
    return _fwd.launch(args, xp)


def mlp_backward(a, b, x, y, W, W2, b2, v, w, out, stats, dout, act="gelu_tanh", causal=False, mask=None,
                 window=None, normalization="softmax", ranges=None):
    """Gradients of mlp_forward: a dict with keys a, b, x, y, W, W2, b2, v, w (each its input's shape)."""
    op = "gpu mlp_backward"
    args, xp = _prepare(op, a, b, x, y, W, W2, b2, v, w, act, causal, mask, window, normalization, ranges)
    a_, v_ = args.arrays[0], args.arrays[7]
    B, N, _ = a_.shape
    H, dvd = v_.shape[1], v_.shape[3]
    out, stats, dout = check_saved(op, out, stats, dout, (B, H, N, dvd), a_.dtype, xp)
    grads = _bwd.launch(args, out, stats, dout, xp)
    grads["w"] = grads["w"].reshape(args.w_shape)
    return grads

