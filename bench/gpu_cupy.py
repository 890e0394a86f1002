"""The prepared GPU check of issue 10, tensor-core attention (gpu/attention_mma.cu): one call, at most
about 8 minutes, on a machine with a CUDA GPU of compute capability 8.0 or newer.

    python bench/gpu_cupy.py [--out DIR] [--budget 450] [--quick] [--no-tests] [--no-sanitizer]

In order, each step skipped with a message when the budget is spent or a tool is absent:
1. the device, and every kernel instantiation the wrappers can launch compiled once by NVRTC (a
   compile error shows here first; CuPy caches the binaries on disk for the later steps);
2. ``pytest -m gpu tests/gpu`` with ITNET_REQUIRE_GPU=1 (a skip is a failure there);
3. parity at real sizes with fresh random inputs: flash_forward / flash_backward against the float64
   reference on the device (attention_cupy.reference) with every cupy.empty / empty_like poisoned
   (NaN bytes), passing when nothing is NaN, every element is within the derived bound
   (attention_cupy.error_problems) and, with torch, the max error is within 2x torch SDPA's on the same
   16-bit inputs (FlashAttention's rule);
4. ``compute-sanitizer --tool memcheck | racecheck | synccheck`` on a small forward + backward (this
   script with --sanitize-case), when the binary exists;
5. timings (CUDA events after warm-up, medians) of the forward and the backward against torch SDPA's
   flash backend (torch.nn.attention.sdpa_kernel(SDPBackend.FLASH_ATTENTION)) at N = 512 .. 16384 with
   B N = 16384 tokens and H d = 2048, d = 64 and 128, causal and not, float16 (the FlashAttention-2
   protocol): FLOPs 4 B H N^2 d forward, 2.5 x that backward, halved when causal; TFLOP/s and ours / torch.
Results: DIR/gpu_cupy.json and DIR/gpu_cupy.md, rewritten atomically after every step; DIR is --out, else
$OUT when set, else bench/results. Exit 0 when every check passed, 1 otherwise, 2 without a GPU.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

TOKENS, HIDDEN = 16384, 2048                    # B N and H d of the timing protocol
PARITY = [   # precision, B, H, N, M, d, causal, window
    ("float16", 2, 4, 1024, 1024, 64, False, None),
    ("float16", 1, 4, 2048, 2048, 128, True, None),
    ("bfloat16", 2, 4, 1024, 1024, 128, False, None),
    ("bfloat16", 1, 2, 1531, 2100, 64, False, 256),
    ("float16", 1, 8, 4096, 4096, 64, True, None),
    ("float16", 1, 2, 3000, 777, 128, True, 500),
]
TOOLS = ("memcheck", "racecheck", "synccheck")


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    default = os.environ.get("OUT") or os.path.join(HERE, "results")
    p.add_argument("--out", default=default, help=f"directory for gpu_cupy.json / gpu_cupy.md (default {default})")
    p.add_argument("--budget", type=float, default=450.0, help="seconds for the whole run (default 450)")
    p.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    p.add_argument("--no-tests", action="store_true", help="skip pytest -m gpu")
    p.add_argument("--no-sanitizer", action="store_true", help="skip compute-sanitizer")
    p.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192, 16384],
                   help="sequence lengths N of the timings (default 512 .. 16384)")
    p.add_argument("--sanitize-case", action="store_true", help=argparse.SUPPRESS)   # the sanitizer's child run
    return p.parse_args(argv)


def no_gpu_reason():
    """'' when CuPy sees a device of compute capability 8.0 or newer, else why not (in words)."""
    from itnet_np.autograd.backend import why_no_gpu
    why = why_no_gpu()
    if why:
        return why
    from itnet_np.gpu.plan_cupy import device_problem
    return device_problem()


# ----------------------------------------------------------------------------------------- steps

def compile_all(results):
    """Every (precision, head dim, tile) kernel of attention_cupy's tables, compiled (and cached) once."""
    from itnet_np.gpu import attention_cupy as A
    from itnet_np.gpu._rawmodule import raw_kernel
    rows, failed = [], 0
    for ctype, _ in A.PRECISIONS.values():
        for d in A.HEAD_DIMS:
            exprs = [(f"attention_forward<{ctype}, {d}, {r}, {c}, {s}>", A.tiles_of(d, r, c, s).shared_bytes)
                     for r, c, s in A.FORWARD_TILES]
            exprs += [(f"attention_backward<{ctype}, {d}, {r}, {c}, {s}>",
                       A.tiles_of(d, r, c, s, backward=True).shared_bytes) for r, c, s in A.BACKWARD_TILES]
            exprs += [(f"attention_backward_delta<{ctype}, {d}>", 0)]
            exprs += [(f"attention_dq_cast<{ctype}>", 0)] if d == A.HEAD_DIMS[0] else []
            for expr, shared in exprs:
                t0 = time.perf_counter()
                try:
                    kernel = raw_kernel(A.SOURCE, expr, shared_bytes=shared)
                    row = {"kernel": expr, "seconds": time.perf_counter() - t0, "shared_bytes": shared,
                           "registers": getattr(kernel, "num_regs", None),
                           "local_bytes": getattr(kernel, "local_size_bytes", None)}
                except Exception as exc:  # noqa: BLE001  an NVRTC error: record it, go on
                    failed += 1
                    row = {"kernel": expr, "error": f"{type(exc).__name__}: {exc}"[:2000]}
                print(f"  {row}", flush=True)
                rows.append(row)
    results["compile"] = {"kernels": rows, "failed": failed}


