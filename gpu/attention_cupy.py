"""FlashAttention-2 on tensor cores: the Python side of attention_mma.cu (float16 or bfloat16 inputs,
float32 accumulation), as launch wrappers on CuPy arrays and one engine primitive.

    flash_forward(q, k, v, *, scale, causal=False, window=None, precision=None, tiles=None) -> (out, lse)
    flash_backward(q, k, v, out, lse, dout, *, scale, causal=False, window=None, precision=None,
                   tiles=None)                                                   -> (dq, dk, dv)
    cupy_attention(q, k, v, *, scale, causal=False, window=None)  one engine node (float16), its VJP
                                                                  flash_backward

Per batch item and head, with x_ij = scale q_i . k_j and the support
S(i) = {j < M : j <= i if causal, |i - j| <= window if a window is given} (the package's index band:
support.SupportPlan.index_band, causal top-left aligned as torch's, also for N != M):

    out_i = sum_{j in S(i)} e^{x_ij} v_j / sum_{j in S(i)} e^{x_ij},   lse_i = ln sum_{j in S(i)} e^{x_ij}

and an empty S(i) gives out_i = 0, lse_i = -inf (fused/attention_numba.py's convention). The backward
is FlashAttention-2's: P_ij = e^{x_ij - lse_i} recomputed from q, k and the saved lse, D_i = dout_i . out_i,

    dv_j = sum_i P_ij dout_i,   dS_ij = P_ij (dout_i . v_j - D_i),
    dq_i = scale sum_j dS_ij k_j,   dk_j = scale sum_i dS_ij q_i,

with nothing of size N x M stored (attention_mma.cu's header derives it and describes the kernels).

Arrays: CuPy, C-contiguous and 16-byte aligned; q (B, H, N, d), k and v (B, H, M, d): v has the head
width d of q and k, and d is 64 or 128. float16 arrays are fp16; bfloat16 has no CuPy dtype, so bf16
data travel as uint16 arrays of bit patterns and need precision='bfloat16' (never inferred from
uint16). out, dout, dq, dk, dv have the inputs' dtype and shapes; lse is float32 (B, H, N). A mismatch
raises DTypeError / ShapeError / ConfigError naming the argument, what it got and what is expected.

Tiles (``attention_tiles``): the forward runs one CTA per (query tile of ``rows`` rows, b h) with
rows / 16 warps, each owning 16 query rows, streaming key tiles of ``cols`` rows through ``stages``
shared-memory buffers (2: the next K, V tile loads by cp.async while this one is used); the backward
runs one CTA per (key tile of ``cols`` rows, b h) with cols / 16 warps over query tiles of ``rows``.
The first shape in FORWARD_TILES / BACKWARD_TILES whose shared memory fits the device is taken.

The float64 ``reference`` (NumPy or CuPy arrays) is the dense formula above with the error bounds of
the kernels, derived from their rounding (u = 2^-11 for float16, 2^-8 for bfloat16, the unit roundoff;
g = 2^-23 (N + M + d (1 + s)) covers the float32 sums and the logits' error, s = max_ij scale
sum_c |q_ic k_jc|): P and dS are rounded to 16 bits before each tensor-core product and the results are
rounded once more, so elementwise
    |out - out*| <= (3u + g) sum_j P_ij |v_jc|,    |dv - dv*| <= (3u + g) sum_i P_ij |dout_ic|,
    |dk - dk*| <= (3u + g) scale sum_i (|dS_ij| + P_ij E_ij) |q_ic|,
    |dq - dq*| <= (3u + g) scale sum_j (|dS_ij| + P_ij E_ij) |k_jc|,
with E_ij = sum_c |dout_ic| (sum_j' P_ij' |v_j'c| + |v_jc|) (D_i is formed from the rounded out), and
|lse - lse*| <= 2^-22 (M + 8) + g + 2^-23 |lse*|. The bounds vanish where the support is empty: those
rows and keys must come out exactly 0 (lse -inf). ``error_problems`` lists what breaks them.

Importing this module imports no CuPy (the kernels load through _rawmodule on first use); the
argument checks and the tile choice are plain Python, tested on the CPU.
"""
import math
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np

from itnet_np.autograd.primitive import primitive
from itnet_np.errors import ConfigError, DTypeError, ShapeError, describe
from itnet_np.transform.fused._arguments import window_of

