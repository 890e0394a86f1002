"""Host-side argument checks shared by the fused kernels: the Numba CPU kernels of this package and
the numba-CUDA kernels of ``itnet_np.gpu`` (same arguments, same errors, one home).

Every helper takes the array module ``xp`` the arrays must belong to: numpy (the CPU kernels, and
the GPU kernels under numba's simulator) or cupy (the GPU kernels on a device). Arrays come back
C-contiguous in that module. A check that would read array values (w >= 0 for 'softmax', the range
bounds) runs only on host arrays: on a GPU it would synchronise the device.

The codes the kernels read (ACTIVATIONS, NORMALIZATIONS) live in _tiles.py.
"""
import numpy as np

from ...errors import ConfigError, DTypeError, ShapeError, describe
from ._tiles import ACTIVATIONS, NORMALIZATIONS

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _is_array(x, xp):
    return isinstance(x, xp.ndarray)


def check_float(op, name, x, ndim, dtype=None, xp=np):
    """x: a float32/float64 ``xp`` array with ``ndim`` dims (and ``dtype``, when given), returned
    C-contiguous."""
    if not _is_array(x, xp):
        raise DTypeError(f"{op}: {name} must be a {xp.__name__} array, got {type(x).__name__}")
    if x.dtype not in FLOATS:
        raise DTypeError(f"{op}: {name} must be float32 or float64, got {describe(x)}")
    if dtype is not None and x.dtype != dtype:
        raise DTypeError(f"{op}: {name} is {describe(x)} but the inputs are {dtype}; "
                         "all arrays must share one dtype")
    if x.ndim != ndim:
        raise ShapeError(f"{op}: {name} must have {ndim} dims, got {describe(x)}")
    return xp.ascontiguousarray(x)


def broadcast4(op, name, x, full, dtype, xp=np):
    """x (bool, or float ``dtype``) broadcastable to ``full`` (4 dims), as a C-contiguous 4-d array
    whose dims are 1 or full: the kernels read a size-1 dim at index 0, so the (B, H, N, M)
    broadcast is never materialised."""
    if dtype is bool:
        if not _is_array(x, xp) or x.dtype != np.bool_:
            raise DTypeError(f"{op}: {name} must be a bool array (True = attend), got {describe(x)}")
    else:
        check_float(op, name, x, np.ndim(x), dtype, xp)
    if x.ndim > 4 or any(s not in (1, f) for s, f in zip(x.shape[::-1], full[::-1])):
        raise ShapeError(f"{op}: {name} must broadcast to {tuple(full)} with each dim 1 or full, "
                         f"got {describe(x)}")
    return xp.ascontiguousarray(x.reshape((1,) * (4 - x.ndim) + tuple(x.shape)))


def unbroadcast(grad, shape, xp=np):
    """Sum a (B, H, N, M) gradient down to a broadcastable input's original shape (C-contiguous)."""
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + i for i, s in enumerate(shape) if s == 1)
    return xp.ascontiguousarray(grad.sum(axis=axes, keepdims=True).reshape(shape) if axes else grad)


def code_of(op, name, value, table):
    """table[value] (a kernel's integer code), ConfigError naming the choices otherwise."""
    if value not in table:
        raise ConfigError(f"{op}: {name} must be one of {sorted(table)}, got {value!r}")
    return table[value]


def window_of(op, window):
    """The kernels' window code: -1 for None, else the int window >= 0."""
    if window is None:
        return -1
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 0:
        raise ConfigError(f"{op}: window must be None or an int >= 0, got {window!r}")
    return int(window)


def ranges_of(op, ranges, n_rows, n_cols, xp=np):
    """The kernels' ``ranges`` argument: (row_lo, row_hi, True) from per-row source ranges [lo_i, hi_i)
    (two int arrays of shape (N,), 0 <= lo, hi <= M; the bounds are checked on host arrays only),
    or unused dummies for None."""
    if ranges is None:
        return xp.zeros(1, np.int64), xp.zeros(1, np.int64), False
    lo, hi = (xp.ascontiguousarray(xp.asarray(r), dtype=np.int64) for r in ranges)
    if lo.shape != (n_rows,) or hi.shape != (n_rows,):
        raise ShapeError(f"{op}: ranges must be two int arrays of shape ({n_rows},), got {lo.shape}, {hi.shape}")
    if xp is np and n_rows and (lo.min() < 0 or hi.max() > n_cols):   # on a GPU: a device sync
        raise ConfigError(f"{op}: ranges must lie in [0, {n_cols}]")
    return lo, hi, True


def check_saved(op, out, stats, dout, out_shape, dtype, xp=np):
    """A backward's (out, stats, dout): out and dout of shape ``out_shape`` (B, H, N, dv), stats
    (B, H, N), all of ``dtype``; returned C-contiguous."""
    checked = []
    for name, z, shape in (("out", out, out_shape), ("stats", stats, out_shape[:3]), ("dout", dout, out_shape)):
        z = check_float(op, name, z, len(shape), dtype, xp)
        if z.shape != shape:
            raise ShapeError(f"{op}: {name} must have shape {shape}, got {z.shape}")
        checked.append(z)
    return tuple(checked)