def run_tests(clock, results):
    env = dict(os.environ, ITNET_REQUIRE_GPU="1")
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    limit = max(30.0, min(clock.left() - 220.0, 240.0))
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests/gpu"]
    print(f"$ ITNET_REQUIRE_GPU=1 {' '.join(cmd[2:])}  (limit {limit:.0f} s)", flush=True)
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit, check=False)
        tail = (proc.stdout + proc.stderr).strip().splitlines()
        print("\n".join(tail[-30:]), flush=True)
        results["pytest_gpu"] = {"returncode": proc.returncode, "summary": tail[-1] if tail else "",
                                 "tail": tail[-30:]}
    except subprocess.TimeoutExpired:
        print(f"  pytest -m gpu ran past {limit:.0f} s", flush=True)
        results["pytest_gpu"] = {"returncode": None, "summary": f"timed out after {limit:.0f} s"}


def torch_module():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _as_torch(torch, cp, a, precision):
    dtype = torch.float16 if precision == "float16" else torch.bfloat16
    return torch.from_dlpack(cp.ascontiguousarray(a).view(cp.int16)).view(dtype)


def torch_errors(torch, cp, precision, arrays, scale, causal, window, want):
    """Max |error| of torch SDPA (default backend choice) on the same 16-bit inputs: out, dq, dk, dv."""
    q, k, v, dout = (_as_torch(torch, cp, a, precision) for a in arrays)
    q, k, v = (t.clone().requires_grad_() for t in (q, k, v))
    if window is None:
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale)
    else:
        from itnet_np.gpu.attention_cupy import band
        mask = torch.as_tensor(band(q.shape[2], k.shape[2], causal, window), device=q.device)
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    out.backward(dout)
    got = {"out": out, "dq": q.grad, "dk": k.grad, "dv": v.grad}
    return {name: float(cp.abs(cp.asarray(t.detach().double()) - want[name]).max()) for name, t in got.items()}


