"""The MLP-kernel transform on tensor cores (gpu/mlp_mma.cu, loaded by CuPy's RawModule): argument
checks, tile choice, launch wrappers and the engine op ``cupy_mlp``.

    pre_ijk = a_ik + b_jk + sum_r W_kr x_ir y_jr,      s^h_ij = sum_k W2_hk act(pre_ijk) + b2_h
    'softmax': out^h_i = sum_S w_j e^{s^h_ij} v^h_j / sum_S w_j e^{s^h_ij}     stats = log of the sum
    'sum':     out^h_i = sum_S w_j s^h_ij v^h_j / Z^h_i,  Z^h_i = sum_S w_j s^h_ij (0 where Z = 0)
    'none':    out^h_i = sum_S w_j s^h_ij v^h_j                                stats = Z

with the arguments of ``gpu.engine_ops.cuda_mlp`` (a (B,N,K), b (B,M,K), x (B,N,R), y (B,M,R),
W (K,R), W2 (H,K), b2 (H,), v (B,H,M,dv), w (B,M) or (B,H,M); S(i) the causal / window band) and
the same outputs; the derivation, the tiling and the fragment layouts are in mlp_mma.cu's docstring.
Stats are float32 (the log-sum-exp or Z), whatever the data type.

Supported subset (anything else raises ConfigError, DTypeError or ShapeError naming the argument;
``problem(...)`` says it in words without raising, for a planner's Decline):
    data       float16 arrays, or uint16 arrays holding bfloat16 bit patterns with
               precision='bfloat16' (CuPy has no bfloat16 dtype); one dtype for every array.
               The engine op cupy_mlp takes float16 only (the engine would promote uint16).
    act        relu, gelu_tanh, silu, tanh;      normalization  softmax, sum, none
    support    none, causal, window (int >= 0) on the index grid; no mask, no per-row ranges
    sizes      0 <= R <= 64 (zero-padded to 16, 32 or 64; R = 0 runs as 16 zero columns),
               1 <= K <= 128 (padded to a multiple of 16), 1 <= H <= 4 (padded to 1, 2 or 4),
               1 <= dv <= HEAD_WIDTHS[padded H] (padded to it: 64, 32, 16), N >= 0, M >= 0, B <= 65535;
               the tiles chosen for these sizes must fit the device's shared memory per block.
Zero padding is exact: the padded hidden units have pre = 0 and act(0) = 0 for the four activations,
padded rank columns, heads and value columns add zeros, and their outputs are sliced away.

Tiles (mlp_tiles): the first of FORWARD_TILES (warps, source columns per shared-memory tile) and of
BACKWARD_TILES (warps, query rows per tile) whose shared memory (forward_shared_bytes /
backward_shared_bytes, the same layout as mlp_mma.cu's fwd_smem / bwd_smem) fits the limit. A
kernel's name expression is "mlp_mma_forward<T, R, H, DV>" / "mlp_mma_backward<T, R, H, DV>", cached by
_rawmodule.raw_kernel per (dtype, shape); the scalars go as explicit int32.

Backward: one launch (source-major, FlashAttention-2 style); da and dx come back through float32
atomics into zeroed buffers, W / W2 / b2 as per-CTA partial rows summed here (see mlp_mma.cu).

Accuracy: inputs round once to the data type; products x_ir W_kr and the weights P (and dpre in the
backward) round to it before the tensor-core products; everything else accumulates in float32. The
relative error of an output is a few units of the data type's roundoff u (2^-11 float16, 2^-8
bfloat16) times the condition of the sum ('sum' divides by Z, which can be near 0).

Nothing here imports CuPy at import time: the checks and the tile choice are plain Python (tested on
the CPU); the launch wrappers load CuPy through _rawmodule.cupy().
"""
from collections import namedtuple

import numpy as np

from itnet_np.autograd.primitive import primitive
from itnet_np.errors import ConfigError, DTypeError, ShapeError, describe
from itnet_np.transform.fused._tiles import ACTIVATIONS, NORMALIZATIONS

