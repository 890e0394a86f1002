"""The GPU MLP-kernel transform behind one pair of calls with the CPU kernels' signatures.

``mlp_forward(a, b, x, y, W, W2, b2, v, w, act, ...) -> (out, stats)`` and ``mlp_backward(...) ->
{a, b, x, y, W, W2, b2, v, w: gradient}`` take the arguments of
``itnet_np.transform.fused.mlp_numba``'s functions (formulas there and in mlp_forward.py /
mlp_backward.py) and return the same arrays. Arrays: CuPy on a GPU, NumPy under the simulator.
"""
from types import SimpleNamespace

import numpy as np

from itnet_np.errors import ConfigError, ShapeError
from itnet_np.transform.fused._tiles import ACTIVATIONS

from . import mlp_backward as _bwd
from . import mlp_forward as _fwd
from ._cuda import broadcast4, check_float, code_of, ranges_of, window_code, xp_of_args
from .attention_forward import NORMALIZATIONS

__all__ = ["mlp_backward", "mlp_forward"]


def _prepare(op, a, b, x, y, W, W2, b2, v, w, act, causal, mask, window, normalization, ranges):
    xp = xp_of_args(op, (a, b, x, y, W, W2, b2, v, w))
    a = check_float(op, "a", a, 3)
    dt = a.dtype
    b, x, y = (check_float(op, n, z, 3, dt) for n, z in (("b", b), ("x", x), ("y", y)))
    W, W2 = check_float(op, "W", W, 2, dt), check_float(op, "W2", W2, 2, dt)
    b2, v = check_float(op, "b2", b2, 1, dt), check_float(op, "v", v, 4, dt)
    B, N, K = a.shape
    M, R, H = b.shape[1], x.shape[2], W2.shape[0]
    want = {"b": (B, M, K), "x": (B, N, R), "y": (B, M, R), "W": (K, R), "W2": (H, K), "b2": (H,)}
    for name, z in (("b", b), ("x", x), ("y", y), ("W", W), ("W2", W2), ("b2", b2)):
        if z.shape != want[name]:
            raise ShapeError(f"{op}: {name} must have shape {want[name]} (from a {a.shape}, b {b.shape}, "
                             f"x {x.shape}, W2 {W2.shape}), got {z.shape}")
    if v.shape[:3] != (B, H, M):
        raise ShapeError(f"{op}: v must have shape ({B}, {H}, {M}, dv), got {v.shape}")
    w = check_float(op, "w", w, w.ndim, dt)
    if w.shape not in ((B, M), (B, H, M)):
        raise ShapeError(f"{op}: w must have shape ({B}, {M}) or ({B}, {H}, {M}), got {w.shape}")
    mode = code_of(op, "normalization", normalization, NORMALIZATIONS)
    if mode == 0 and xp is np and bool((w < 0).any()):     # on a GPU the check would sync the device
        raise ConfigError(f"{op}: normalization='softmax' needs quadrature weights w >= 0")
    use_mask = mask is not None
    mask4 = broadcast4(op, "mask", mask, (B, H, N, M), bool, xp) if use_mask else xp.ones((1, 1, 1, 1), bool)
    rlo, rhi, use_ranges = ranges_of(op, ranges, N, M, xp)
    arrays = tuple(xp.ascontiguousarray(z) for z in
                   (a, b, x, y, W, W2, b2, v, w.reshape(B, 1 if w.ndim == 2 else H, M)))
    return SimpleNamespace(arrays=arrays, code=code_of(op, "act", act, ACTIVATIONS), mask=mask4,
                           use_mask=use_mask, causal=bool(causal), window=window_code(op, window), rlo=rlo,
                           rhi=rhi, use_ranges=use_ranges, mode=mode, w_shape=w.shape), xp


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
    for name, z, shape, nd in (("out", out, (B, H, N, dvd), 4), ("dout", dout, (B, H, N, dvd), 4),
                               ("stats", stats, (B, H, N), 3)):
        check_float(op, name, z, nd, a_.dtype)
        if z.shape != shape:
            raise ShapeError(f"{op}: {name} must have shape {shape}, got {z.shape}")
    grads = _bwd.launch(args, xp.ascontiguousarray(out), xp.ascontiguousarray(stats),
                        xp.ascontiguousarray(dout), xp)
    grads["w"] = grads["w"].reshape(args.w_shape)
    return grads