def parity_case(cp, torch, precision, B, H, n, m, d, causal, window):
    """One parity row: flash_forward / flash_backward on fresh random 16-bit inputs, outputs poisoned,
    against the float64 reference (bounds) and torch SDPA's error (2x rule, when torch is there and no
    row has an empty support: torch gives NaN there)."""
    from itnet_np.gpu.attention_cupy import (
        band,
        bfloat16_bits,
        bfloat16_values,
        error_problems,
        flash_backward,
        flash_forward,
        poisoned_allocations,
        reference,
    )

    def value(a):
        return a.astype(cp.float64) if precision == "float16" else bfloat16_values(a).astype(cp.float64)
    rng = cp.random.default_rng(n * 7 + m)
    shapes = ((B, H, n, d), (B, H, m, d), (B, H, m, d), (B, H, n, d))
    normal = [rng.standard_normal(s, dtype=cp.float32) for s in shapes]
    arrays = [x.astype(cp.float16) for x in normal] if precision == "float16" else [bfloat16_bits(x) for x in normal]
    scale = 1 / math.sqrt(d)
    kw = {"scale": scale, "causal": causal, "window": window, "precision": precision}
    with poisoned_allocations(cp):
        out, lse = flash_forward(*arrays[:3], **kw)
        dq, dk, dv = flash_backward(*arrays[:3], out, lse, arrays[3], **kw)
    got = {"out": value(out), "lse": lse.astype(cp.float64), "dq": value(dq), "dk": value(dk), "dv": value(dv)}
    want, bounds, slack = reference(*(value(a) for a in arrays), scale, causal, window)
    problems = error_problems(got, want, bounds, slack, precision)
    ours = {name: float(cp.nan_to_num(cp.abs(got[name] - want[name]), nan=cp.inf).max())
            for name in ("out", "dq", "dk", "dv")}
    row = {"precision": precision, "B": B, "H": H, "N": n, "M": m, "d": d, "causal": causal, "window": window,
           "max_error": ours, "nan": any(bool(cp.isnan(got[x]).any()) for x in ("out", "dq", "dk", "dv")),
           "bound_problems": problems}
    if torch is not None and bool(band(n, m, causal, window, cp).any(-1).all()):
        peer = torch_errors(torch, cp, precision, arrays, scale, causal, window, want)
        row["torch_max_error"] = peer
        row["within_2x_torch"] = {name: ours[name] <= 2 * peer[name] + 1e-6 * max(1.0, float(cp.abs(want[name]).max()))
                                  for name in ours}
    row["ok"] = not row["nan"] and not problems and all(row.get("within_2x_torch", {}).values())
    return row


def parity(clock, results, cases):
    import cupy as cp
    torch = torch_module()
    rows = results["parity"] = []
    for case in cases:
        if not clock.enough(40, f"parity at N = {case[3]}, M = {case[4]}", results):
            return
        row = parity_case(cp, torch, *case)
        print(f"  parity {json.dumps(row)}", flush=True)
        rows.append(row)
        cp.get_default_memory_pool().free_all_blocks()


def sanitize_case():
    """The small forward + backward the sanitizer watches (child process)."""
    import cupy as cp
    from itnet_np.gpu.attention_cupy import flash_backward, flash_forward
    rng = cp.random.default_rng(0)
    for precision, d, causal, window in (("float16", 64, True, None), ("float16", 128, False, 40)):
        q, k, v, do = (rng.standard_normal(s, dtype=cp.float32).astype(cp.float16)
                       for s in ((1, 2, 150, d), (1, 2, 97, d), (1, 2, 97, d), (1, 2, 150, d)))
        kw = {"scale": 0.125, "causal": causal, "window": window, "precision": precision}
        out, lse = flash_forward(q, k, v, **kw)
        flash_backward(q, k, v, out, lse, do, **kw)
    cp.cuda.Device().synchronize()
    print("sanitize case done", flush=True)


def sanitizer_binary():
    found = shutil.which("compute-sanitizer")
    for root in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if not found and root and os.path.isfile(os.path.join(root, "bin", "compute-sanitizer")):
            found = os.path.join(root, "bin", "compute-sanitizer")
    return found


def sanitize(clock, results):
    binary = sanitizer_binary()
    if binary is None:
        print("  compute-sanitizer not found (PATH, $CUDA_HOME/bin, /usr/local/cuda/bin): skipped", flush=True)
        results["sanitizer"] = {"skipped": "compute-sanitizer not found on this machine"}
        return
    out = {}
    for tool in TOOLS:
        if not clock.enough(60, f"compute-sanitizer --tool {tool}", results):
            break
        cmd = [binary, "--tool", tool, "--error-exitcode", "99", sys.executable, os.path.abspath(__file__),
               "--sanitize-case"]
        print(f"$ {' '.join(cmd)}", flush=True)
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=min(150.0, clock.left() - 30),
                                  check=False)
            text = (proc.stdout + proc.stderr).strip().splitlines()
            summary = [line for line in text if "SUMMARY" in line]
            out[tool] = {"returncode": proc.returncode, "summary": summary, "tail": text[-12:],
                         "ok": proc.returncode == 0 and any("sanitize case done" in line for line in text)}
        except subprocess.TimeoutExpired:
            out[tool] = {"returncode": None, "ok": False, "summary": ["timed out"]}
        print(f"  {tool}: {out[tool].get('summary')} (exit {out[tool]['returncode']})", flush=True)
    results["sanitizer"] = out