__all__ = ["HEAD_WIDTHS", "MAX_K", "SUPPORTED_R", "Launch", "MLPTiles", "backward_buffers",
           "backward_shared_bytes", "bf16_to_f32", "check_arguments", "cupy_mlp", "f32_to_bf16",
           "finish_backward", "finish_forward", "forward_shared_bytes", "mlp_backward_tc", "mlp_forward_tc",
           "mlp_tiles", "padded_sizes", "prepare_backward", "prepare_forward", "problem"]

SOURCE = "mlp_mma.cu"
SUPPORTED_R = (16, 32, 64)                 # the bilinear rank after padding (a template argument)
HEAD_WIDTHS = {1: 64, 2: 32, 4: 16}         # heads after padding -> value width DV (template arguments)
MAX_K = 128                                # hidden units (a run-time size, padded to a multiple of 16)
PRECISIONS = ("float16", "bfloat16")
TYPE_NAMES = {"float16": "__half", "bfloat16": "__nv_bfloat16"}
FORWARD_TILES = ((4, 64), (4, 32), (4, 16), (2, 16), (1, 16))    # (warps, source columns per tile)
BACKWARD_TILES = ((4, 64), (4, 32), (4, 16), (2, 16), (1, 16))   # (warps, query rows per tile)
MLPTiles = namedtuple("MLPTiles", "R K H DV forward_warps forward_cols forward_bytes backward_warps "
                                  "backward_rows backward_bytes")
_NAMES = ("a", "b", "x", "y", "W", "W2", "b2", "v", "w")