__all__ = ["Tiles", "attention_tiles", "bfloat16_bits", "bfloat16_values", "cupy_attention", "error_problems",
           "flash_backward", "poisoned_allocations", "flash_forward", "reference", "tiles_of"]

SOURCE = "attention_mma.cu"
HEAD_DIMS = (64, 128)
# precision -> (the element tag of attention_mma.cu's templates, the array dtype that carries it)
PRECISIONS = {"float16": ("f16", np.dtype(np.float16)), "bfloat16": ("bf16", np.dtype(np.uint16))}
# (rows, cols, stages), most preferred first; attention_mma.cu instantiates exactly these under ITNET_INSTANTIATE
FORWARD_TILES = ((128, 64, 2), (64, 64, 2), (64, 64, 1))
BACKWARD_TILES = ((64, 64, 2), (64, 64, 1))
LOG2E = 1.4426950408889634
MAX_GRID_Y = 65535                 # B H goes on the grid's y axis


class Tiles(NamedTuple):
    """One launch shape: tile rows (queries) and cols (keys), shared-memory stages, warps per CTA and
    the dynamic shared memory it needs (bytes)."""

    rows: int
    cols: int
    stages: int
    warps: int
    shared_bytes: int


def forward_shared_bytes(d, rows, cols, stages):
    """The forward's shared memory: the Q tile (reused to stage the output) and ``stages`` K, V tiles,
    all of 2-byte elements."""
    return 2 * d * (rows + 2 * stages * cols)


def backward_shared_bytes(d, rows, cols, stages):
    """The backward's shared memory: K and V of the key tile, ``stages`` x (Q, dO tiles and the float32
    lse, D rows) of the query tiles, and the 2-byte dS^T tile (cols x rows)."""
    return 2 * d * 2 * cols + stages * (2 * d * 2 * rows + 2 * 4 * rows) + 2 * cols * rows


