"""attention_mma.cu and its wrappers (gpu/attention_cupy.py) against the float64 reference written from
the formulas (attention_cupy.reference: dense softmax over the band and its gradients), within the
elementwise error bounds derived in attention_cupy.py's docstring from the kernels' rounding (they
vanish where the support is empty, so those rows and keys must come out exactly 0, lse -inf).

Without a GPU (CI):
- the wrappers' argument checks (each error names the argument, what it got and what is expected)
  and tile choices, and that FORWARD_TILES / BACKWARD_TILES are exactly the shapes the .cu instantiates;
- the kernels themselves, run on the CPU by a small emulator of the CUDA execution model (EMULATOR_MAIN,
  EMULATOR_PTX at the end of this file, built with the host C++ compiler): threads are cooperative
  fibers switched at barriers, the PTX instructions (mma.m16n8k16, ldmatrix, cp.async, cvt) are written
  from the PTX ISA's fragment tables independently of the kernel's index arithmetic, shared memory starts
  as NaN and the launch's declared shared memory is enforced; cp.async copies land either as late as the
  waits allow (warps in lockstep) or at once with warp 0 running ahead (``eager``), the two extremes of
  the ordering the PTX allows. It checks the fragment layouts, swizzle, masking, tile skipping, the
  pipeline's waits and barriers and the shared-memory sizes; not timing, the hardware's own rounding
  order, or every interleaving of the warps.
On a GPU (``gpu`` marker; bench/gpu_cupy.py runs them with ITNET_REQUIRE_GPU=1): the same comparisons on
the device for every tile shape, outputs poisoned (every cupy.empty / empty_like filled with NaN bytes)
so that unwritten elements show, and within 2x torch SDPA's error at the same precision when torch is
there (FlashAttention's rule).
"""
import math
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from itnet_np.gpu import _rawmodule
from itnet_np.gpu.attention_cupy import (
    BACKWARD_TILES,
    FORWARD_TILES,
    HEAD_DIMS,
    PRECISIONS,
    attention_tiles,
    backward_shared_bytes,
    band,
    bfloat16_values,
    check_flash_arguments,
    check_saved,
    error_problems,
    forward_shared_bytes,
    poisoned_allocations,
    precision_of,
    reference,
    tiles_of,
)

from itnet_np.errors import ConfigError, DTypeError, ShapeError

KERNEL_SOURCE = _rawmodule.SOURCE_DIR / "attention_mma.cu"


def bf16_bits(x):
    """float -> bfloat16 bit patterns (uint16), round to nearest even, written independently of
    attention_cupy.bfloat16_bits and of the emulator: the nearer of the two bfloat16 neighbours of the
    float32 value (truncated, and one step up in magnitude), the even one on a tie."""
    u = np.asarray(x, np.float32).view(np.uint32)
    low = (u >> 16).astype(np.uint32)
    below = (low << 16).view(np.float32).astype(np.float64)
    above = ((low + 1) << 16).view(np.float32).astype(np.float64)
    exact = np.asarray(x, np.float32).astype(np.float64)
    above = np.where((low + 1) & 0x7FFF == 0x7F80, np.copysign(2.0 ** 128, exact), above)   # inf stands for 2^128
    up = (np.abs(above - exact) < np.abs(exact - below)) | \
        ((np.abs(above - exact) == np.abs(exact - below)) & (low % 2 == 1))
    return np.where(up, low + 1, low).astype(np.uint16)


def encode(x, precision):
    """float64 data as the kernels' 16-bit arrays: float16, or uint16 bfloat16 bit patterns."""
    return np.asarray(x, np.float16) if precision == "float16" else bf16_bits(np.asarray(x, np.float32))


def decode(a, precision):
    return np.asarray(a).astype(np.float64) if precision == "float16" else bfloat16_values(np.asarray(a)).astype(
        np.float64)


def assert_close(got, want, bounds, slack, precision):
    problems = error_problems(got, want, bounds, slack, precision)
    assert not problems, "\n".join(problems)


def inputs(precision, shape_q, shape_k, seed):
    """Random q, k, v, dout as 16-bit arrays and their exact float64 values."""
    rng = np.random.default_rng(seed)
    raw = [encode(rng.standard_normal(s), precision) for s in (shape_q, shape_k, shape_k, shape_q)]
    return raw, [decode(a, precision) for a in raw]


# ------------------------------------------------------------------------------ the reference itself (CPU)

@pytest.mark.parametrize("n, m, causal, window", [(9, 7, True, None), (6, 11, False, 2), (8, 3, True, 1), (5, 12, True, 3)])
def test_the_reference_matches_the_engines_dense_attention_and_its_autograd(n, m, causal, window):
    """reference() against tests/gpu/_gpu_dense_refs.attention (engine ops, gradients by the engine's
    backward): out, lse and the three gradients, float64."""
    from _gpu_dense_refs import attention as dense

    import itnet_np as itn
    rng = np.random.default_rng(n + m)
    q, dout = rng.standard_normal((2, 2, n, 5)), rng.standard_normal((2, 2, n, 5))
    k, v = rng.standard_normal((2, 2, m, 5)), rng.standard_normal((2, 2, m, 5))
    want, bounds, slack = reference(q, k, v, dout, 0.7, causal, window)
    tq, tk, tv = (itn.tensor(a, requires_grad=True) for a in (q, k, v))
    out = dense(tq, tk, tv, 0.7, causal=causal, window=window)
    (out * dout).sum().backward()
    for name, got in (("out", out.data), ("dq", tq.grad.data), ("dk", tk.grad.data), ("dv", tv.grad.data)):
        np.testing.assert_allclose(want[name], got, rtol=1e-12, atol=1e-12, err_msg=name)
    keep = band(n, m, causal, window)
    x = np.where(keep, 0.7 * q @ np.swapaxes(k, -1, -2), -np.inf)
    with np.errstate(divide="ignore"):
        lse = np.log(np.exp(x).sum(-1))                                       # small logits: no overflow
    np.testing.assert_allclose(want["lse"], lse, rtol=1e-12)
    assert set(bounds) == {"out", "dq", "dk", "dv"} and slack > 0


def test_error_problems_flags_nan_and_errors_beyond_the_bound():
    rng = np.random.default_rng(3)
    q, k, v, dout = (rng.standard_normal((1, 1, 6, 4)) for _ in range(4))
    want, bounds, slack = reference(q, k, v, dout, 0.5, True, None)
    exact = {name: want[name].copy() for name in ("out", "lse", "dq", "dk", "dv")}
    assert error_problems(exact, want, bounds, slack, "float16") == []
    tol = (3 * 2.0 ** -11 + slack) * bounds["dk"]
    nudged = dict(exact, dk=want["dk"] + 0.9 * tol)
    assert error_problems(nudged, want, bounds, slack, "float16") == []
    nudged = dict(exact, dk=want["dk"] + 1.5 * tol)
    assert error_problems(nudged, want, bounds, slack, "float16")[0].startswith("dk: 24 of 24 elements beyond")
    poisoned = dict(exact, out=np.where(np.arange(4) == 2, np.nan, want["out"]))
    assert error_problems(poisoned, want, bounds, slack, "float16")[0].startswith("out: 6 of 24 elements beyond")
    wrong_lse = dict(exact, lse=np.zeros_like(want["lse"]))
    assert error_problems(wrong_lse, want, bounds, slack, "bfloat16")[0].startswith("lse: off by up to")


