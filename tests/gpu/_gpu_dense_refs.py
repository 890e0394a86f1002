"""Dense float64 references for the GPU kernels, written from the formulas with the engine's ops
(itn.exp, matmul, einsum, where...), so that the engine's backward gives every gradient. Nothing here
calls a fused kernel. Small sizes only: they form the (B, H, N, M) and (B, N, M, K) arrays."""
import numpy as np

import itnet_np as itn
from itnet_np.nn import functional as F


def band_mask(n, m, causal=False, window=None, ranges=None):
    """(N, M) bool: j <= i if causal, |i - j| <= window, lo_i <= j < hi_i (from ranges)."""
    i, j = np.arange(n)[:, None], np.arange(m)[None, :]
    keep = np.ones((n, m), bool)
    if causal:
        keep &= j <= i
    if window is not None:
        keep &= np.abs(i - j) <= window
    if ranges is not None:
        keep &= (j >= np.asarray(ranges[0])[:, None]) & (j < np.asarray(ranges[1])[:, None])
    return keep


def _normalise(x, keep, normalization):
    """A (B, H, N, M) from logits x (Tensor) and the kept pairs (bool array), as the kernels define
    it: softmax over kept pairs (empty row -> 0), x / Z ('sum', Z = 0 -> 0) or x ('none')."""
    if normalization == "softmax":
        shift = np.where(keep, x.data, -np.inf).max(-1, keepdims=True)
        shift = np.where(np.isfinite(shift), shift, 0)
        e = itn.where(keep, itn.exp(x - shift), 0.0)
        z = e.sum(axis=-1, keepdims=True)
        zsafe = itn.where(z.data != 0, z, 1.0)
        return e / zsafe
    a = itn.where(keep, x, 0.0)
    if normalization == "none":
        return a
    z = a.sum(axis=-1, keepdims=True)
    return itn.where(z.data != 0, a / itn.where(z.data != 0, z, 1.0), 0.0)


def attention(q, k, v, scale, causal=False, mask=None, bias=None, slopes=None, window=None,
              normalization="softmax", ranges=None):
    """Tensors q (B, H, N, d), k (B, H, M, d), v (B, H, M, dv), bias, slopes (H,) -> out Tensor."""
    n, m = q.shape[2], k.shape[2]
    x = itn.matmul(q, itn.swapaxes(k, -1, -2)) * scale
    if bias is not None:
        x = x + bias
    if slopes is not None:
        dist = np.abs(np.arange(n)[:, None] - np.arange(m)[None, :]).astype(v.dtype)
        x = x - itn.reshape(slopes, (1, -1, 1, 1)) * dist
    keep = np.broadcast_to(band_mask(n, m, causal, window, ranges), x.shape)
    if mask is not None:
        keep = keep & np.broadcast_to(mask, x.shape)
    if bias is not None:
        keep = keep & (x.data != -np.inf)
    return itn.matmul(_normalise(x, keep, normalization), v)


def _act(z, name):
    return {"relu": F.relu, "silu": F.silu, "tanh": itn.tanh,
            "gelu_tanh": lambda t: F.gelu(t, approximate="tanh")}[name](z)


def mlp(a, b, x, y, W, W2, b2, v, w, act, causal=False, mask=None, window=None, normalization="softmax",
        ranges=None):
    """The MLP-kernel transform (gpu/mlp_forward.py's formula) on Tensors -> out (B, H, N, dv)."""
    n, m, H = a.shape[1], b.shape[1], W2.shape[0]
    pre = (itn.reshape(a, (a.shape[0], n, 1, -1)) + itn.reshape(b, (b.shape[0], 1, m, -1))
           + itn.einsum("bnr,bmr,kr->bnmk", x, y, W))
    s = itn.einsum("bnmk,hk->bhnm", _act(pre, act), W2) + itn.reshape(b2, (1, H, 1, 1))
    w4 = itn.reshape(w, (w.shape[0], 1, 1, m)) if w.ndim == 2 else itn.reshape(w, (w.shape[0], H, 1, m))
    keep = np.broadcast_to(band_mask(n, m, causal, window, ranges), s.shape)
    if mask is not None:
        keep = keep & np.broadcast_to(mask, s.shape)
    if normalization == "softmax":          # w e^s / sum w e^s, shift-invariant
        shift = np.where(keep, s.data, -np.inf).max(-1, keepdims=True)
        shift = np.where(np.isfinite(shift), shift, 0)
        e = itn.where(keep, w4 * itn.exp(s - shift), 0.0)
        z = e.sum(axis=-1, keepdims=True)
        A = e / itn.where(z.data != 0, z, 1.0)
    else:
        A = _normalise(w4 * s, keep, normalization)
    return itn.matmul(A, v)


def value_and_grads(fn, arrays, cotangent, **kw):
    """(out array, {name: gradient array}) of sum(fn(**tensors) * cotangent) in float64."""
    tensors = {n: itn.tensor(a, requires_grad=True) for n, a in arrays.items()}
    out = fn(**tensors, **kw)
    (out * cotangent).sum().backward()
    return out.data, {n: (t.grad.data if t.grad is not None else np.zeros_like(arrays[n]))
                      for n, t in tensors.items()}