def flops(B, H, n, d, causal):
    """The FlashAttention-2 protocol's forward FLOPs: 4 B H N^2 d, halved when causal."""
    return 4 * B * H * n * n * d / (2 if causal else 1)


def time_case(cp, torch, d, causal, n):
    """One row of timings (ms, TFLOP/s, ours / torch) at head dim d, N = n, B = TOKENS / N, H = HIDDEN / d."""
    from itnet_np.gpu.attention_cupy import flash_backward, flash_forward

    from gpu import cuda_time
    B, H = max(1, TOKENS // n), HIDDEN // d
    rng = cp.random.default_rng(n + d)
    q, k, v, do = (rng.standard_normal((B, H, n, d), dtype=cp.float32).astype(cp.float16) for _ in range(4))
    kw = {"scale": 1 / math.sqrt(d), "causal": causal}
    repeat = 10 if n <= 4096 else 5
    out, lse = flash_forward(q, k, v, **kw)
    fl = flops(B, H, n, d, causal)
    row = {"d": d, "causal": causal, "N": n, "B": B, "H": H,
           "fwd_ms": cuda_time(lambda: flash_forward(q, k, v, **kw), repeat=repeat),
           "bwd_ms": cuda_time(lambda: flash_backward(q, k, v, out, lse, do, **kw), repeat=repeat)}
    row["fwd_tflops"], row["bwd_tflops"] = fl / row["fwd_ms"] / 1e9, 2.5 * fl / row["bwd_ms"] / 1e9
    if torch is None:
        return row
    from torch.nn.attention import SDPBackend, sdpa_kernel
    tq, tk, tv = (torch.from_dlpack(a).requires_grad_() for a in (q, k, v))
    tdo = torch.from_dlpack(do)

    def t_fwd():
        return torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=causal, scale=kw["scale"])
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):          # torch's FlashAttention-2 kernels, no fallback
        t_out = t_fwd()
        row["torch_fwd_ms"] = cuda_time(t_fwd, repeat=repeat)
        row["torch_bwd_ms"] = cuda_time(lambda: torch.autograd.grad(t_out, (tq, tk, tv), tdo, retain_graph=True),
                                        repeat=repeat)
    row["torch_fwd_tflops"] = fl / row["torch_fwd_ms"] / 1e9
    row["torch_bwd_tflops"] = 2.5 * fl / row["torch_bwd_ms"] / 1e9
    row["fwd_ratio"] = row["fwd_tflops"] / row["torch_fwd_tflops"]
    row["bwd_ratio"] = row["bwd_tflops"] / row["torch_bwd_tflops"]
    return row


def timings(clock, results, sizes):
    import cupy as cp
    torch = torch_module()
    if torch is None:
        print("  torch with CUDA is not importable: timing ours only", flush=True)
    rows = results["timings"] = []
    for d in (64, 128):
        for causal in (False, True):
            for n in sizes:
                if not clock.enough(25, f"timings at d = {d}, causal = {causal}, N = {n}", results):
                    return
                row = time_case(cp, torch, d, causal, n)
                print(f"  {json.dumps(row)}", flush=True)
                rows.append(row)
                cp.get_default_memory_pool().free_all_blocks()


# ----------------------------------------------------------------------------------------- report