def test_bfloat16_bits_round_to_nearest_even():
    from itnet_np.gpu.attention_cupy import bfloat16_bits
    rng = np.random.default_rng(1)
    ties = ((np.arange(0x3F00, 0x4100, dtype=np.uint32) << 16) | 0x8000).view(np.float32)
    x = np.concatenate([rng.standard_normal(5000).astype(np.float32) * np.float32(100), ties, -ties,
                        np.float32([0.0, -0.0, 3.4e38, 1e-40])])
    np.testing.assert_array_equal(bfloat16_bits(x), bf16_bits(x))
    np.testing.assert_array_equal(bfloat16_values(np.uint16([0x3F80, 0xC000, 0x3E20, 0x7F80, 0x0001])),
                                  np.float32([1.0, -2.0, 0.15625, np.inf, 2.0 ** -133]))
    assert bfloat16_bits(np.float32([np.nan]))[0] == 0x7FC0


# ------------------------------------------------------------------------------ argument checks (CPU)

def arrays(shape_q=(1, 2, 5, 64), shape_k=(1, 2, 7, 64), dtype=np.float16):
    return np.zeros(shape_q, dtype), np.zeros(shape_k, dtype), np.zeros(shape_k, dtype)


def test_precision_is_read_from_the_dtype_and_never_guessed_for_uint16():
    q = np.zeros((1, 1, 2, 64), np.float16)
    assert precision_of("op", "q", q, None) == "float16" == precision_of("op", "q", q, "float16")
    assert precision_of("op", "q", q.view(np.uint16), "bfloat16") == "bfloat16"
    with pytest.raises(DTypeError, match=r"op: q is shape \(1, 1, 2, 64\) uint16; uint16 arrays are read as "
                                         r"bfloat16 bit patterns only with precision='bfloat16'"):
        precision_of("op", "q", q.view(np.uint16), None)
    with pytest.raises(DTypeError, match=r"op: precision='bfloat16' takes uint16 arrays of bfloat16 bit "
                                         r"patterns; q is shape \(1, 1, 2, 64\) float16"):
        precision_of("op", "q", q, "bfloat16")
    with pytest.raises(DTypeError, match=r"op: q must be float16 \(or uint16 bfloat16 bit patterns with "
                                         r"precision='bfloat16'\), got shape \(1, 1, 2, 64\) float32; .*backend 'cuda'"):
        precision_of("op", "q", q.astype(np.float32), None)
    with pytest.raises(ConfigError, match=r"op: precision must be None, 'float16' or 'bfloat16', got 'float32'"):
        precision_of("op", "q", q, "float32")


def test_argument_checks_name_the_argument_what_it_got_and_what_is_expected():
    q, k, v = arrays()
    assert check_flash_arguments("op", q, k, v, 0.125, True, 3, None) == ("float16", (1, 2, 5, 7, 64), 3)
    assert check_flash_arguments("op", q, k, v, 1, False, None, None)[2] == -1
    cases = [
        ((q, k.astype(np.float32), v), DTypeError, r"op: k must have q's dtype float16, got shape \(1, 2, 7, 64\) float32"),
        ((q[0], k, v), ShapeError, r"op: q must be \(B, H, N, d\), got shape \(2, 5, 64\) float16"),
        (arrays((1, 2, 5, 32), (1, 2, 7, 32)), ShapeError,
         r"op: the head dim d \(q's last axis\) must be one of \(64, 128\), got shape \(1, 2, 5, 32\) float16"),
        ((q, np.zeros((1, 3, 7, 64), np.float16), v), ShapeError,
         r"op: k must be \(1, 2, M, 64\) to match q \(1, 2, 5, 64\), got shape \(1, 3, 7, 64\) float16"),
        ((q, k, np.zeros((1, 2, 7, 32), np.float16)), ShapeError,
         r"op: v must be \(1, 2, 7, 64\), k's shape .*, got shape \(1, 2, 7, 32\) float16"),
        ((q, np.zeros((1, 2, 64, 7), np.float16).swapaxes(2, 3), v), ShapeError,
         r"op: k must be C-contiguous \(shape \(1, 2, 7, 64\) float16 is a strided view\)"),
    ]
    for args, error, message in cases:
        with pytest.raises(error, match=message):
            check_flash_arguments("op", *args, 0.125, False, None, None)
    for scale in (float("nan"), True, "1"):
        with pytest.raises(ConfigError, match=r"op: scale must be a finite real number, got"):
            check_flash_arguments("op", q, k, v, scale, False, None, None)
    with pytest.raises(ConfigError, match=r"op: causal must be a bool, got 1"):
        check_flash_arguments("op", q, k, v, 0.1, 1, None, None)
    with pytest.raises(ConfigError, match=r"op: window must be None or an int >= 0, got -1"):
        check_flash_arguments("op", q, k, v, 0.1, False, -1, None)
    big = np.zeros((256, 257, 1, 64), np.float16)
    with pytest.raises(ConfigError, match=r"op: B H = 65792 batch-heads exceed the grid's y limit 65535"):
        check_flash_arguments("op", big, big, big, 0.1, False, None, None)


def test_saved_arrays_are_checked_against_q():
    q = np.zeros((1, 2, 5, 64), np.float16)
    lse = np.zeros((1, 2, 5), np.float32)
    check_saved("op", q, q.copy(), lse, q.copy())
    with pytest.raises(ShapeError, match=r"op: out must be \(1, 2, 5, 64\) float16 like q, got shape \(1, 2, 4, 64\)"):
        check_saved("op", q, q[:, :, :4].copy(), lse, q)
    with pytest.raises(ShapeError, match=r"op: dout must be \(1, 2, 5, 64\) float16 like q, got .* float32"):
        check_saved("op", q, q, lse, q.astype(np.float32))
    with pytest.raises(ShapeError, match=r"op: lse must be float32 \(1, 2, 5\) \(flash_forward's second result\), "
                                         r"got shape \(1, 2, 5\) float16"):
        check_saved("op", q, q, lse.astype(np.float16), q)


def test_without_cupy_the_launches_say_what_to_install():
    from itnet_np.gpu.attention_cupy import flash_forward

    from itnet_np.autograd.backend import gpu_available
    if gpu_available():
        pytest.skip("CuPy sees a GPU here")
    q, k, v = arrays()
    with pytest.raises(ConfigError, match=r"the CuPy kernels need .*itnet-np\[gpu\]"):
        flash_forward(q, k, v, scale=0.125)


# ------------------------------------------------------------------------------ tiles (CPU)