def tiles_of(head_dim, rows, cols, stages, *, backward=False):
    """The Tiles of one (rows, cols, stages) shape of FORWARD_TILES (or BACKWARD_TILES) at ``head_dim``."""
    table = BACKWARD_TILES if backward else FORWARD_TILES
    if (rows, cols, stages) not in table:
        raise ConfigError(f"tiles_of: ({rows}, {cols}, {stages}) is not one of the "
                          f"{'backward' if backward else 'forward'} shapes {table}")
    need = backward_shared_bytes if backward else forward_shared_bytes
    return Tiles(rows, cols, stages, (cols if backward else rows) // 16, need(int(head_dim), rows, cols, stages))


def attention_tiles(head_dim, precision, shared_limit, *, backward=False):
    """The Tiles of the forward (or the backward) for head width ``head_dim`` and ``precision``
    ('float16' / 'bfloat16') on a device allowing ``shared_limit`` bytes of shared memory per block:
    the first entry of FORWARD_TILES (BACKWARD_TILES) that fits. ConfigError when none does."""
    op = "attention_tiles"
    if precision not in PRECISIONS:
        raise ConfigError(f"{op}: precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if isinstance(head_dim, bool) or not isinstance(head_dim, (int, np.integer)) or head_dim not in HEAD_DIMS:
        raise ConfigError(f"{op}: head_dim must be one of {HEAD_DIMS} (the kernels' instantiations), got {head_dim!r}")
    if isinstance(shared_limit, bool) or not isinstance(shared_limit, (int, np.integer)) or shared_limit < 0:
        raise ConfigError(f"{op}: shared_limit must be a non-negative int (bytes), got {shared_limit!r}")
    shapes = [tiles_of(head_dim, *shape, backward=backward) for shape in (BACKWARD_TILES if backward else FORWARD_TILES)]
    for tiles in shapes:
        if tiles.shared_bytes <= shared_limit:
            return tiles
    which = "backward" if backward else "forward"
    raise ConfigError(f"{op}: the {which} at head_dim={head_dim} needs at least {shapes[-1].shared_bytes} bytes of "
                      f"shared memory per block (tiles {shapes[-1].rows} x {shapes[-1].cols}, "
                      f"{shapes[-1].stages} stage(s)); this device allows {shared_limit}")


# ------------------------------------------------------------------------------ argument checks

def precision_of(op, name, x, precision):
    """The precision of array ``x`` ('float16' / 'bfloat16'): float16 arrays are fp16 (precision None or
    'float16'), uint16 arrays are bf16 bit patterns and need precision='bfloat16'; anything else is a
    DTypeError naming ``name``."""
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"{op}: precision must be None, 'float16' or 'bfloat16', got {precision!r}")
    dtype = getattr(x, "dtype", None)
    if precision == "bfloat16":
        if dtype != np.uint16:
            raise DTypeError(f"{op}: precision='bfloat16' takes uint16 arrays of bfloat16 bit patterns; "
                             f"{name} is {describe(x)}")
        return precision
    if dtype == np.float16:
        return "float16"
    if dtype == np.uint16:
        raise DTypeError(f"{op}: {name} is {describe(x)}; uint16 arrays are read as bfloat16 bit patterns only "
                         "with precision='bfloat16' (float16 data: pass float16 arrays)")
    raise DTypeError(f"{op}: {name} must be float16 (or uint16 bfloat16 bit patterns with precision='bfloat16'), "
                     f"got {describe(x)}; the tensor-core kernels take 16-bit inputs (backend 'cuda' runs float32)")


def _contiguous(op, name, x):
    if not getattr(getattr(x, "flags", None), "c_contiguous", False):
        raise ShapeError(f"{op}: {name} must be C-contiguous ({describe(x)} is a strided view); pass "
                         "cupy.ascontiguousarray(x)")


def check_flash_arguments(op, q, k, v, scale, causal, window, precision):
    """Checks q (B, H, N, d), k, v (B, H, M, d) of one precision, d in HEAD_DIMS, C-contiguous; scale a
    finite real, causal a bool, window None or an int >= 0. Plain Python on anything with shape, dtype
    and flags (NumPy arrays in the CPU tests). Returns (precision, (B, H, N, M, d), window code)."""
    precision = precision_of(op, "q", q, precision)
    for name, x in (("k", k), ("v", v)):
        if getattr(x, "dtype", None) != q.dtype:
            raise DTypeError(f"{op}: {name} must have q's dtype {q.dtype}, got {describe(x)}")
    if q.ndim != 4:
        raise ShapeError(f"{op}: q must be (B, H, N, d), got {describe(q)}")
    B, H, N, d = q.shape
    if d not in HEAD_DIMS:
        raise ShapeError(f"{op}: the head dim d (q's last axis) must be one of {HEAD_DIMS}, got {describe(q)}")
    if k.ndim != 4 or k.shape[:2] != (B, H) or k.shape[3] != d:
        raise ShapeError(f"{op}: k must be ({B}, {H}, M, {d}) to match q {tuple(q.shape)}, got {describe(k)}")
    M = k.shape[2]
    if tuple(v.shape) != tuple(k.shape):
        raise ShapeError(f"{op}: v must be ({B}, {H}, {M}, {d}), k's shape (the kernels' value width is the "
                         f"head dim d), got {describe(v)}")
    for name, x in (("q", q), ("k", k), ("v", v)):
        _contiguous(op, name, x)
    if B * H > MAX_GRID_Y:
        raise ConfigError(f"{op}: B H = {B * H} batch-heads exceed the grid's y limit {MAX_GRID_Y}; split the batch")
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)) \
            or not math.isfinite(scale):
        raise ConfigError(f"{op}: scale must be a finite real number, got {scale!r}")
    if not isinstance(causal, (bool, np.bool_)):
        raise ConfigError(f"{op}: causal must be a bool, got {causal!r}")
    return precision, (B, H, N, M, d), window_of(op, window)


def check_saved(op, q, out, lse, dout):
    """The backward's out and dout ((B, H, N, d), q's dtype, C-contiguous) and lse (float32 (B, H, N),
    C-contiguous), as flash_forward returned them."""
    for name, x in (("out", out), ("dout", dout)):
        if getattr(x, "dtype", None) != q.dtype or tuple(getattr(x, "shape", ())) != tuple(q.shape):
            raise ShapeError(f"{op}: {name} must be {tuple(q.shape)} {q.dtype} like q, got {describe(x)}")
        _contiguous(op, name, x)
    if getattr(lse, "dtype", None) != np.float32 or tuple(getattr(lse, "shape", ())) != tuple(q.shape[:3]):
        raise ShapeError(f"{op}: lse must be float32 {tuple(q.shape[:3])} (flash_forward's second result), "
                         f"got {describe(lse)}")
    _contiguous(op, "lse", lse)


# ------------------------------------------------------------------------------ launches