def check_attention_arguments(op, q, k, v, scale, normalization, xp=np):
    """q (B, H, N, d), k (B, H, M, d), v (B, H, M, dv) of one float dtype and a finite real scale.
    Returns (q, k, v, scale in that dtype, the normalization code)."""
    q = check_float(op, "q", q, 4, xp=xp)
    dt = q.dtype
    k, v = check_float(op, "k", k, 4, dt, xp), check_float(op, "v", v, 4, dt, xp)
    B, H, _, d = q.shape
    M = k.shape[2]
    if k.shape[:2] != (B, H) or k.shape[3] != d:
        raise ShapeError(f"{op}: k must have shape ({B}, {H}, M, {d}) to match q {q.shape}, got {k.shape}")
    if v.shape[:3] != (B, H, M):
        raise ShapeError(f"{op}: v must have shape ({B}, {H}, {M}, dv) to match k {k.shape}, got {v.shape}")
    if not np.isscalar(scale) or not np.isfinite(scale):
        raise ConfigError(f"{op}: scale must be a finite real number, got {scale!r}")
    return q, k, v, dt.type(scale), code_of(op, "normalization", normalization, NORMALIZATIONS)


def attention_support(op, mask, bias, alibi_slopes, full, dtype, xp=np):
    """The dense attention support terms for scores of shape ``full`` (B, H, N, M): (mask4, use_mask,
    bias4, use_bias, slopes (H,), use_alibi), with broadcast4's 4-d mask and bias, and unused
    dummies ((1, 1, 1, 1) ones / zeros, zero slopes) for the terms that are None."""
    use_mask, use_bias, use_alibi = mask is not None, bias is not None, alibi_slopes is not None
    mask4 = broadcast4(op, "mask", mask, full, bool, xp) if use_mask else xp.ones((1, 1, 1, 1), bool)
    bias4 = broadcast4(op, "bias", bias, full, dtype, xp) if use_bias else xp.zeros((1, 1, 1, 1), dtype)
    H = full[1]
    if use_alibi:
        slopes = check_float(op, "alibi_slopes", alibi_slopes, 1, dtype, xp)
        if slopes.shape != (H,):
            raise ShapeError(f"{op}: alibi_slopes must have shape ({H},), got {slopes.shape}")
    else:
        slopes = xp.zeros(H, dtype)
    return mask4, use_mask, bias4, use_bias, slopes, use_alibi


def check_mlp_arguments(op, a, b, x, y, W, W2, b2, v, w, act, normalization, xp=np):
    """The MLP kernel's a (B, N, K), b (B, M, K), x (B, N, R), y (B, M, R), W (K, R), W2 (H, K),
    b2 (H,), v (B, H, M, dv), w (B, M) or (B, H, M), one float dtype; w >= 0 for 'softmax' (checked
    on host arrays). Returns ((a, b, x, y, W, W2, b2, v, w), the act code, the normalization code)."""
    a = check_float(op, "a", a, 3, xp=xp)
    dt = a.dtype
    b, x, y = (check_float(op, n, z, 3, dt, xp) for n, z in (("b", b), ("x", x), ("y", y)))
    W, W2 = check_float(op, "W", W, 2, dt, xp), check_float(op, "W2", W2, 2, dt, xp)
    b2, v = check_float(op, "b2", b2, 1, dt, xp), check_float(op, "v", v, 4, dt, xp)
    B, N, K = a.shape
    M, R, H = b.shape[1], x.shape[2], W2.shape[0]
    want = {"b": (B, M, K), "x": (B, N, R), "y": (B, M, R), "W": (K, R), "W2": (H, K), "b2": (H,)}
    for name, z in (("b", b), ("x", x), ("y", y), ("W", W), ("W2", W2), ("b2", b2)):
        if z.shape != want[name]:
            raise ShapeError(f"{op}: {name} must have shape {want[name]} (from a {a.shape}, b {b.shape}, "
                             f"x {x.shape}, W2 {W2.shape}), got {z.shape}")
    if v.shape[:3] != (B, H, M):
        raise ShapeError(f"{op}: v must have shape ({B}, {H}, {M}, dv), got {v.shape}")
    w = check_float(op, "w", w, np.ndim(w), dt, xp)
    if w.shape not in ((B, M), (B, H, M)):
        raise ShapeError(f"{op}: w must have shape ({B}, {M}) or ({B}, {H}, {M}), got {w.shape}")
    mode = code_of(op, "normalization", normalization, NORMALIZATIONS)
    if mode == 0 and xp is np and bool((w < 0).any()):     # on a GPU the check would sync the device
        raise ConfigError(f"{op}: normalization='softmax' needs quadrature weights w >= 0")
    return (a, b, x, y, W, W2, b2, v, w), code_of(op, "act", act, ACTIVATIONS), mode