def test_shared_memory_of_each_tile_shape_counts_its_buffers():
    # forward: Q tile (rows x d) + stages x (K tile + V tile) (cols x d), 2-byte elements
    assert forward_shared_bytes(64, 128, 64, 2) == 2 * (128 * 64 + 2 * (64 * 64 + 64 * 64)) == 49152
    assert forward_shared_bytes(128, 64, 64, 1) == 2 * (64 * 128 + 64 * 128 + 64 * 128) == 49152
    # backward: K, V (cols x d) + stages x (Q, dO (rows x d) + lse, D (rows floats)) + dS^T (cols x rows)
    assert backward_shared_bytes(64, 64, 64, 2) == 2 * 2 * 64 * 64 + 2 * (2 * 2 * 64 * 64 + 2 * 4 * 64) + 2 * 64 * 64
    assert backward_shared_bytes(128, 64, 64, 1) == 2 * 2 * 64 * 128 + (2 * 2 * 64 * 128 + 2 * 4 * 64) + 2 * 64 * 64


@pytest.mark.parametrize("limit, d, forward, backward", [
    (232448, 64, (128, 64, 2), (64, 64, 2)),      # sm_90 (H100 / H200)
    (232448, 128, (128, 64, 2), (64, 64, 2)),
    (101376, 128, (128, 64, 2), (64, 64, 1)),     # sm_86 / sm_89: 99 KiB
    (49152, 64, (128, 64, 2), (64, 64, 1)),       # 48 KiB
    (49152, 128, (64, 64, 1), None),
    (41000, 64, (64, 64, 2), None),
    (40000, 64, (64, 64, 1), None),
])
def test_the_first_tile_shape_that_fits_the_device_is_chosen(limit, d, forward, backward):
    for precision in PRECISIONS:
        got = attention_tiles(d, precision, limit)
        assert got[:3] == forward and got.warps == forward[0] // 16 and got.shared_bytes <= limit
        if backward is None:
            with pytest.raises(ConfigError, match=rf"attention_tiles: the backward at head_dim={d} needs at least "
                                                  rf"\d+ bytes of shared memory per block .*this device allows {limit}"):
                attention_tiles(d, precision, limit, backward=True)
        else:
            got = attention_tiles(d, precision, limit, backward=True)
            assert got[:3] == backward and got.warps == backward[1] // 16 and got.shared_bytes <= limit


def test_tile_arguments_are_checked():
    with pytest.raises(ConfigError, match=r"attention_tiles: head_dim must be one of \(64, 128\) .*got 96"):
        attention_tiles(96, "float16", 10 ** 6)
    with pytest.raises(ConfigError, match=r"attention_tiles: precision must be one of \['bfloat16', 'float16'\], "
                                          r"got 'float32'"):
        attention_tiles(64, "float32", 10 ** 6)
    with pytest.raises(ConfigError, match=r"attention_tiles: shared_limit must be a non-negative int"):
        attention_tiles(64, "float16", -1)
    with pytest.raises(ConfigError, match=r"tiles_of: \(32, 64, 2\) is not one of the forward shapes"):
        tiles_of(64, 32, 64, 2)


def test_the_tile_tables_are_exactly_what_the_cuda_file_instantiates():
    text = KERNEL_SOURCE.read_text(encoding="utf-8")
    block = text[text.index("#ifdef ITNET_INSTANTIATE"):]
    forward = {tuple(map(int, t)) for t in re.findall(r"attention_forward<T, D, (\d+), (\d+), (\d+)>", block)}
    backward = {tuple(map(int, t)) for t in re.findall(r"attention_backward<T, D, (\d+), (\d+), (\d+)>", block)}
    assert forward == set(FORWARD_TILES) and backward == set(BACKWARD_TILES)
    types = set(re.findall(r"ITNET_FLASH\((\w+), (\d+)\)", block))
    assert types == {(PRECISIONS[p][0], str(d)) for p in PRECISIONS for d in HEAD_DIMS}


# ------------------------------------------------------------------------------ the kernels on the CPU emulator

