"""Banded (tap-indexed) stencil transform on raw arrays: convolution without the N x M score matrix.

With ``idx[b, i, a]`` the source index j hit by tap a of query i (p_j - q_i = o_a, and j kept by
the support), or -1 when there is none, table (H, T), weights w (Bw, Hw, M) with Bw, Hw in {1, B|H},
values v (B, H, M, d):

    y[b, h, i]   = sum_a table[h, a] w[b, h, j] v[b, h, j]             j = idx[b, i, a] >= 0

Backward for an upstream gradient g (B, H, N, d), with G = g[b, h, i] . v[b, h, j]:

    dv[b, h, j] += table[h, a] w[b, h, j] g[b, h, i]
    dw[b, h, j] += table[h, a] G,      dtable[h, a] += w[b, h, j] G

Cost O(B H N T d), memory O(B N T) for idx. idx may have batch 1 (shared by the batch). Works in
float32 and float64 (table, w, v, g share one dtype); every loop runs in that dtype.
"""
import numba as nb
import numpy as np

from ..._numba import announce
from ...errors import DTypeError, ShapeError
from ._arguments import unbroadcast

__all__ = ["stencil_backward", "stencil_forward"]

_JIT = {"nogil": True, "cache": True}


@nb.njit(**_JIT)
def _forward(idx, table, w, v, out):
    B, H, N, d = out.shape
    T = table.shape[1]
    wb, wh = w.shape[0] > 1, w.shape[1] > 1
    ib = idx.shape[0] > 1
    for b in range(B):
        bi = b if ib else 0
        bw = b if wb else 0
        for h in range(H):
            hw = h if wh else 0
            for i in range(N):
                for a in range(T):
                    j = idx[bi, i, a]
                    if j < 0:
                        continue
                    c = table[h, a] * w[bw, hw, j]
                    for k in range(d):
                        out[b, h, i, k] += c * v[b, h, j, k]


@nb.njit(**_JIT)
def _backward(idx, table, w, v, g, dtable, dw, dv, want_w):
    """dtable (B, H, T) and dw (B, H, M) per batch item (summed by the caller), dv (B, H, M, d)."""
    B, H, N, d = g.shape
    T = table.shape[1]
    wb, wh = w.shape[0] > 1, w.shape[1] > 1
    ib = idx.shape[0] > 1
    for b in range(B):
        bi = b if ib else 0
        bw = b if wb else 0
        for h in range(H):
            hw = h if wh else 0
            for i in range(N):
                for a in range(T):
                    j = idx[bi, i, a]
                    if j < 0:
                        continue
                    t = table[h, a]
                    wj = w[bw, hw, j]
                    c = t * wj
                    dot = g[b, h, i, 0] * 0
                    for k in range(d):
                        gk = g[b, h, i, k]
                        dot += gk * v[b, h, j, k]
                        dv[b, h, j, k] += c * gk
                    dtable[b, h, a] += wj * dot
                    if want_w:
                        dw[b, h, j] += t * dot


def _check(idx, table, w, v):
    dtype = v.dtype
    if dtype not in (np.float32, np.float64):
        raise DTypeError(f"stencil_forward: values must be float32 or float64, got {dtype}")
    for name, a in (("table", table), ("w", w)):
        if a.dtype != dtype:
            raise DTypeError(f"stencil_forward: {name} is {a.dtype} but values are {dtype}")
    B, H, M, _ = v.shape
    if table.ndim != 2 or table.shape[0] != H or idx.ndim != 3 or idx.shape[2] != table.shape[1] \
            or idx.shape[0] not in (1, B) or w.ndim != 3 or w.shape[0] not in (1, B) \
            or w.shape[1] not in (1, H) or w.shape[2] != M:
        raise ShapeError(f"stencil_forward: expected table ({H}, T), idx (1|{B}, N, T), w (1|{B}, "
                         f"1|{H}, {M}) for values {v.shape}; got table {table.shape}, idx {idx.shape}, "
                         f"w {w.shape}")


def stencil_forward(idx, table, w, v):
    """y (B, H, N, d) of the module formula; idx int64 (1|B, N, T), table (H, T), w (1|B, 1|H, M)."""
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    table, w, v = (np.ascontiguousarray(a) for a in (table, w, v))
    _check(idx, table, w, v)
    out = np.zeros(v.shape[:2] + (idx.shape[1], v.shape[3]), v.dtype)
    announce("stencil forward", _forward, (idx, table, w, v, out))
    _forward(idx, table, w, v, out)
    return out


def stencil_backward(idx, table, w, v, g, want_w=True):
    """(dtable (H, T), dw shaped like w or None, dv (B, H, M, d)) for upstream g (B, H, N, d)."""
    idx = np.ascontiguousarray(idx, dtype=np.int64)
    table, w, v, g = (np.ascontiguousarray(a) for a in (table, w, v, g))
    _check(idx, table, w, v)
    B, H, M, _ = v.shape
    dtable = np.zeros((B, H, table.shape[1]), v.dtype)
    dw = np.zeros((B, H, M) if want_w else (1, 1, 1), v.dtype)
    dv = np.zeros_like(v)
    announce("stencil backward", _backward, (idx, table, w, v, g, dtable, dw, dv, bool(want_w)))
    _backward(idx, table, w, v, g, dtable, dw, dv, bool(want_w))
    return dtable.sum(axis=0), (unbroadcast(dw, w.shape) if want_w else None), dv