def _device(op, arrays):
    """cupy, after checking that every array is a CuPy array with 16-byte aligned data (the kernels copy
    16 bytes at a time)."""
    from ._rawmodule import cupy
    cp = cupy()
    for name, x in arrays.items():
        if not isinstance(x, cp.ndarray):
            raise DTypeError(f"{op}: {name} must be a CuPy array on the GPU, got {type(x).__name__}")
        if x.data.ptr % 16:
            raise ConfigError(f"{op}: {name}'s data must be 16-byte aligned (a view at an odd offset?); "
                              "pass a copy (x.copy())")
    return cp


def shared_limit(cp):
    """Bytes of shared memory one block may use on the current device (with the opt-in above 48 KiB)."""
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    return int(props.get("sharedMemPerBlockOptin") or props["sharedMemPerBlock"])


def _kernel(name, precision, d, tiles=None):
    from ._rawmodule import raw_kernel
    ctype = PRECISIONS[precision][0]
    if tiles is None:
        return raw_kernel(SOURCE, f"{name}<{ctype}, {d}>")
    expr = f"{name}<{ctype}, {d}, {tiles.rows}, {tiles.cols}, {tiles.stages}>"
    return raw_kernel(SOURCE, expr, shared_bytes=tiles.shared_bytes)


def _chosen(op, tiles, d, precision, cp, backward):
    """``tiles`` (checked against the device), or attention_tiles' choice when None."""
    limit = shared_limit(cp)
    if tiles is None:
        return attention_tiles(d, precision, limit, backward=backward)
    table = BACKWARD_TILES if backward else FORWARD_TILES
    if not isinstance(tiles, Tiles) or tiles[:3] not in table or tiles != tiles_of(d, *tiles[:3], backward=backward):
        raise ConfigError(f"{op}: tiles must be tiles_of({d}, rows, cols, stages{', backward=True' if backward else ''})"
                          f" for a shape of {table}, got {tiles!r}")
    if tiles.shared_bytes > limit:
        raise ConfigError(f"{op}: {tiles} needs {tiles.shared_bytes} bytes of shared memory; this device allows {limit}")
    return tiles