class Emulator:
    """The built emulator: runs one kernel of attention_mma.cu over its whole grid (EMULATOR_MAIN's driver)."""

    def __init__(self, binary, workdir):
        self.binary, self.workdir = binary, workdir

    def launch(self, kernel, precision, d, tiles, sizes, scale, arrays, outputs, eager=False):
        """Write ``arrays`` (name -> array), run ``kernel`` with ``tiles`` (a Tiles, or None for the
        helper kernels), read ``outputs`` (name -> dtype). sizes: (N, M, B H, causal, window); eager:
        cp.async copies land when issued (else as late as the waits allow)."""
        for name, a in arrays.items():
            np.ascontiguousarray(a).tofile(self.workdir / f"{name}.bin")
        n, m, bh, causal, window = sizes
        shape, shared = ((0, 0, 0), 0) if tiles is None else (tiles[:3], tiles.shared_bytes)
        cmd = [str(self.binary), kernel, precision, str(d), *map(str, shape), str(n), str(m), str(bh),
               str(int(causal)), str(-1 if window is None else window), repr(float(scale)), str(shared),
               str(self.workdir)]
        env = dict(os.environ, EMU_EAGER_COPIES="1") if eager else {k: v for k, v in os.environ.items()
                                                                   if k != "EMU_EAGER_COPIES"}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, env=env)
        assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stderr}"
        return {name: np.fromfile(self.workdir / f"{name}.bin", dtype) for name, dtype in outputs.items()}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no host C++ compiler (g++, c++ or clang++) to build the CUDA emulator")
    build = tmp_path_factory.mktemp("cuda_emulator")
    (build / "emu_ptx.h").write_text(EMULATOR_PTX, encoding="utf-8")
    (build / "emu_main.cpp").write_text(EMULATOR_MAIN, encoding="utf-8")
    cmd = [cxx, "-std=c++17", "-O2", "-w", f"-I{build}", f'-DKERNEL_SOURCE="{KERNEL_SOURCE}"',
           str(build / "emu_main.cpp"), "-o", str(build / "emu")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"the emulator (with attention_mma.cu) does not build:\n{proc.stderr[-4000:]}"
    return Emulator(build / "emu", build)


def emulate(emulator, precision, raw, scale, causal, window, ftiles, btiles, eager=False):
    """flash_forward and flash_backward's launches (forward; delta, backward from a zeroed dq buffer,
    cast) on the emulator. raw: 16-bit q, k, v, dout (B, H, N|M, d). Returns float64 outputs."""
    q, k, v, dout = (np.ascontiguousarray(a).view(np.uint16) for a in raw)
    B, H, n, d = q.shape
    m = k.shape[2]
    sizes = (n, m, B * H, causal, window)
    got = emulator.launch("forward", precision, d, ftiles, sizes, scale, {"q": q, "k": k, "v": v},
                          {"out": np.uint16, "lse": np.float32}, eager)
    out = got["out"]
    delta = emulator.launch("delta", precision, d, None, sizes, scale, {"out": out, "dout": dout}, {"delta": np.float32})
    grads = emulator.launch("backward", precision, d, btiles, sizes, scale,
                            {"q": q, "k": k, "v": v, "dout": dout, "lse": got["lse"], "delta": delta["delta"]},
                            {"dq_acc": np.float32, "dk": np.uint16, "dv": np.uint16}, eager)
    dq = emulator.launch("cast", precision, d, None, sizes, scale, {"dq_acc": grads["dq_acc"]}, {"dq": np.uint16})
    as16 = np.float16 if precision == "float16" else np.uint16

    def back(a, shape):
        return decode(a.view(as16).reshape(shape), precision)
    return {"out": back(out, q.shape), "lse": got["lse"].reshape(B, H, n).astype(np.float64),
            "dq": back(dq["dq"], q.shape), "dk": back(grads["dk"], k.shape), "dv": back(grads["dv"], k.shape)}


EMULATED = [   # precision, B, H, N, M, d, causal, window, forward tiles, backward tiles, copies land eagerly
    ("float16", 1, 2, 200, 130, 64, True, None, (128, 64, 2), (64, 64, 2), False),   # N > M, ragged edges
    ("float16", 1, 2, 200, 130, 64, True, None, (128, 64, 2), (64, 64, 2), True),
    ("float16", 1, 1, 97, 211, 128, False, 40, (64, 64, 2), (64, 64, 1), True),      # band tiles skipped both ways
    ("bfloat16", 1, 1, 150, 20, 64, False, 17, (64, 64, 1), (64, 64, 2), False),     # rows with an empty support
    ("bfloat16", 1, 1, 130, 260, 128, True, 70, (128, 64, 2), (64, 64, 2), False),
    ("float16", 2, 1, 64, 64, 128, False, None, (64, 64, 1), (64, 64, 1), True),     # whole tiles: no mask
    ("bfloat16", 1, 1, 1, 1, 64, True, None, (64, 64, 2), (64, 64, 1), False),
    ("float16", 1, 1, 33, 0, 64, False, None, (128, 64, 2), (64, 64, 2), False),     # no sources at all
]


@pytest.mark.parametrize("precision, B, H, n, m, d, causal, window, fshape, bshape, eager", EMULATED)
def test_kernels_on_the_emulator_match_the_float64_reference(emulator, precision, B, H, n, m, d, causal, window,
                                                              fshape, bshape, eager):
    raw, (q, k, v, dout) = inputs(precision, (B, H, n, d), (B, H, m, d), seed=n * 1000 + m)
    scale = 1 / math.sqrt(d)
    got = emulate(emulator, precision, raw, scale, causal, window, tiles_of(d, *fshape),
                  tiles_of(d, *bshape, backward=True), eager)
    want, bounds, slack = reference(q, k, v, dout, scale, causal, window)
    assert_close(got, want, bounds, slack, precision)


def test_the_emulators_rounding_matches_numpy(emulator):
    """The emulator's cvt.rn (EMULATOR_PTX) against NumPy's float16 cast and bf16_bits: ties to even,
    subnormals, overflow to infinity, signed zero."""
    rng = np.random.default_rng(0)
    h = np.arange(0, 0x7BFF, 7, dtype=np.uint16).view(np.float16)          # finite float16 values
    f16_ties = (h.astype(np.float32) + np.nextafter(h, np.float16(np.inf)).astype(np.float32)) / 2
    bf16_ties = ((np.arange(0x3F00, 0x4100, dtype=np.uint32) << 16) | 0x8000).view(np.float32)
    x = np.concatenate([rng.standard_normal(2000).astype(np.float32) * np.float32(1e3), f16_ties, -f16_ties, bf16_ties,
                        np.float32([0.0, -0.0, 65504, 65519.99, 65520, 1e-8, 3e-8, -6.1e-5, 2 ** -24, 2 ** -25, 1e30])])
    got = emulator.launch("convert", "float16", 64, None, (x.size, 0, 0, False, None), 1.0, {"x": x},
                          {"f16": np.uint16, "bf16": np.uint16})
    with np.errstate(over="ignore"):                                        # 1e30 -> inf, as cvt.rn does
        np.testing.assert_array_equal(got["f16"], x.astype(np.float16).view(np.uint16))
    np.testing.assert_array_equal(got["bf16"], bf16_bits(x))


# ------------------------------------------------------------------------------ on a GPU

@pytest.fixture
def cp():
    from itnet_np.autograd.backend import cupy_module
    return cupy_module()


def test_poisoned_allocations_fill_nan_bytes_and_restore():
    """With a NumPy stand-in for CuPy: inside the block every empty / empty_like array is all NaN
    (float16 and float32 alike); after it, the original functions are back."""
    import types
    fake = types.SimpleNamespace(empty=np.empty, empty_like=np.empty_like, uint8=np.uint8)
    with poisoned_allocations(fake):
        assert np.isnan(fake.empty((3, 4), np.float32)).all()
        assert np.isnan(fake.empty_like(np.zeros(5, np.float16))).all()
    assert fake.empty is np.empty and fake.empty_like is np.empty_like


@pytest.fixture
def poisoned(cp):
    """Every cupy.empty / empty_like comes back filled with NaN bytes (attention_cupy.poisoned_allocations)."""
    with poisoned_allocations(cp):
        yield


def torch_errors(cp, precision, raw, scale, keep, want):
    """Max |error| of torch SDPA at the same precision on the same 16-bit inputs (out, dq, dk, dv), or
    None without torch on a GPU. Only for supports without empty rows (torch gives NaN there)."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    dtype = torch.float16 if precision == "float16" else torch.bfloat16
    q, k, v, dout = (torch.from_dlpack(cp.asarray(np.ascontiguousarray(a).view(np.int16))).view(dtype) for a in raw)
    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    mask = torch.as_tensor(keep, device=q.device)
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    out.backward(dout)
    got = {"out": out, "dq": q.grad, "dk": k.grad, "dv": v.grad}
    return {name: float(np.abs(t.detach().double().cpu().numpy() - want[name]).max(initial=0.0)) for name, t in got.items()}


DEVICE = [   # precision, B, H, N, M, d, causal, window
    ("float16", 2, 3, 256, 256, 64, False, None),
    ("float16", 1, 2, 300, 200, 128, True, None),
    ("float16", 1, 2, 130, 513, 64, False, 100),
    ("bfloat16", 2, 2, 257, 257, 128, True, 64),
    ("bfloat16", 1, 1, 70, 20, 64, False, 17),      # rows with an empty support
    ("float16", 1, 1, 1, 1, 128, True, None),
    ("bfloat16", 1, 3, 1000, 1100, 64, True, None),
]


@pytest.mark.gpu
@pytest.mark.parametrize("precision, B, H, n, m, d, causal, window", DEVICE)
def test_flash_attention_on_the_device_matches_the_float64_reference(cp, poisoned, precision, B, H, n, m, d, causal,
                                                                     window):
    from itnet_np.gpu.attention_cupy import flash_backward, flash_forward
    raw, (q, k, v, dout) = inputs(precision, (B, H, n, d), (B, H, m, d), seed=n + 7 * m)
    scale = 1 / math.sqrt(d)
    want, bounds, slack = reference(q, k, v, dout, scale, causal, window)
    keep = band(n, m, causal, window)
    dq_, dk_, dv_ = (cp.asarray(a) for a in raw[:3])
    do_ = cp.asarray(raw[3])
    kw = {"scale": scale, "causal": causal, "window": window, "precision": precision}
    out, lse = flash_forward(dq_, dk_, dv_, **kw)
    dq, dk, dv = flash_backward(dq_, dk_, dv_, out, lse, do_, **kw)
    got = {"out": decode(cp.asnumpy(out), precision), "lse": cp.asnumpy(lse).astype(np.float64),
           "dq": decode(cp.asnumpy(dq), precision), "dk": decode(cp.asnumpy(dk), precision),
           "dv": decode(cp.asnumpy(dv), precision)}
    assert_close(got, want, bounds, slack, precision)
    if keep.any(-1).all():                                 # FlashAttention's rule: within 2x torch's error
        peer = torch_errors(cp, precision, raw, scale, keep, want)
        if peer is not None:
            for name in ("out", "dq", "dk", "dv"):
                ours = float(np.abs(got[name] - want[name]).max())
                assert ours <= 2 * peer[name] + 1e-6 * max(1.0, float(np.abs(want[name]).max())), (name, ours, peer)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", sorted(PRECISIONS))
@pytest.mark.parametrize("d", HEAD_DIMS)
def test_every_tile_shape_on_the_device(cp, poisoned, precision, d):
    from itnet_np.gpu.attention_cupy import flash_backward, flash_forward, shared_limit
    raw, (q, k, v, dout) = inputs(precision, (1, 2, 197, d), (1, 2, 150, d), seed=d)
    scale, causal, window = 0.1, True, 90
    want, bounds, slack = reference(q, k, v, dout, scale, causal, window)
    args = [cp.asarray(a) for a in raw]
    limit = shared_limit(cp)
    for fshape in FORWARD_TILES:
        for bshape in BACKWARD_TILES:
            ft, bt = tiles_of(d, *fshape), tiles_of(d, *bshape, backward=True)
            if max(ft.shared_bytes, bt.shared_bytes) > limit:
                continue
            kw = {"scale": scale, "causal": causal, "window": window, "precision": precision}
            out, lse = flash_forward(*args[:3], tiles=ft, **kw)
            dq, dk, dv = flash_backward(*args[:3], out, lse, args[3], tiles=bt, **kw)
            got = {"out": decode(cp.asnumpy(out), precision), "lse": cp.asnumpy(lse).astype(np.float64),
                   "dq": decode(cp.asnumpy(dq), precision), "dk": decode(cp.asnumpy(dk), precision),
                   "dv": decode(cp.asnumpy(dv), precision)}
            assert_close(got, want, bounds, slack, precision)


@pytest.mark.gpu
def test_the_engine_node_gives_the_flash_gradients(cp, poisoned):
    from itnet_np.gpu.attention_cupy import cupy_attention

    import itnet_np as itn
    raw, (q, k, v, dout) = inputs("float16", (2, 3, 96, 64), (2, 3, 80, 64), seed=5)
    want, bounds, slack = reference(q, k, v, dout, 0.125, True, None)
    tq, tk, tv = (itn.tensor(cp.asarray(a), requires_grad=True) for a in raw[:3])
    out = cupy_attention(tq, tk, tv, scale=0.125, causal=True)
    (out * cp.asarray(raw[3])).sum().backward()
    got = {"out": cp.asnumpy(out.data).astype(np.float64), "dq": cp.asnumpy(tq.grad.data).astype(np.float64), "dk": cp.asnumpy(tk.grad.data).astype(np.float64),
           "dv": cp.asnumpy(tv.grad.data).astype(np.float64)}
    assert_close(got, want, bounds, slack, "float16")


@pytest.mark.gpu
def test_the_cupy_plan_runs_a_float16_call(cp, poisoned):
    """An IntegralTransform call with float16 device arrays through plan_cupy: the plan's result is the
    attention of its own q, k, v."""
    from dataclasses import replace

    from itnet_np.gpu import plan_cupy

    from itnet_np import transform as T
    from itnet_np.transform import planner
    from itnet_np.transform.kernels.base import Projection
    kernel = T.DotProductKernel(8, heads=2, head_dim=64, rng=0, dtype=np.float32)
    op = T.IntegralTransform(8, 8, kernel, embed_dim=128, normalization="softmax", support="causal", window=20,
                             backend="dense", rng=1, dtype=np.float32)
    seen = []
    T.register_backend("_capture", lambda call: seen.append(call) or planner.dense(call))
    try:
        op.backend = "_capture"
        op(np.random.default_rng(0).standard_normal((2, 150, 8)).astype(np.float32))
    finally:
        planner._BACKENDS.pop("_capture")
    call = seen[-1]
    q, k, v = (cp.asarray(np.asarray(t.data, np.float16)) for t in (call.proj.query["q"], call.proj.source["k"],
                                                                    call.values))
    call = replace(call, proj=Projection({**call.proj.query, "q": q}, {**call.proj.source, "k": k}), values=v)
    answer = plan_cupy.plan(call)
    assert isinstance(answer, planner.Plan), answer
    out = cp.asnumpy(answer.run()).astype(np.float64)
    q64, k64, v64 = (cp.asnumpy(a).astype(np.float64) for a in (q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v))
    want, bounds, slack = reference(q64, k64, v64, np.zeros_like(q64), kernel.scale, True, 20)
    assert_close({"out": out}, want, bounds, slack, "float16")


# ------------------------------------------------------------------------------ the emulator's C++ source
# EMULATOR_MAIN is the execution model and the driver; EMULATOR_PTX replaces attention_mma.cu's inline
# assembly (the .cu includes it under ITNET_HOST_EMULATION). Built by the ``emulator`` fixture.

EMULATOR_MAIN = r"""// Host emulation of the CUDA execution model, enough to run gpu/attention_mma.cu on a CPU (no CUDA
// toolkit needed). One CTA at a time; its threads are cooperative fibers (ucontext) on one OS thread,
// switched only at barriers, so __syncthreads, __syncwarp, shuffles and the warp-collective PTX
// instructions (emu_ptx.h) behave as on a device. Shared memory starts as 0xFF bytes (NaN in every
// float format used), and the launch's declared dynamic shared memory is enforced: a copy, ldmatrix or
// write beyond it fails the run, which checks attention_cupy.py's shared-memory sizes.
#include <ucontext.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

struct Dim3 { unsigned x, y, z; };
Dim3 threadIdx, blockIdx, blockDim, gridDim;
constexpr size_t SHARED_BYTES = 256 * 1024;
alignas(128) unsigned char smem[SHARED_BYTES];

namespace emu {
[[noreturn]] void fail(const char* what) {
    std::fprintf(stderr, "emulator: %s (block %u,%u thread %u)\n", what, blockIdx.x, blockIdx.y, threadIdx.x);
    std::exit(3);
}

constexpr int MAX_THREADS = 256;
struct Copy { unsigned dst; const unsigned char* src; int bytes; bool valid; };
struct Fiber {
    ucontext_t ctx;
    std::vector<char> stack;
    bool done = false;
    std::vector<Copy> open;                          // cp.async issued, not committed
    std::vector<std::vector<Copy>> groups;           // committed groups, not waited for
};
struct Barrier { int arrived = 0; long generation = 0; };
struct Exchange {                                    // one warp's registers, for the collectives
    float f[32];
    unsigned addr[32], a[32][4], b[32][2];
    float A[16][16], B[16][8];
    bool built;
};

Fiber fibers[MAX_THREADS];
Barrier block_barrier, warp_barrier[MAX_THREADS / 32];
Exchange exchange[MAX_THREADS / 32];
ucontext_t scheduler;
int current = 0, nthreads = 0;
long progress = 0, releases = 0;
size_t declared_shared = 0;
bool eager_copies = false;                           // cp.async lands at the issue (else at its wait)
std::function<void()> body;

void yield() { swapcontext(&fibers[current].ctx, &scheduler); }

void wait(Barrier& b, int participants) {
    const long generation = b.generation;
    ++progress;
    if (++b.arrived == participants) {
        b.arrived = 0;
        ++b.generation;
        ++releases;
    } else {
        while (b.generation == generation) yield();
    }
}

void warp_sync() {
    if (nthreads % 32) fail("a warp-collective operation in a block that is not whole warps");
    wait(warp_barrier[current / 32], 32);
}
int lane() { return current & 31; }
Exchange& mine() { return exchange[current / 32]; }

unsigned short shared16(unsigned addr) {
    if (addr + 2 > declared_shared) fail("ldmatrix: a read beyond the launch's shared memory");
    unsigned short v;
    std::memcpy(&v, smem + addr, 2);
    return v;
}

void land(const std::vector<Copy>& copies) {
    for (const Copy& c : copies) {
        if (c.valid) std::memcpy(smem + c.dst, c.src, c.bytes);
        else std::memset(smem + c.dst, 0, c.bytes);
    }
}

void trampoline() {
    body();
    Fiber& f = fibers[current];
    if (!f.open.empty() || !f.groups.empty()) fail("a thread exited with cp.async copies not waited for");
    f.done = true;
    ++progress;
}

// Run one CTA of `threads` threads (blockIdx set by the caller) to completion.
void run_block(int threads, const std::function<void()>& fn) {
    if (threads > MAX_THREADS) fail("too many threads per block");
    nthreads = threads;
    body = fn;
    std::memset(smem, 0xFF, SHARED_BYTES);
    block_barrier = Barrier{};
    for (auto& b : warp_barrier) b = Barrier{};
    for (int t = 0; t < threads; ++t) {
        Fiber& f = fibers[t];
        f.done = false;
        f.open.clear();
        f.groups.clear();
        f.stack.resize(256 * 1024);
        getcontext(&f.ctx);
        f.ctx.uc_stack.ss_sp = f.stack.data();
        f.ctx.uc_stack.ss_size = f.stack.size();
        f.ctx.uc_link = &scheduler;
        makecontext(&f.ctx, trampoline, 0);
    }
    blockDim = Dim3{unsigned(threads), 1, 1};
    // Round robin: every thread one step (to its next barrier) per pass, the warps in lockstep. Eager
    // mode favours the lowest threads instead: after every barrier release the pass starts again at
    // thread 0, so warp 0 runs as far ahead of the others as the barriers allow.
    for (int alive = threads; alive > 0;) {
        const long before = progress;
        alive = 0;
        for (int t = 0; t < threads; ++t) {
            if (fibers[t].done) continue;
            const long released = releases;
            current = t;
            threadIdx = Dim3{unsigned(t), 0, 0};
            swapcontext(&scheduler, &fibers[t].ctx);
            alive += !fibers[t].done;
            if (eager_copies && (releases != released || fibers[t].done)) {
                alive = 1;
                break;
            }
        }
        if (alive && progress == before) fail("deadlock: every live thread waits at a barrier");
    }
    for (size_t b = declared_shared; b < SHARED_BYTES; ++b)
        if (smem[b] != 0xFF) fail("a write beyond the launch's shared memory");
}
}  // namespace emu

// ---------------------------------------------------------------------------- CUDA built-ins
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline float __int_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { return __int_as_float(i); }
inline size_t __cvta_generic_to_shared(const void* p) {
    return static_cast<size_t>(static_cast<const unsigned char*>(p) - smem);
}
inline void __syncthreads() { emu::wait(emu::block_barrier, emu::nthreads); }
inline void __syncwarp(unsigned = 0xFFFFFFFFu) { emu::warp_sync(); }
inline float __shfl_xor_sync(unsigned, float v, int mask) {
    emu::Exchange& x = emu::mine();
    x.f[emu::lane()] = v;
    emu::warp_sync();
    const float r = x.f[emu::lane() ^ mask];
    emu::warp_sync();
    return r;
}
inline float atomicAdd(float* p, float v) {   // fibers never switch inside a call: atomic
    const float old = *p;
    *p = old + v;
    return old;
}

#define ITNET_HOST_EMULATION "emu_ptx.h"
#include KERNEL_SOURCE

// ---------------------------------------------------------------------------- driver
// emu KERNEL PRECISION D ROWS COLS STAGES N M BH CAUSAL WINDOW SCALE SHARED DIR
//   forward: q, k, v -> out, lse;  delta: out, dout -> delta;  backward: q, k, v, dout, lse, delta ->
//   dq_acc (from zeros), dk, dv;  cast: dq_acc -> dq;  convert: x (float32) -> f16, bf16 (bits).
//   Arrays are raw little-endian files DIR/NAME.bin; outputs start poisoned (0xFF bytes, NaN).
struct Args {
    std::string kernel, dir;
    int n, m, bh, causal, window;
    float scale;
};

template <typename X> std::vector<X> load(const Args& a, const char* name, size_t count) {
    std::vector<X> x(count);
    FILE* f = std::fopen((a.dir + "/" + name + ".bin").c_str(), "rb");
    if (!f || std::fread(x.data(), sizeof(X), count, f) != count) emu::fail(name);
    std::fclose(f);
    return x;
}

template <typename X> std::vector<X> poisoned(size_t count) {
    std::vector<X> x(count);
    std::memset(x.data(), 0xFF, count * sizeof(X));
    return x;
}

template <typename X> void save(const Args& a, const char* name, const std::vector<X>& x) {
    FILE* f = std::fopen((a.dir + "/" + name + ".bin").c_str(), "wb");
    if (!f || std::fwrite(x.data(), sizeof(X), x.size(), f) != x.size()) emu::fail(name);
    std::fclose(f);
}

void launch(int gx, int gy, int threads, const std::function<void()>& block) {
    gridDim = Dim3{unsigned(gx), unsigned(gy), 1};
    for (int y = 0; y < gy; ++y)
        for (int x = 0; x < gx; ++x) {
            blockIdx = Dim3{unsigned(x), unsigned(y), 0};
            emu::run_block(threads, block);
        }
}

constexpr float LOG2E = 1.4426950408889634f;

template <typename T, int D, int R, int C, int S> int forward(const Args& a) {
    const size_t nq = size_t(a.bh) * a.n * D, nk = size_t(a.bh) * a.m * D;
    auto q = load<elem>(a, "q", nq), k = load<elem>(a, "k", nk), v = load<elem>(a, "v", nk);
    auto out = poisoned<elem>(nq);
    auto lse = poisoned<float>(size_t(a.bh) * a.n);
    launch((a.n + R - 1) / R, a.bh, R * 2, [&] {
        attention_forward<T, D, R, C, S>(q.data(), k.data(), v.data(), out.data(), lse.data(), a.n, a.m,
                                         a.scale * LOG2E, a.causal, a.window);
    });
    save(a, "out", out);
    save(a, "lse", lse);
    return 0;
}

template <typename T, int D> int delta(const Args& a) {
    const long long rows = (long long)a.bh * a.n;
    auto out = load<elem>(a, "out", rows * D), dout = load<elem>(a, "dout", rows * D);
    auto dl = poisoned<float>(rows);
    launch(int((rows + 3) / 4), 1, 128, [&] { attention_backward_delta<T, D>(out.data(), dout.data(), dl.data(), rows); });
    save(a, "delta", dl);
    return 0;
}

template <typename T, int D, int R, int C, int S> int backward(const Args& a) {
    const size_t nq = size_t(a.bh) * a.n * D, nk = size_t(a.bh) * a.m * D;
    auto q = load<elem>(a, "q", nq), k = load<elem>(a, "k", nk), v = load<elem>(a, "v", nk);
    auto dout = load<elem>(a, "dout", nq);
    auto lse = load<float>(a, "lse", size_t(a.bh) * a.n), dl = load<float>(a, "delta", size_t(a.bh) * a.n);
    std::vector<float> dq(nq, 0.f);
    auto dk = poisoned<elem>(nk), dv = poisoned<elem>(nk);
    launch((a.m + C - 1) / C, a.bh, C * 2, [&] {
        attention_backward<T, D, R, C, S>(q.data(), k.data(), v.data(), dout.data(), lse.data(), dl.data(), dq.data(),
                                          dk.data(), dv.data(), a.n, a.m, a.scale, a.scale * LOG2E, a.causal, a.window);
    });
    save(a, "dq_acc", dq);
    save(a, "dk", dk);
    save(a, "dv", dv);
    return 0;
}

template <typename T> int cast(const Args& a, int d) {
    const long long size = (long long)a.bh * a.n * d;
    auto src = load<float>(a, "dq_acc", size);
    auto dst = poisoned<elem>(size);
    launch(3, 1, 64, [&] { attention_dq_cast<T>(src.data(), dst.data(), size); });   // a grid-stride loop
    save(a, "dq", dst);
    return 0;
}

int convert(const Args& a) {
    auto x = load<float>(a, "x", a.n);
    std::vector<elem> h(a.n), b(a.n);
    for (int i = 0; i < a.n; ++i) {
        h[i] = flash::Elem<f16>::from_float(x[i]);
        b[i] = flash::Elem<bf16>::from_float(x[i]);
    }
    save(a, "f16", h);
    save(a, "bf16", b);
    return 0;
}

template <typename T, int D> int dispatch(const Args& a, int rows, int cols, int stages) {
    const std::string& k = a.kernel;
    if (k == "delta") return delta<T, D>(a);
    if (k == "cast") return cast<T>(a, D);
    if (k == "forward" && rows == 128 && cols == 64 && stages == 2) return forward<T, D, 128, 64, 2>(a);
    if (k == "forward" && rows == 64 && cols == 64 && stages == 2) return forward<T, D, 64, 64, 2>(a);
    if (k == "forward" && rows == 64 && cols == 64 && stages == 1) return forward<T, D, 64, 64, 1>(a);
    if (k == "backward" && rows == 64 && cols == 64 && stages == 2) return backward<T, D, 64, 64, 2>(a);
    if (k == "backward" && rows == 64 && cols == 64 && stages == 1) return backward<T, D, 64, 64, 1>(a);
    std::fprintf(stderr, "emulator: no kernel %s with tiles %d x %d, %d stage(s)\n", k.c_str(), rows, cols, stages);
    return 2;
}

int main(int argc, char** argv) {
    if (argc != 15) {
        std::fprintf(stderr, "usage: emu KERNEL PRECISION D ROWS COLS STAGES N M BH CAUSAL WINDOW SCALE SHARED DIR\n");
        return 2;
    }
    const Args a{argv[1], argv[14], std::atoi(argv[7]), std::atoi(argv[8]), std::atoi(argv[9]), std::atoi(argv[10]),
                 std::atoi(argv[11]), static_cast<float>(std::atof(argv[12]))};
    const std::string precision = argv[2];
    const int d = std::atoi(argv[3]), rows = std::atoi(argv[4]), cols = std::atoi(argv[5]), stages = std::atoi(argv[6]);
    emu::declared_shared = std::strtoul(argv[13], nullptr, 10);
    emu::eager_copies = std::getenv("EMU_EAGER_COPIES") != nullptr;
    if (emu::declared_shared > SHARED_BYTES) emu::fail("more shared memory than the emulator has");
    if (a.kernel == "convert") return convert(a);
    if (precision == "float16" && d == 64) return dispatch<f16, 64>(a, rows, cols, stages);
    if (precision == "float16" && d == 128) return dispatch<f16, 128>(a, rows, cols, stages);
    if (precision == "bfloat16" && d == 64) return dispatch<bf16, 64>(a, rows, cols, stages);
    if (precision == "bfloat16" && d == 128) return dispatch<bf16, 128>(a, rows, cols, stages);
    std::fprintf(stderr, "emulator: no precision %s with head dim %d\n", precision.c_str(), d);
    return 2;
}
"""

EMULATOR_PTX = r"""// The PTX instructions attention_mma.cu uses, on the host (included inside namespace flash, in place of
// the inline assembly). Written from the PTX ISA's text, not from the kernel:
//   mma.m16n8k16.row.col.f32.{f16,bf16}: groupID = lane >> 2, tig = lane % 4, two 16-bit elements per
//     32-bit register, the lower-indexed one in the low half;
//     A (16 x 16): a_i (i = 0..7): row groupID, +8 for i in {2, 3, 6, 7}; col 2 tig + (i & 1), +8 for i >= 4
//     B (16 x 8):  b_i (i = 0..3): row 2 tig + (i & 1), +8 for i >= 2; col groupID
//     C, D (16 x 8, f32): c_i (i = 0..3): row groupID, +8 for i >= 2; col 2 tig + (i & 1)
//   ldmatrix.m8n8.x4(.trans).b16: lanes 8i..8i+7 give the addresses of the 8 rows (16 bytes each) of
//     matrix i; register i of lane l gets row l / 4, elements 2 (l % 4) and 2 (l % 4) + 1; with .trans
//     elements (row 2 (l % 4), col l / 4) and (row 2 (l % 4) + 1, col l / 4)
//   cp.async.{cg,ca}.shared.global [dst], [src], size, src_size: src_size 0 writes zeros; a copy may
//     land at any time from its issue up to the cp.async.wait_group that covers its group: here it lands
//     at that wait (a read the waits do not cover sees the poison), or, with EMU_EAGER_COPIES set, at
//     once, while warp 0 runs ahead of the others (a copy into a buffer other warps still read, without
//     a barrier between, corrupts their reads)
//   cvt.rn.{f16,bf16}(x2).f32: round to nearest even (the x2 forms put the first source in the upper half)
inline unsigned short float_to_f16(float f) {
    if (std::isnan(f)) return 0x7E00;
    const unsigned short sign = std::signbit(f) ? 0x8000 : 0;
    const double a = std::fabs(static_cast<double>(f));
    if (a >= 65520.0) return sign | 0x7C00;                          // rounds to infinity
    if (a < std::ldexp(1.0, -14))                                    // subnormal: m 2^-24
        return sign | static_cast<unsigned short>(std::rint(a * std::ldexp(1.0, 24)));
    int e;
    const double fr = std::frexp(a, &e);                             // a = fr 2^e, fr in [0.5, 1)
    const int mant = static_cast<int>(std::rint((2 * fr - 1) * 1024));   // 1024 carries into the exponent
    return sign | static_cast<unsigned short>(((e - 1 + 15) << 10) + mant);
}
inline float f16_to_float(unsigned short h) {
    const int e = (h >> 10) & 31, m = h & 1023;
    const double s = (h & 0x8000) ? -1.0 : 1.0;
    if (e == 0) return static_cast<float>(s * std::ldexp(m, -24));
    if (e == 31) return m ? NAN : static_cast<float>(s * INFINITY);
    return static_cast<float>(s * std::ldexp(m + 1024, e - 25));
}
inline unsigned short float_to_bf16(float f) {
    if (std::isnan(f)) return 0x7FC0;
    unsigned u;
    std::memcpy(&u, &f, 4);
    return static_cast<unsigned short>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
inline float bf16_to_float(unsigned short b) { return __uint_as_float(static_cast<unsigned>(b) << 16); }

template <> struct Elem<f16> {
    static unsigned pack(float lo, float hi) { return float_to_f16(lo) | (unsigned(float_to_f16(hi)) << 16); }
    static Pair unpack(unsigned u) { return Pair{f16_to_float(u & 0xFFFF), f16_to_float(u >> 16)}; }
    static elem from_float(float x) { return float_to_f16(x); }
};
template <> struct Elem<bf16> {
    static unsigned pack(float lo, float hi) { return float_to_bf16(lo) | (unsigned(float_to_bf16(hi)) << 16); }
    static Pair unpack(unsigned u) { return Pair{bf16_to_float(u & 0xFFFF), bf16_to_float(u >> 16)}; }
    static elem from_float(float x) { return float_to_bf16(x); }
};

inline float ex2(float x) { return std::exp2(x); }

template <typename T> void mma(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
    emu::Exchange& x = emu::mine();
    const int l = emu::lane();
    for (int i = 0; i < 4; ++i) x.a[l][i] = a[i];
    x.b[l][0] = b0;
    x.b[l][1] = b1;
    x.built = false;
    emu::warp_sync();
    if (!x.built) {                                  // the first lane past the barrier assembles A and B
        for (int L = 0; L < 32; ++L) {
            const int group = L >> 2, tig = L % 4;
            for (int i = 0; i < 8; ++i) {
                const Pair p = Elem<T>::unpack(x.a[L][i / 2]);
                const int row = (i < 2 || (i >= 4 && i < 6)) ? group : group + 8;
                x.A[row][tig * 2 + (i & 1) + (i >= 4 ? 8 : 0)] = i % 2 ? p.hi : p.lo;
            }
            for (int i = 0; i < 4; ++i) {
                const Pair p = Elem<T>::unpack(x.b[L][i / 2]);
                x.B[tig * 2 + (i & 1) + (i >= 2 ? 8 : 0)][group] = i % 2 ? p.hi : p.lo;
            }
        }
        x.built = true;
    }
    const int group = l >> 2, tig = l % 4;
    for (int i = 0; i < 4; ++i) {
        const int row = group + (i >= 2 ? 8 : 0), col = tig * 2 + (i & 1);
        double sum = c[i];
        for (int kk = 0; kk < 16; ++kk) sum += static_cast<double>(x.A[row][kk]) * x.B[kk][col];
        c[i] = static_cast<float>(sum);
    }
    emu::warp_sync();
}

inline void ldmatrix(unsigned (&r)[4], unsigned addr, bool trans) {
    if (addr % 16) emu::fail("ldmatrix: a row address that is not 16-byte aligned");
    emu::Exchange& x = emu::mine();
    const int l = emu::lane();
    x.addr[l] = addr;
    emu::warp_sync();
    for (int i = 0; i < 4; ++i) {
        const unsigned* rows = x.addr + 8 * i;
        const unsigned lo = trans ? emu::shared16(rows[2 * (l % 4)] + 2 * (l / 4)) : emu::shared16(rows[l / 4] + 4 * (l % 4));
        const unsigned hi = trans ? emu::shared16(rows[2 * (l % 4) + 1] + 2 * (l / 4)) : emu::shared16(rows[l / 4] + 4 * (l % 4) + 2);
        r[i] = lo | (hi << 16);
    }
    emu::warp_sync();
}
inline void ldmatrix_x4(unsigned (&r)[4], unsigned addr) { ldmatrix(r, addr, false); }
inline void ldmatrix_x4_trans(unsigned (&r)[4], unsigned addr) { ldmatrix(r, addr, true); }

inline void cp_async(unsigned dst, const void* src, bool valid, int bytes) {
    if (dst % bytes || dst + bytes > emu::declared_shared) emu::fail("cp.async: destination misaligned or beyond the launch's shared memory");
    if (valid && reinterpret_cast<size_t>(src) % bytes) emu::fail("cp.async: source misaligned");
    const emu::Copy copy{dst, static_cast<const unsigned char*>(src), bytes, valid};
    if (emu::eager_copies) emu::land({copy});        // the other extreme: landed at once
    else emu::fibers[emu::current].open.push_back(copy);
}
inline void cp_async16(unsigned dst, const void* src, bool valid) { cp_async(dst, src, valid, 16); }
inline void cp_async4(unsigned dst, const void* src, bool valid) { cp_async(dst, src, valid, 4); }
inline void cp_async_commit() {
    emu::Fiber& f = emu::fibers[emu::current];
    f.groups.push_back(std::move(f.open));
    f.open.clear();
}
template <int N> void cp_async_wait() {                // land every committed group but the newest N
    emu::Fiber& f = emu::fibers[emu::current];
    while (f.groups.size() > static_cast<size_t>(N)) {
        emu::land(f.groups.front());
        f.groups.erase(f.groups.begin());
    }
}
"""