def _align16(n):
    return -(-n // 16) * 16


def _up(n, choices):
    return next(c for c in choices if c >= n)


def padded_sizes(R, K, heads, dv):
    """(R, K, H, DV) after zero padding to the compiled shapes; ConfigError naming the size when it
    is out of range."""
    ranges = (("R (the rank of x and y)", R, 0, SUPPORTED_R[-1]), ("K (the hidden units)", K, 1, MAX_K),
              ("heads", heads, 1, max(HEAD_WIDTHS)))
    for name, value, low, high in ranges:
        if not isinstance(value, (int, np.integer)) or not low <= value <= high:
            raise ConfigError(f"mlp_mma: {name} must be an int in [{low}, {high}], got {value!r}")
    Hp = _up(heads, sorted(HEAD_WIDTHS))
    DV = HEAD_WIDTHS[Hp]
    if not isinstance(dv, (int, np.integer)) or not 1 <= dv <= DV:
        raise ConfigError(f"mlp_mma: the value width dv must be an int in [1, {DV}] for {heads} head(s) "
                          f"(padded to {Hp}: widths {HEAD_WIDTHS}), got {dv!r}")
    return _up(R, SUPPORTED_R), -(-K // 16) * 16, Hp, DV


def forward_shared_bytes(R, K, H, DV, warps, cols):
    """Dynamic shared memory of the forward (mlp_mma.cu fwd_smem, region by region)."""
    regions = (K * (R + 8) * 2, H * K * 4, H * 4, 16 * warps * (K + 8) * 2, cols * (R + 8) * 2,
               cols * (K + 8) * 2, H * cols * (DV + 8) * 2, H * cols * 4)
    return sum(_align16(r) for r in regions)


def backward_shared_bytes(R, K, H, DV, warps, rows):
    """Dynamic shared memory of the backward (mlp_mma.cu bwd_smem, region by region)."""
    regions = (K * (R + 8) * 2, H * K * 4, H * 4, 16 * warps * (K + 8) * 2, H * 16 * warps * (DV + 8) * 2,
               16 * warps * (R + 8) * 2, warps * 16 * K * 4, rows * (R + 8) * 2, rows * (K + 8) * 2,
               H * rows * (DV + 8) * 2, H * rows * 4, H * rows * 4, K * R * 4, H * K * 4, H * 4)
    return sum(_align16(r) for r in regions)


def mlp_tiles(C, K, heads, dv, precision, shared_limit):
    """The padded sizes and the first tiles of FORWARD_TILES / BACKWARD_TILES whose shared memory
    fits ``shared_limit`` bytes (C is the rank R of x and y). ConfigError when no tile fits."""
    if precision not in PRECISIONS:
        raise ConfigError(f"mlp_tiles: precision must be one of {PRECISIONS}, got {precision!r}")
    if isinstance(shared_limit, bool) or not isinstance(shared_limit, (int, np.integer)) or shared_limit <= 0:
        raise ConfigError(f"mlp_tiles: shared_limit must be a positive int (bytes), got {shared_limit!r}")
    R, K, H, DV = padded_sizes(C, K, heads, dv)
    chosen = []
    for kind, tiles, size in (("forward", FORWARD_TILES, forward_shared_bytes),
                              ("backward", BACKWARD_TILES, backward_shared_bytes)):
        fits = [(w, t, size(R, K, H, DV, w, t)) for w, t in tiles]
        ok = [f for f in fits if f[2] <= shared_limit]
        if not ok:
            raise ConfigError(f"mlp_tiles: the {kind} kernel needs {fits[-1][2]} bytes of shared memory for "
                              f"R={R}, K={K}, H={H}, DV={DV} even with its smallest tile {tiles[-1]}, "
                              f"more than shared_limit={shared_limit}")
        chosen += ok[0]
    return MLPTiles(R, K, H, DV, *chosen)


def _precision(op, arrays, precision):
    """'float16' or 'bfloat16' from the arrays' one dtype (DTypeError naming the first that differs)."""
    if precision not in (None,) + PRECISIONS:
        raise ConfigError(f"{op}: precision must be None, 'float16' or 'bfloat16', got {precision!r}")
    name0, first = arrays[0]
    dt = getattr(first, "dtype", None)
    want = "float16 arrays, or uint16 arrays of bfloat16 bit patterns with precision='bfloat16'"
    if dt == np.float16:
        if precision == "bfloat16":
            raise DTypeError(f"{op}: precision='bfloat16' needs uint16 arrays of bfloat16 bit patterns, "
                             f"but {name0} is {describe(first)}")
        prec = "float16"
    elif dt == np.uint16:
        if precision != "bfloat16":
            raise DTypeError(f"{op}: {name0} is {describe(first)}; uint16 arrays are read as bfloat16 bit "
                             "patterns only with precision='bfloat16' (never silently)")
        prec = "bfloat16"
    else:
        raise DTypeError(f"{op}: {name0} must be one of: {want}; got {describe(first)}")
    for name, z in arrays[1:]:
        if getattr(z, "dtype", None) != dt:
            raise DTypeError(f"{op}: {name} is {describe(z)} but {name0} is {dt}; "
                             "all arrays must share one dtype")
    return prec


def _ndim(op, name, z, ndim):
    if getattr(z, "ndim", None) != ndim:
        raise ShapeError(f"{op}: {name} must have {ndim} dims, got {describe(z)}")


def check_arguments(op, a, b, x, y, W, W2, b2, v, w, *, act, normalization, causal=False, window=None,
                    mask=None, ranges=None, precision=None):
    """The checks of every entry point, on array-likes (NumPy or CuPy: only dtype and shape are read).
    Returns a dict: precision, B, N, M, R, K, H, dv, hw (heads of w), act and mode codes, causal,
    window (-1 for None)."""
    if mask is not None:
        raise ConfigError(f"{op}: mask is not supported by the tensor-core MLP kernel (got {describe(mask)}; "
                          "expected None: the support must be none, causal or a window)")
    if ranges is not None:
        raise ConfigError(f"{op}: per-row ranges are not supported by the tensor-core MLP kernel "
                          "(expected None)")
    args = tuple(zip(_NAMES, (a, b, x, y, W, W2, b2, v, w)))
    prec = _precision(op, args, precision)
    for name, z in args[:4]:
        _ndim(op, name, z, 3)
    _ndim(op, "W", W, 2)
    _ndim(op, "W2", W2, 2)
    _ndim(op, "b2", b2, 1)
    _ndim(op, "v", v, 4)
    B, N, K = a.shape
    M, R, H = b.shape[1], x.shape[2], W2.shape[0]
    want = {"b": (B, M, K), "x": (B, N, R), "y": (B, M, R), "W": (K, R), "W2": (H, K), "b2": (H,)}
    for name, z in args[1:7]:
        if tuple(z.shape) != want[name]:
            raise ShapeError(f"{op}: {name} must have shape {want[name]} (from a {tuple(a.shape)}, "
                             f"b {tuple(b.shape)}, x {tuple(x.shape)}, W2 {tuple(W2.shape)}), "
                             f"got {tuple(z.shape)}")
    if tuple(v.shape[:3]) != (B, H, M):
        raise ShapeError(f"{op}: v must have shape ({B}, {H}, {M}, dv), got {tuple(v.shape)}")
    if tuple(getattr(w, "shape", ())) not in ((B, M), (B, H, M)):
        raise ShapeError(f"{op}: w must have shape ({B}, {M}) or ({B}, {H}, {M}), got {describe(w)}")
    if act not in ACTIVATIONS:
        raise ConfigError(f"{op}: act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"{op}: normalization must be one of {sorted(NORMALIZATIONS)}, "
                          f"got {normalization!r}")
    if window is not None and (isinstance(window, bool) or not isinstance(window, (int, np.integer))
                               or window < 0):
        raise ConfigError(f"{op}: window must be None or an int >= 0, got {window!r}")
    padded_sizes(R, K, H, v.shape[3])
    if B > 65535:
        raise ConfigError(f"{op}: the batch size B = {B} must be at most 65535 (the grid's y dimension)")
    return dict(precision=prec, B=B, N=N, M=M, R=R, K=K, H=H, dv=v.shape[3], hw=1 if w.ndim == 2 else H,
                act=ACTIVATIONS[act], mode=NORMALIZATIONS[normalization], causal=bool(causal),
                window=-1 if window is None else int(window))


def problem(C, K, heads, dv, *, dtype, precision=None, act="gelu_tanh", normalization="softmax", mask=None,
            ranges=None, shared_limit=48 * 1024):
    """'' when the tensor-core kernel takes these sizes and options, else the reason in words (for a
    planner's Decline). ``dtype``: the data's dtype (float16, or uint16 with precision='bfloat16')."""
    if mask is not None:
        return "a mask (the tensor-core MLP kernel supports none, causal and window supports only)"
    if ranges is not None:
        return "per-row source ranges (the tensor-core MLP kernel supports none, causal and window only)"
    dt = np.dtype(dtype)
    half = dt == np.float16 and precision in (None, "float16")
    if not (half or dt == np.uint16 and precision == "bfloat16"):
        return (f"{dt} data (the tensor-core MLP kernel takes float16, or uint16 bfloat16 bit patterns with "
                "precision='bfloat16')")
    if act not in ACTIVATIONS:
        return f"activation {act!r} (tensor-core MLP kernel: {sorted(ACTIVATIONS)})"
    if normalization not in NORMALIZATIONS:
        return f"normalization {normalization!r}"
    try:
        mlp_tiles(C, K, heads, dv, "float16" if dt == np.float16 else "bfloat16", shared_limit)
    except ConfigError as exc:
        return str(exc)
    return ""


# ---- bfloat16 bit patterns <-> float32 (array-module generic: NumPy or CuPy) -------------------------

def bf16_to_f32(xp, u16):
    """float32 values of uint16 bfloat16 bit patterns (exact: a bfloat16 is a float32's upper half)."""
    return (u16.astype(xp.uint32) << 16).view(xp.float32)


def f32_to_bf16(xp, f):
    """uint16 bfloat16 bit patterns of float32 values, rounded to nearest even (NaN stays a quiet NaN)."""
    u = xp.ascontiguousarray(f, dtype=xp.float32).view(xp.uint32)
    rounded = (u + xp.uint32(0x7FFF) + ((u >> 16) & xp.uint32(1))) >> 16
    nan = (u & xp.uint32(0x7FFFFFFF)) > xp.uint32(0x7F800000)
    return xp.where(nan, (u >> 16) | xp.uint32(0x40), rounded).astype(xp.uint16)


def _to_f32(xp, z, prec):
    return bf16_to_f32(xp, z) if prec == "bfloat16" else z.astype(xp.float32)


def _from_f32(xp, z, prec):
    return f32_to_bf16(xp, z) if prec == "bfloat16" else z.astype(xp.float16)


def _address(z):
    face = getattr(z, "__cuda_array_interface__", None) or z.__array_interface__
    return face["data"][0]


def _padded(xp, z, shape):
    """z zero-padded at the end of each axis to ``shape``, C-contiguous and 16-byte aligned (the
    kernels read rows with 16-byte vector loads)."""
    if tuple(z.shape) == tuple(shape) and z.flags.c_contiguous and (z.size == 0 or _address(z) % 16 == 0):
        return z
    out = xp.zeros(shape, z.dtype)
    out[tuple(slice(0, s) for s in z.shape)] = z
    return out


# ---- launches: array-module generic preparation and finishing, CuPy launches ---------------------------
# The preparation and finishing also run on NumPy arrays: the tests drive the host emulation of
# mlp_mma.cu (ITNET_HOST_EMULATION) with exactly the operands a device launch gets.

Launch = namedtuple("Launch", "info tiles operands grid block scalars kernel shared_bytes")


def _int32s(*values):
    return tuple(np.int32(z) for z in values)


def prepare_forward(xp, a, b, x, y, W, W2, b2, v, w, *, shared_limit, precision=None, op="mlp_forward_tc",
                    **opts):
    """The forward's launch: checked sizes (info), tiles, padded operands (a, b, x, y, W (16-bit),
    W2, b2, w (B, hw, M) (float32), v (16-bit)), grid, block, the int32 scalars N, M, K, hw, act, mode,
    causal, window, cols, the kernel's name expression and its shared bytes."""
    info = check_arguments(op, a, b, x, y, W, W2, b2, v, w, precision=precision, **opts)
    tiles = mlp_tiles(info["R"], info["K"], info["H"], info["dv"], info["precision"], shared_limit)
    B, N, M, hw, prec = info["B"], info["N"], info["M"], info["hw"], info["precision"]
    R, K, H, DV = tiles.R, tiles.K, tiles.H, tiles.DV
    whw = H if hw > 1 else 1
    operands = (_padded(xp, a, (B, N, K)), _padded(xp, b, (B, M, K)), _padded(xp, x, (B, N, R)),
                _padded(xp, y, (B, M, R)), _padded(xp, W, (K, R)), _padded(xp, _to_f32(xp, W2, prec), (H, K)),
                _padded(xp, _to_f32(xp, b2, prec), (H,)), _padded(xp, v, (B, H, M, DV)),
                _padded(xp, _to_f32(xp, w, prec).reshape(B, hw, M), (B, whw, M)))
    warps = tiles.forward_warps
    return Launch(info, tiles, operands, (-(-N // (16 * warps)), B), (32 * warps,),
                  _int32s(N, M, K, whw, info["act"], info["mode"], info["causal"], info["window"],
                          tiles.forward_cols),
                  f"mlp_mma_forward<{TYPE_NAMES[prec]}, {R}, {H}, {DV}>", tiles.forward_bytes)


def finish_forward(xp, launch, out, stats):
    """(out (B, H, N, dv), stats (B, H, N)) from the kernel's padded (B, Hp, N, DV) / (B, Hp, N)."""
    H, dv = launch.info["H"], launch.info["dv"]
    return xp.ascontiguousarray(out[:, :H, :, :dv]), xp.ascontiguousarray(stats[:, :H])


def prepare_backward(xp, a, b, x, y, W, W2, b2, v, w, out, stats, dout, *, shared_limit, precision=None,
                     **opts):
    """The backward's launch: as prepare_forward, operands followed by dout (padded), stats and
    D = dout . out (float32, zero for 'none'); scalars end with the query rows per tile."""
    op = "mlp_backward_tc"
    fwd = prepare_forward(xp, a, b, x, y, W, W2, b2, v, w, shared_limit=shared_limit, precision=precision,
                          op=op, **opts)
    info, tiles = fwd.info, fwd.tiles
    B, N, M, H, dv, prec = (info[k] for k in ("B", "N", "M", "H", "dv", "precision"))
    for name, z, shape, dt in (("out", out, (B, H, N, dv), a.dtype), ("dout", dout, (B, H, N, dv), a.dtype),
                               ("stats", stats, (B, H, N), np.float32)):
        if getattr(z, "dtype", None) != dt or tuple(getattr(z, "shape", ())) != shape:
            raise ShapeError(f"{op}: {name} must be a {np.dtype(dt)} array of shape {shape}, "
                             f"got {describe(z)}")
    Hp, DV = tiles.H, tiles.DV
    if info["mode"] == 2:
        dd = xp.zeros((B, Hp, N), xp.float32)
    else:
        dd = _padded(xp, (_to_f32(xp, dout, prec) * _to_f32(xp, out, prec)).sum(-1), (B, Hp, N))
    operands = fwd.operands + (_padded(xp, dout, (B, Hp, N, DV)),
                               _padded(xp, xp.ascontiguousarray(stats), (B, Hp, N)), dd)
    warps = tiles.backward_warps
    return Launch(info, tiles, operands, (-(-M // (16 * warps)), B), (32 * warps,),
                  fwd.scalars[:-1] + _int32s(tiles.backward_rows),
                  f"mlp_mma_backward<{TYPE_NAMES[prec]}, {tiles.R}, {Hp}, {DV}>", tiles.backward_bytes)


def backward_buffers(xp, launch, dtype):
    """The backward kernel's outputs: da, dx (float32 zeros, accumulated atomically), db, dy, dv
    (dtype), dw (float32, (B, hw, M)), the per-CTA weight partials (float32)."""
    info, t = launch.info, launch.tiles
    B, N, M, whw = info["B"], info["N"], info["M"], int(launch.scalars[3])
    f32 = xp.float32
    return (xp.zeros((B, N, t.K), f32), xp.zeros((B, N, t.R), f32), xp.empty((B, M, t.K), dtype),
            xp.empty((B, M, t.R), dtype), xp.empty((B, t.H, M, t.DV), dtype), xp.empty((B, whw, M), f32),
            xp.empty((launch.grid[0] * launch.grid[1], t.K * t.R + t.H * t.K + t.H), f32))


def finish_backward(xp, launch, w_shape, da, dx, db, dy, dv, dw, wpart):
    """The gradient dict (each its input's shape and dtype) from the kernel's padded outputs."""
    info, t = launch.info, launch.tiles
    K, R, H, dvw, prec = info["K"], info["R"], info["H"], info["dv"], info["precision"]
    total = wpart.sum(0)
    c = xp.ascontiguousarray
    dW = total[:t.K * t.R].reshape(t.K, t.R)[:K, :R]
    dW2 = total[t.K * t.R:t.K * t.R + t.H * t.K].reshape(t.H, t.K)[:H, :K]
    db2 = total[t.K * t.R + t.H * t.K:][:H]
    dwf = dw[:, :H] if info["hw"] > 1 else dw
    return {"a": _from_f32(xp, c(da[:, :, :K]), prec), "b": c(db[:, :, :K]),
            "x": _from_f32(xp, c(dx[:, :, :R]), prec), "y": c(dy[:, :, :R]), "W": _from_f32(xp, c(dW), prec),
            "W2": _from_f32(xp, c(dW2), prec), "b2": _from_f32(xp, c(db2), prec), "v": c(dv[:, :H, :, :dvw]),
            "w": _from_f32(xp, c(dwf).reshape(w_shape), prec)}


def _cupy_ready(op, arrays):
    """cupy (ConfigError without it or a device), after checking that the arrays are CuPy arrays, and
    the device's shared-memory limit per block (the opt-in maximum)."""
    from ._rawmodule import cupy
    cp = cupy()
    for name, z in arrays:
        if not isinstance(z, cp.ndarray):
            raise DTypeError(f"{op}: {name} must be a cupy array, got {type(z).__name__}")
    return cp, int(cp.cuda.Device().attributes.get("MaxSharedMemoryPerBlockOptin", 48 * 1024))


def _launch(launch, arguments):
    from ._rawmodule import raw_kernel
    kernel = raw_kernel(SOURCE, launch.kernel, shared_bytes=launch.shared_bytes)
    kernel(launch.grid, launch.block, arguments + launch.scalars, shared_mem=launch.shared_bytes)


def mlp_forward_tc(a, b, x, y, W, W2, b2, v, w, *, act="gelu_tanh", causal=False, window=None,
                   normalization="softmax", mask=None, ranges=None, precision=None):
    """Forward on the tensor cores: (out (B, H, N, dv) in the data type, stats (B, H, N) float32)."""
    arrays = (a, b, x, y, W, W2, b2, v, w)
    cp, limit = _cupy_ready("mlp_forward_tc", tuple(zip(_NAMES, arrays)))
    launch = prepare_forward(cp, *arrays, shared_limit=limit, precision=precision, act=act, causal=causal,
                             window=window, normalization=normalization, mask=mask, ranges=ranges)
    info, t = launch.info, launch.tiles
    B, N, M = info["B"], info["N"], info["M"]
    if N == 0 or M == 0:
        stats = cp.full((B, info["H"], N), -np.inf if info["mode"] == 0 else 0.0, cp.float32)
        return cp.zeros((B, info["H"], N, info["dv"]), a.dtype), stats
    out = cp.empty((B, t.H, N, t.DV), a.dtype)
    stats = cp.empty((B, t.H, N), cp.float32)
    _launch(launch, launch.operands + (out, stats))
    return finish_forward(cp, launch, out, stats)


def mlp_backward_tc(a, b, x, y, W, W2, b2, v, w, out, stats, dout, *, act="gelu_tanh", causal=False,
                    window=None, normalization="softmax", mask=None, ranges=None, precision=None):
    """Gradients of mlp_forward_tc: a dict a, b, x, y, W, W2, b2, v, w (each its input's shape and dtype).
    ``out`` and ``dout`` (B, H, N, dv) in the data type, ``stats`` the forward's float32 (B, H, N)."""
    arrays = (a, b, x, y, W, W2, b2, v, w)
    named = tuple(zip(_NAMES + ("out", "stats", "dout"), arrays + (out, stats, dout)))
    cp, limit = _cupy_ready("mlp_backward_tc", named)
    launch = prepare_backward(cp, *arrays, out, stats, cp.ascontiguousarray(dout), shared_limit=limit,
                              precision=precision, act=act, causal=causal, window=window,
                              normalization=normalization, mask=mask, ranges=ranges)
    if launch.info["N"] == 0 or launch.info["M"] == 0:
        return {name: cp.zeros_like(z) for name, z in zip(_NAMES, arrays)}
    buffers = backward_buffers(cp, launch, a.dtype)
    _launch(launch, launch.operands + buffers)
    return finish_backward(cp, launch, w.shape, *buffers)


# ---- the engine op -------------------------------------------------------------------------------------

def _forward(a, b, x, y, W, W2, b2, v, w, *, act, causal, window, mask, normalization, ranges):
    return mlp_forward_tc(a, b, x, y, W, W2, b2, v, w, act=act, causal=causal, window=window,
                          normalization=normalization, mask=mask, ranges=ranges)


def _vjp(g, out, needs, a, b, x, y, W, W2, b2, v, w, *, act, causal, window, mask, normalization, ranges,
         residuals):
    from ._rawmodule import cupy
    grads = mlp_backward_tc(a, b, x, y, W, W2, b2, v, w, out, residuals, cupy().ascontiguousarray(g),
                            act=act, causal=causal, window=window, normalization=normalization, mask=mask,
                            ranges=ranges)
    return tuple(grads[name] for name in _NAMES)


_mlp = primitive(_forward, "cupy_mlp", save_output=True, saves_residuals=True,
                 twice_differentiable=False).defvjp_all(_vjp)


def cupy_mlp(a, b, x, y, W, W2, b2, v, w, *, act, causal=False, window=None, mask=None,
             normalization="softmax", ranges=None):
    """One engine node: the tensor-core MLP-kernel transform, with the signature and semantics of
    gpu.engine_ops.cuda_mlp (float16 CuPy data; mask and ranges must be None: module docstring)."""
    if mask is not None or ranges is not None:
        what = "mask" if mask is not None else "ranges"
        raise ConfigError(f"cupy_mlp: {what} is not supported by the tensor-core MLP kernel (expected None; "
                          "the 'cuda' backend takes it)")
    return _mlp(a, b, x, y, W, W2, b2, v, w, act=act, causal=bool(causal), window=window, mask=None,
                normalization=normalization, ranges=None)