def flash_forward(q, k, v, *, scale, causal=False, window=None, precision=None, tiles=None):
    """(out (B, H, N, d) in q's dtype, lse float32 (B, H, N)) of softmax attention (module docstring).
    ``tiles``: a tiles_of(...) shape to launch (tests); by default attention_tiles' choice."""
    op = "flash_forward"
    precision, (B, H, N, M, d), w = check_flash_arguments(op, q, k, v, scale, causal, window, precision)
    cp = _device(op, {"q": q, "k": k, "v": v})
    out = cp.empty_like(q)
    lse = cp.empty((B, H, N), cp.float32)
    tiles = _chosen(op, tiles, d, precision, cp, backward=False)
    if B * H * N == 0:
        return out, lse
    kernel = _kernel("attention_forward", precision, d, tiles)
    kernel((-(-N // tiles.rows), B * H), (32 * tiles.warps,),
           (q, k, v, out, lse, np.int32(N), np.int32(M), np.float32(scale * LOG2E), np.int32(bool(causal)),
            np.int32(w)), shared_mem=tiles.shared_bytes)
    return out, lse


def flash_backward(q, k, v, out, lse, dout, *, scale, causal=False, window=None, precision=None, tiles=None):
    """(dq, dk, dv) of flash_forward's out for the cotangent dout (module docstring), in q's dtype:
    D_i = dout_i . out_i (one kernel), then one CTA per key tile (dk, dv in registers, dq added to a
    float32 buffer by atomics), then dq cast to q's dtype. ``tiles`` as flash_forward's (backward shapes)."""
    op = "flash_backward"
    precision, (B, H, N, M, d), w = check_flash_arguments(op, q, k, v, scale, causal, window, precision)
    check_saved(op, q, out, lse, dout)
    cp = _device(op, {"q": q, "k": k, "v": v, "out": out, "lse": lse, "dout": dout})
    tiles = _chosen(op, tiles, d, precision, cp, backward=True)
    if B * H * N * M == 0:                          # no pairs: every gradient is 0
        return cp.zeros_like(q), cp.zeros_like(k), cp.zeros_like(v)
    rows = B * H * N
    delta = cp.empty((B, H, N), cp.float32)
    _kernel("attention_backward_delta", precision, d)((-(-rows // 4),), (128,), (out, dout, delta, np.int64(rows)))
    dq_acc = cp.zeros(q.shape, cp.float32)
    dk, dv = cp.empty_like(k), cp.empty_like(v)
    kernel = _kernel("attention_backward", precision, d, tiles)
    kernel((-(-M // tiles.cols), B * H), (32 * tiles.warps,),
           (q, k, v, dout, lse, delta, dq_acc, dk, dv, np.int32(N), np.int32(M), np.float32(scale),
            np.float32(scale * LOG2E), np.int32(bool(causal)), np.int32(w)), shared_mem=tiles.shared_bytes)
    dq = cp.empty_like(q)
    size = dq_acc.size
    from ._rawmodule import raw_kernel
    cast = raw_kernel(SOURCE, f"attention_dq_cast<{PRECISIONS[precision][0]}>")
    cast((min(-(-size // 256), 4096),), (256,), (dq_acc, dq, np.int64(size)))
    return dq, dk, dv


# ------------------------------------------------------------------------------ the engine primitive

def _forward(q, k, v, *, scale, causal, window):
    from ._rawmodule import cupy
    cp = cupy()
    q, k, v = (cp.ascontiguousarray(x) for x in (q, k, v))
    return flash_forward(q, k, v, scale=scale, causal=causal, window=window)


def _vjp(g, out, needs, q, k, v, *, scale, causal, window, residuals):
    from ._rawmodule import cupy
    cp = cupy()
    q, k, v, g = (cp.ascontiguousarray(x) for x in (q, k, v, g))
    return flash_backward(q, k, v, out, residuals, g, scale=scale, causal=causal, window=window)


_attention = primitive(_forward, "cupy_attention", save_output=True, saves_residuals=True,
                       twice_differentiable=False).defvjp_all(_vjp)


def cupy_attention(q, k, v, *, scale, causal=False, window=None):
    """One engine node: softmax attention of float16 q (B, H, N, d) over k, v (B, H, M, d) on tensor
    cores (flash_forward; its VJP flash_backward; the lse kept as the node's residual). Strided inputs
    are copied to contiguous ones. Softmax on the index band only: a bias, ALiBi, a mask, row ranges,
    quadrature weights, 'sum' / 'none' are refused by the 'cupy' plan (plan_cupy.py), never ignored.
    Not twice differentiable (create_graph=True raises GraphError: use 'dense')."""
    return _attention(q, k, v, scale=float(scale), causal=bool(causal), window=window)


# ------------------------------------------------------------------------------ the float64 reference

UNIT_ROUNDOFF = {"float16": 2.0 ** -11, "bfloat16": 2.0 ** -8}


def _xp(x):
    from itnet_np.autograd.backend import xp_of
    return xp_of(x)


def bfloat16_bits(x):
    """float32 values -> bfloat16 bit patterns (uint16), rounded to nearest even (NumPy or CuPy): adding
    0x7FFF plus the kept half's lowest bit to the float32 pattern carries into the upper half exactly when
    the lower half is above the midpoint, or on it with an odd upper half. NaN stays NaN (0x7FC0)."""
    xp = _xp(x)
    f = xp.asarray(x, dtype=np.float32)
    u = f.view(np.uint32)
    bits = ((u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    return xp.where(xp.isnan(f), np.uint16(0x7FC0), bits)


def bfloat16_values(bits):
    """bfloat16 bit patterns (uint16) -> their values as float32 (exact: the upper half of a float32)."""
    xp = _xp(bits)
    return (xp.asarray(bits).astype(np.uint32) << 16).view(np.float32)


def band(n, m, causal=False, window=None, xp=np):
    """(N, M) bool: the support j <= i (causal) and |i - j| <= window."""
    i, j = xp.arange(n)[:, None], xp.arange(m)[None, :]
    keep = xp.ones((n, m), dtype=bool)
    if causal:
        keep &= j <= i
    if window is not None:
        keep &= xp.abs(i - j) <= window
    return keep


def reference(q, k, v, dout, scale, causal=False, window=None):
    """(want, bounds, slack) in float64 for q, dout (B, H, N, d), k, v (B, H, M, d) (NumPy or CuPy):
    want = {out, lse, dq, dk, dv} by the dense formulas (softmax over the band; an empty row gives
    out 0, lse -inf), bounds = the sums of the module docstring's error bounds, slack = g."""
    xp = _xp(q)
    q, k, v, dout = (xp.asarray(a, dtype=np.float64) for a in (q, k, v, dout))
    n, m, d = q.shape[2], k.shape[2], q.shape[3]
    keep = band(n, m, causal, window, xp)
    x = xp.where(keep, scale * (q @ xp.swapaxes(k, -1, -2)), -xp.inf)
    top = x.max(-1, keepdims=True) if m else xp.zeros(x.shape[:-1] + (1,))
    top = xp.where(xp.isfinite(top), top, 0.0)
    e = xp.where(keep, xp.exp(x - top), 0.0)
    z = e.sum(-1, keepdims=True)
    p = e / xp.where(z > 0, z, 1.0)
    out = p @ v
    lse = xp.where(z[..., 0] > 0, xp.log(xp.where(z > 0, z, 1.0))[..., 0] + top[..., 0], -xp.inf)
    dp = dout @ xp.swapaxes(v, -1, -2)
    ds = p * (dp - (dout * out).sum(-1, keepdims=True))
    pt = xp.swapaxes(p, -1, -2)
    want = {"out": out, "lse": lse, "dq": scale * (ds @ k), "dk": scale * (xp.swapaxes(ds, -1, -2) @ q),
            "dv": pt @ dout}
    mix = p @ xp.abs(v)                                               # sum_j P_ij |v_jc|
    e_ij = (xp.abs(dout) * mix).sum(-1, keepdims=True) + xp.abs(dout) @ xp.abs(xp.swapaxes(v, -1, -2))
    w = xp.abs(ds) + p * e_ij
    bounds = {"out": mix, "dv": pt @ xp.abs(dout), "dk": scale * (xp.swapaxes(w, -1, -2) @ xp.abs(q)),
              "dq": scale * (w @ xp.abs(k))}
    qk = xp.abs(q) @ xp.abs(xp.swapaxes(k, -1, -2))
    s = scale * float(qk.max()) if qk.size else 0.0
    return want, bounds, 2.0 ** -23 * (n + m + d * (1 + s))


@contextmanager
def poisoned_allocations(cp):
    """Inside the block, ``cp.empty`` / ``cp.empty_like`` return arrays filled with 0xFF bytes (NaN in
    float16, bfloat16 and float32), so an output element a kernel does not write shows as a NaN that
    ``error_problems`` reports; the two functions are restored on exit."""
    made = cp.empty, cp.empty_like

    def filled(make):
        def make_poisoned(*args, **kw):
            x = make(*args, **kw)
            x.view(cp.uint8).fill(255)
            return x
        return make_poisoned
    cp.empty, cp.empty_like = filled(made[0]), filled(made[1])
    try:
        yield
    finally:
        cp.empty, cp.empty_like = made


def error_problems(got, want, bounds, slack, precision):
    """What breaks the bounds (module docstring), in words: [] when every given output of ``got`` (out,
    lse, dq, dk, dv as float64 arrays) is within them; a NaN (an unwritten element) always does."""
    xp = _xp(want["out"])
    u, problems = UNIT_ROUNDOFF[precision], []
    for name in ("out", "dq", "dk", "dv"):
        if name not in got:
            continue
        err = xp.abs(xp.asarray(got[name]) - want[name])
        tol = (3 * u + slack) * bounds[name]
        bad = ~(err <= tol)
        if bool(bad.any()):
            ratio = xp.where(bad, xp.nan_to_num(err / xp.maximum(tol, 1e-300), nan=xp.inf), 0.0)
            at = tuple(int(i) for i in np.unravel_index(int(ratio.argmax()), err.shape))
            problems.append(f"{name}: {int(bad.sum())} of {bad.size} elements beyond the bound; worst at {at}: got "
                            f"{float(xp.asarray(got[name])[at])}, want {float(want[name][at])}, bound {float(tol[at])}")
    if "lse" in got:
        lse, ref = xp.asarray(got["lse"], dtype=np.float64), want["lse"]
        empty = xp.isneginf(ref)
        if not bool((xp.isneginf(lse) == empty).all()):
            problems.append("lse: not -inf exactly on the rows with an empty support")
        err = xp.abs(xp.where(empty, 0.0, lse) - xp.where(empty, 0.0, ref))
        m = want["dk"].shape[2]
        tol = 2.0 ** -22 * (m + 8) + slack + 2.0 ** -23 * xp.abs(xp.where(empty, 0.0, ref))
        if not bool((err <= tol).all()):
            problems.append(f"lse: off by up to {float(xp.nan_to_num(err, nan=xp.inf).max())}")
    return problems