def markdown(results):
    from _common import markdown_table
    dev = results.get("device", {})
    parts = [(f"# Tensor-core attention (gpu/attention_mma.cu) on {dev.get('name', '?')} "
              f"(compute capability {dev.get('capability', '?')}, {dev.get('sms', '?')} SMs)"), ""]
    comp = results.get("compile")
    if comp:
        parts += [f"NVRTC: {len(comp['kernels'])} kernels compiled, {comp['failed']} failed.", ""]
    tests = results.get("pytest_gpu")
    if tests:
        parts += [f"pytest -m gpu tests/gpu (ITNET_REQUIRE_GPU=1): exit {tests['returncode']}, {tests['summary']}", ""]
    if results.get("parity"):
        rows = [[r["precision"], f"{r['B']}x{r['H']}", r["N"], r["M"], r["d"], r["causal"], r["window"],
                 " / ".join(f"{r['max_error'][x]:.2e}" for x in ("out", "dq", "dk", "dv")),
                 " / ".join(f"{r['torch_max_error'][x]:.2e}" for x in ("out", "dq", "dk", "dv"))
                 if "torch_max_error" in r else "-", "yes" if r["ok"] else "NO"] for r in results["parity"]]
        parts += ["## Parity against float64 (max |error| of out / dq / dk / dv)", "",
                  markdown_table(["precision", "B x H", "N", "M", "d", "causal", "window", "ours", "torch SDPA", "ok"],
                                 rows), ""]
    san = results.get("sanitizer")
    if san:
        lines = [f"- {tool}: {'ok' if r.get('ok') else 'FAILED'} ({'; '.join(r.get('summary') or [])})"
                 for tool, r in san.items() if isinstance(r, dict)]
        parts += ["## compute-sanitizer", ""] + (lines or [f"- skipped: {san.get('skipped')}"]) + [""]
    if results.get("timings"):
        def cell(r, key):
            return f"{r[key]:.1f}" if key in r else "-"
        rows = [[r["d"], "yes" if r["causal"] else "no", r["N"], f"{r['B']}x{r['H']}", cell(r, "fwd_tflops"),
                 cell(r, "torch_fwd_tflops"), f"{r['fwd_ratio']:.2f}" if "fwd_ratio" in r else "-",
                 cell(r, "bwd_tflops"), cell(r, "torch_bwd_tflops"),
                 f"{r['bwd_ratio']:.2f}" if "bwd_ratio" in r else "-"] for r in results["timings"]]
        parts += ["## Timings, float16 (TFLOP/s; FLOPs 4 B H N^2 d forward, x 2.5 backward, / 2 causal)", "",
                  markdown_table(["d", "causal", "N", "B x H", "fwd ours", "fwd torch flash", "fwd ratio",
                                  "bwd ours", "bwd torch flash", "bwd ratio"], rows), ""]
    if results.get("skipped"):
        parts += ["Skipped: " + "; ".join(results["skipped"]), ""]
    if results.get("errors"):
        parts += ["Errors: " + "; ".join(f"{k}: {v}" for k, v in results["errors"].items()), ""]
    return "\n".join(parts)


def write(out_dir, results):
    from itnet_np.io import atomic_write, write_json
    os.makedirs(out_dir, exist_ok=True)
    write_json(os.path.join(out_dir, "gpu_cupy.json"), results)
    with atomic_write(os.path.join(out_dir, "gpu_cupy.md"), "w") as f:
        f.write(markdown(results))


def failed(results):
    return bool(results.get("errors")) \
        or results.get("compile", {}).get("failed", 0) > 0 \
        or results.get("pytest_gpu", {}).get("returncode") not in (0, None) \
        or not all(row.get("ok") for row in results.get("parity", [])) \
        or not all(r.get("ok", True) for r in results.get("sanitizer", {}).values() if isinstance(r, dict))


def main(argv=None):
    args = parse(argv)
    if args.sanitize_case:
        sanitize_case()
        return 0
    reason = no_gpu_reason()
    if reason:
        print(f"bench/gpu_cupy.py: no GPU to run on here: {reason}. This script is the prepared check for a "
              "machine with a CUDA GPU of compute capability 8.0+ (CuPy installed); nothing was measured.",
              file=sys.stderr)
        return 2
    from _common import machine

    from gpu import Clock, device_facts
    clock = Clock(args.budget)
    results = {"machine": machine(), "device": device_facts(), "args": vars(args)}
    print(json.dumps(results["device"], indent=1), flush=True)
    quick = args.quick
    steps = [("compile", lambda: compile_all(results)),
             ("pytest -m gpu", (lambda: None) if args.no_tests else (lambda: run_tests(clock, results))),
             ("parity", lambda: parity(clock, results, PARITY[:2] if quick else PARITY)),
             ("compute-sanitizer", (lambda: None) if args.no_sanitizer else (lambda: sanitize(clock, results))),
             ("timings", lambda: timings(clock, results, [512, 1024] if quick else args.sizes))]
    for name, step in steps:
        print(f"== {name} ({clock.left():.0f} s left)", flush=True)
        try:
            step()
        except Exception as exc:  # noqa: BLE001  record and go on: one failing step must not lose the rest
            results.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"[:4000]
            print(f"  {name} failed: {type(exc).__name__}: {exc}", flush=True)
        write(args.out, results)
    print(f"results: {os.path.join(args.out, 'gpu_cupy.json')} and gpu_cupy.md", flush=True)
    print(markdown(results), flush=True)
    return 1 if failed(results) else 0


if __name__ == "__main__":
    sys.exit(main())
