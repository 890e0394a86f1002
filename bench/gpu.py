"""The prepared GPU check (issue 9): one call, at most about 8 minutes, on a machine with a CUDA GPU.

    python bench/gpu.py [--out PATH] [--budget 450] [--quick] [--no-tests]

In order, each step skipped with a message when the time budget is spent or a peer is absent:
1. the device (name, compute capability, SMs, clock, memory) and the FP32 rate it implies
   (SMs x FP32 lanes per SM x clock lane operations per second; x 2 for FMA FLOPs);
2. ``pytest -m gpu tests/gpu`` with ITNET_REQUIRE_GPU=1 (a skip is a failure there; the simulator
   tests are CI's and are not repeated);
3. parity at real sizes: the fused attention (forward and gradients) and the MLP-kernel transform
   against a dense CuPy float64 reference, with FlashAttention's rule: the float32 error at most 2x
   that of the dense float32 computation on the same device, and no NaN;
4. timings with CUDA events after warm-up (median of repeats): the fused attention forward and
   forward + backward against torch's unfused float32 math attention (softmax(q k^T s) v), torch
   SDPA and a dense CuPy implementation; the MLP kernel's pairs per second (K = 32, R = 0, H = 1,
   relu and tanh-GELU) against the pair bound of the FP32 units: lane operations per second over
   operations per pair, K (1 + R + c_act + H) + H (dv + 3) with c_act = 1 (relu) or 6 (tanh-GELU:
   the cube, the FMA, tanh, the add and two products); the warm launch overhead of one fused call.
The results go to a JSON file (``--out``; default $OUT/gpu.json when $OUT is set, else
bench/results/gpu.json), ready for BENCHMARKS.md. Without a GPU it stops at once with a message.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    out_dir = os.environ.get("OUT")
    default = os.path.join(out_dir, "gpu.json") if out_dir else os.path.join(HERE, "results", "gpu.json")
    p.add_argument("--out", default=default, help=f"JSON results file (default {default})")
    p.add_argument("--budget", type=float, default=450.0, help="seconds for the whole run (default 450)")
    p.add_argument("--quick", action="store_true", help="small sizes only (a smoke run)")
    p.add_argument("--no-tests", action="store_true", help="skip pytest -m gpu")
    p.add_argument("--attention-n", type=int, nargs="+", default=[1024, 4096, 8192],
                   help="sequence lengths for the attention timings (default 1024 4096 8192)")
    p.add_argument("--mlp-n", type=int, default=4096, help="N = M for the MLP-kernel timing (default 4096)")
    p.add_argument("--parity-n", type=int, default=2048, help="N for the attention parity check (default 2048; "
                   "the MLP parity uses N / 2)")
    return p.parse_args(argv)


def no_gpu_reason():
    """'' when CuPy sees a device and numba.cuda can launch kernels, else why not (in words)."""
    from itnet_np.autograd.backend import why_no_gpu
    why = why_no_gpu()
    if why:
        return why
    try:
        from numba import cuda
        if not cuda.is_available():
            return "numba.cuda sees no CUDA device (install numba-cuda: pip install 'itnet-np[gpu]')"
    except Exception as exc:  # noqa: BLE001
        return f"numba.cuda cannot load ({type(exc).__name__}: {exc})"
    return ""


class Clock:
    def __init__(self, budget):
        self.end = time.monotonic() + budget

    def left(self):
        return self.end - time.monotonic()

    def enough(self, seconds, what, results):
        if self.left() >= seconds:
            return True
        results.setdefault("skipped", []).append(f"{what}: {self.left():.0f} s left of the budget")
        print(f"  skipped {what}: budget nearly spent", flush=True)
        return False


def cuda_time(fn, repeat=10, warmup=2):
    """Median milliseconds of fn() between two CUDA events on the current stream, after warm-up."""
    import cupy as cp
    for _ in range(warmup):
        fn()
    cp.cuda.Device().synchronize()
    samples = []
    for _ in range(repeat):
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        samples.append(cp.cuda.get_elapsed_time(start, stop))
    return statistics.median(samples)


def device_facts():
    import cupy as cp
    props = cp.cuda.runtime.getDeviceProperties(0)
    major, minor = props["major"], props["minor"]
    lanes = 64 if (major, minor) in ((6, 0), (7, 0), (7, 5), (8, 0)) else 128   # FP32 lanes per SM
    lane_ops = props["multiProcessorCount"] * lanes * props["clockRate"] * 1e3
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return {"name": name, "capability": f"{major}.{minor}", "sms": props["multiProcessorCount"],
            "clock_mhz": props["clockRate"] / 1e3, "memory_gib": props["totalGlobalMem"] / 2 ** 30,
            "fp32_lanes_per_sm": lanes, "fp32_lane_ops_per_s": lane_ops, "fp32_peak_tflops": 2 * lane_ops / 1e12,
            "cupy": cp.__version__}


def run_tests(clock, results):
    env = dict(os.environ, ITNET_REQUIRE_GPU="1")
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    limit = max(30.0, min(clock.left() - 200.0, 240.0))
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests/gpu"]
    print(f"$ ITNET_REQUIRE_GPU=1 {' '.join(cmd[2:])}  (limit {limit:.0f} s)", flush=True)
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit, check=False)
        tail = (proc.stdout + proc.stderr).strip().splitlines()
        print("\n".join(tail[-25:]), flush=True)
        results["pytest_gpu"] = {"returncode": proc.returncode, "summary": tail[-1] if tail else ""}
    except subprocess.TimeoutExpired:
        print(f"  pytest -m gpu ran past {limit:.0f} s", flush=True)
        results["pytest_gpu"] = {"returncode": None, "summary": f"timed out after {limit:.0f} s"}


# ----------------------------------------------------------------------------------- references

def dense_attention(cp, q, k, v, scale, causal):
    """softmax(scale q k^T (+ causal mask)) v with CuPy (the dense path), q/k/v (B, H, N, d)."""
    s = cp.matmul(q, k.swapaxes(-1, -2)) * q.dtype.type(scale)
    if causal:
        n, m = s.shape[-2:]
        s = cp.where(cp.tril(cp.ones((n, m), bool)), s, -cp.inf)
    s = cp.exp(s - s.max(-1, keepdims=True))
    return cp.matmul(s / s.sum(-1, keepdims=True), v)


def dense_attention_grads(cp, q, k, v, scale, causal, dout):
    """(dq, dk, dv) of dense_attention by the textbook formulas (float64 reference)."""
    s = cp.matmul(q, k.swapaxes(-1, -2)) * scale
    if causal:
        n, m = s.shape[-2:]
        s = cp.where(cp.tril(cp.ones((n, m), bool)), s, -cp.inf)
    p = cp.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    dp = cp.matmul(dout, v.swapaxes(-1, -2))
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    return cp.matmul(ds, k) * scale, cp.matmul(ds.swapaxes(-1, -2), q) * scale, cp.matmul(p.swapaxes(-1, -2), dout)


def dense_mlp(cp, a, b, x, y, W, W2, b2, v, w):
    """The MLP-kernel transform (gpu/mlp_forward.py, softmax, full support) densely with CuPy."""
    pre = a[:, :, None, :] + b[:, None, :, :] + cp.einsum("bnr,bmr,kr->bnmk", x, y, W)
    act = 0.5 * pre * (1 + cp.tanh(math.sqrt(2 / math.pi) * (pre + 0.044715 * pre ** 3)))
    s = cp.einsum("bnmk,hk->bhnm", act, W2) + b2[None, :, None, None]
    e = w[:, None, None, :] * cp.exp(s - s.max(-1, keepdims=True))
    return cp.matmul(e / e.sum(-1, keepdims=True), v)


def rel_err(got, ref):
    import cupy as cp
    return float(cp.abs(got.astype(ref.dtype) - ref).max() / (cp.abs(ref).max() + 1e-30))


# ----------------------------------------------------------------------------------------- steps

def parity(clock, results, n):
    import cupy as cp
    from itnet_np.gpu.attention import attention_backward, attention_forward
    from itnet_np.gpu.mlp import mlp_forward
    rng = cp.random.default_rng(0)
    B, H, N, d = 1, 4, n, 64
    out = {}
    for causal in (False, True):
        q, k, v, do = (rng.standard_normal((B, H, N, d)) for _ in range(4))
        scale = 1 / math.sqrt(d)
        ref = dense_attention(cp, q, k, v, scale, causal)
        gref = dense_attention_grads(cp, q, k, v, scale, causal, do)
        f32 = [t.astype(cp.float32) for t in (q, k, v, do)]
        o32, st32 = attention_forward(*f32[:3], scale, causal=causal)
        g32 = attention_backward(*f32[:3], o32, st32, f32[3], scale, causal=causal)[:3]
        dense32 = dense_attention(cp, *f32[:3], scale, causal)
        g_dense32 = dense_attention_grads(cp, *f32[:3], scale, causal, f32[3])
        o64 = attention_forward(q, k, v, scale, causal=causal)[0]
        row = {"fused_f64_err": rel_err(o64, ref), "fused_f32_err": rel_err(o32, ref),
               "dense_f32_err": rel_err(dense32, ref), "nan": bool(cp.isnan(o32).any()),
               "grad_f32_err": [rel_err(g, r) for g, r in zip(g32, gref)],
               "grad_dense_f32_err": [rel_err(g, r) for g, r in zip(g_dense32, gref)]}
        row["ok"] = (not row["nan"] and row["fused_f64_err"] < 1e-10
                     and row["fused_f32_err"] <= 2 * row["dense_f32_err"] + 1e-7
                     and all(a <= 2 * b + 1e-6 for a, b in zip(row["grad_f32_err"], row["grad_dense_f32_err"])))
        out[f"attention_N{N}_{'causal' if causal else 'full'}"] = row
        print(f"  parity attention N={N} causal={causal}: {row}", flush=True)
        if not clock.enough(60, "the rest of the parity checks", results):
            results["parity"] = out
            return
    Bm, Nm, K, R, Hm, dv = 1, max(1, n // 2), 32, 4, 2, 16
    arrs = [rng.standard_normal(s) for s in ((Bm, Nm, K), (Bm, Nm, K), (Bm, Nm, R), (Bm, Nm, R), (K, R),
                                              (Hm, K), (Hm,), (Bm, Hm, Nm, dv))] + [rng.random((Bm, Nm)) + 0.5]
    ref = dense_mlp(cp, *arrs)
    o64 = mlp_forward(*arrs, act="gelu_tanh")[0]
    a32 = [t.astype(cp.float32) for t in arrs]
    o32 = mlp_forward(*a32, act="gelu_tanh")[0]
    d32 = dense_mlp(cp, *a32)
    row = {"fused_f64_err": rel_err(o64, ref), "fused_f32_err": rel_err(o32, ref), "dense_f32_err": rel_err(d32, ref),
           "nan": bool(cp.isnan(o32).any())}
    row["ok"] = not row["nan"] and row["fused_f64_err"] < 1e-10 and row["fused_f32_err"] <= 2 * row["dense_f32_err"] + 1e-7
    out[f"mlp_N{Nm}_K{K}"] = row
    print(f"  parity mlp N={Nm}: {row}", flush=True)
    results["parity"] = out


def _attention_case(cp, torch, q, k, v, do, scale, causal):
    """One row of attention timings (ms) on float32 (B, H, N, d) CuPy arrays."""
    from itnet_np.gpu.attention import attention_backward, attention_forward
    n = q.shape[2]
    row = {"N": n, "H": q.shape[1], "d": q.shape[3], "causal": causal}
    state = {}

    def fwd():
        state["o"], state["s"] = attention_forward(q, k, v, scale, causal=causal)

    def fwd_bwd():
        fwd()
        attention_backward(q, k, v, state["o"], state["s"], do, scale, causal=causal)
    row["fused_fwd_ms"] = cuda_time(fwd)
    row["fused_fwd_bwd_ms"] = cuda_time(fwd_bwd)
    row["cupy_dense_fwd_ms"] = cuda_time(lambda: dense_attention(cp, q, k, v, scale, causal))
    if torch is None:
        return row
    import torch.nn.functional as tF
    tq, tk, tv = (torch.from_dlpack(t) for t in (q, k, v))
    mask = torch.ones(n, n, dtype=torch.bool, device=tq.device).tril() if causal else None

    def math_attn():
        s = (tq @ tk.transpose(-1, -2)) * scale
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        return torch.softmax(s, -1) @ tv
    row["torch_math_fwd_ms"] = cuda_time(math_attn)
    row["torch_sdpa_fwd_ms"] = cuda_time(lambda: tF.scaled_dot_product_attention(tq, tk, tv, is_causal=causal,
                                                                                  scale=scale))
    row["speedup_vs_torch_math"] = row["torch_math_fwd_ms"] / row["fused_fwd_ms"]
    return row


def attention_timings(clock, results, sizes):
    import cupy as cp
    try:
        import torch
        if not torch.cuda.is_available():
            print("  torch sees no CUDA device: the torch peers are skipped", flush=True)
            torch = None
    except ImportError:
        torch = None
        print("  torch is not installed: the torch peers are skipped", flush=True)
    rows = []
    B, H, d = 1, 8, 64
    for n in sizes:
        if not clock.enough(45, f"attention timings at N = {n}", results):
            break
        rng = cp.random.default_rng(n)
        q, k, v, do = (rng.standard_normal((B, H, n, d), dtype=cp.float32) for _ in range(4))
        scale = 1 / math.sqrt(d)
        for causal in (False, True):
            row = _attention_case(cp, torch, q, k, v, do, scale, causal)
            print(f"  attention {row}", flush=True)
            rows.append(row)
    results["attention_timings"] = rows


def mlp_timing(clock, results, n, lane_ops):
    import cupy as cp
    from itnet_np.gpu.mlp import mlp_backward, mlp_forward
    rng = cp.random.default_rng(1)
    B, K, R, H, dv = 1, 32, 0, 1, 1
    shapes = ((B, n, K), (B, n, K), (B, n, R), (B, n, R), (K, R), (H, K), (H,), (B, H, n, dv))
    arrs = [rng.standard_normal(s, dtype=cp.float32) for s in shapes] + [cp.ones((B, n), cp.float32)]
    rows = []
    for act, c_act in (("relu", 1), ("gelu_tanh", 6)):
        if not clock.enough(40, f"the MLP-kernel timing ({act})", results):
            break
        out, stats = mlp_forward(*arrs, act=act)
        ms = cuda_time(lambda act=act: mlp_forward(*arrs, act=act), repeat=5)
        do = cp.ones_like(out)
        ms_bwd = cuda_time(lambda act=act, out=out, stats=stats, do=do: mlp_backward(*arrs, out, stats, do, act=act),
                           repeat=3)
        ops_per_pair = K * (1 + R + c_act + H) + H * (dv + 3)
        row = {"act": act, "N": n, "K": K, "R": R, "H": H, "dv": dv, "fwd_ms": ms, "bwd_ms": ms_bwd,
               "pairs_per_s": B * n * n / (ms * 1e-3), "ops_per_pair": ops_per_pair,
               "pair_bound_per_s": lane_ops / ops_per_pair}
        row["fraction_of_bound"] = row["pairs_per_s"] / row["pair_bound_per_s"]
        print(f"  mlp {row}", flush=True)
        rows.append(row)
    results["mlp_timing"] = rows


def launch_overhead(clock, results):
    import cupy as cp
    from itnet_np.gpu.attention import attention_forward
    if not clock.enough(15, "the launch overhead", results):
        return
    q = cp.random.default_rng(2).standard_normal((1, 1, 8, 8), dtype=cp.float32)
    attention_forward(q, q, q, 0.5)
    cp.cuda.Device().synchronize()
    calls = 200
    t0 = time.perf_counter()
    for _ in range(calls):
        attention_forward(q, q, q, 0.5)
    cp.cuda.Device().synchronize()
    wall = (time.perf_counter() - t0) / calls * 1e6
    events = cuda_time(lambda: attention_forward(q, q, q, 0.5), repeat=50) * 1e3
    results["launch_overhead_us"] = {"wall_per_call": wall, "cuda_events_per_call": events}
    print(f"  warm launch overhead: {wall:.1f} us per call (wall), {events:.1f} us (CUDA events)", flush=True)


def main(argv=None):
    args = parse(argv)
    reason = no_gpu_reason()
    if reason:
        print(f"bench/gpu.py: no GPU to run on here: {reason}. This script is the prepared check for a "
              "machine with a CUDA GPU (CuPy and numba-cuda installed); nothing was measured.", file=sys.stderr)
        return 2
    clock = Clock(args.budget)
    from _common import machine

    from itnet_np.io import write_json
    results = {"machine": machine(), "device": device_facts(), "args": vars(args)}
    print(json.dumps(results["device"], indent=1), flush=True)
    if not args.no_tests:
        run_tests(clock, results)
    steps = [("parity", lambda: parity(clock, results, 512 if args.quick else args.parity_n)),
             ("attention timings", lambda: attention_timings(clock, results,
                                                             [512, 1024] if args.quick else args.attention_n)),
             ("MLP timing", lambda: mlp_timing(clock, results, 1024 if args.quick else args.mlp_n,
                                               results["device"]["fp32_lane_ops_per_s"])),
             ("launch overhead", lambda: launch_overhead(clock, results))]
    for name, step in steps:
        print(f"== {name} ({clock.left():.0f} s left)", flush=True)
        try:
            step()
        except Exception as exc:  # noqa: BLE001  record and go on: one failing step must not lose the rest
            results.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
            print(f"  {name} failed: {type(exc).__name__}: {exc}", flush=True)
        write_json(args.out, results)
    print(f"results: {args.out}", flush=True)
    failed = results.get("errors") or (results.get("pytest_gpu", {}).get("returncode") not in (0, None)) or \
        not all(row.get("ok") for row in results.get("parity", {}).values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
