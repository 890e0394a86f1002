"""Fused CPU kernels against their peers, interleaved in one process (issue 8, brief M).

    python bench/kernels.py [rate] [attention] [mlp] [overhead] [cold] [--repeat R] [--json PATH]

Run it with an interpreter that has torch installed for the torch columns.
Every measurement alternates our call and the peer's call R times and reports the medians, so a
load change on the shared machine hits both; the load average is recorded before and after.

- rate: this machine's float32 lane-operation rate (one multiply or add on one SIMD lane = one
  lane-op; an FMA counts 2), from a Numba loop of independent FMAs on L1-resident vectors, on
  numba.get_num_threads() threads. It is the unit of the MLP kernel's floor model (``mlp_floor``).
- attention: raw attention_forward (and + attention_backward) against torch SDPA, N=4096, H=8, d=64,
  float32, full and causal.
- mlp: raw mlp_forward (+ mlp_backward) against the torch eager pair-tensor kernel
  (act(a_i + b_j) W2^T, softmax, @ v), R=0, silu, softmax, dv=16, and against the floor model.
- overhead: IntegralTransform(DotProductKernel, softmax, causal) against
  itnet_np.transform.scaled_dot_product_attention on the same q, k, v (numba backend, forward).
- cold: first-call time of each fused kernel family (float32) in a fresh NUMBA_CACHE_DIR, in a
  subprocess.
"""
# ruff: noqa: B023  (each case's closures are timed within their own loop iteration)
import ast
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine


def load():
    return tuple(round(x, 2) for x in os.getloadavg())


def interleaved(fns, repeat, warmup=1):
    """Median wall time of each fn, calls alternated: fns[0], fns[1], ..., repeat times."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    samples = [[] for _ in fns]
    for _ in range(repeat):
        for s, fn in zip(samples, fns):
            t0 = time.perf_counter()
            fn()
            s.append(time.perf_counter() - t0)
    return [statistics.median(s) for s in samples]


# ----------------------------------------------------------------------------- lane-op rate

def lane_rate(seconds=1.0):
    """float32 lane-ops per second on numba.get_num_threads() threads (see the module docstring)."""
    import numba as nb

    # 'contract' only: with reassociation LLVM folds the 8 chained FMAs into one.
    @nb.njit(nogil=True, fastmath={"contract"})
    def fma_loop(x, reps):
        a, b = np.float32(0.999), np.float32(1e-3)
        for _ in range(reps):
            for i in range(x.shape[0]):          # vectorised over i; 8 dependent FMAs per element
                y = x[i]
                y = y * a + b; y = y * a + b; y = y * a + b; y = y * a + b
                y = y * a + b; y = y * a + b; y = y * a + b; y = y * a + b
                x[i] = y
        return x[0]

    n, reps = 512, 40000
    bufs = [np.ones(n, np.float32) for _ in range(nb.get_num_threads())]
    fma_loop(bufs[0], 1)
    best = 0.0
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        threads = [threading.Thread(target=fma_loop, args=(buf, reps)) for buf in bufs]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        best = max(best, 16 * n * reps * len(bufs) / (time.perf_counter() - t0))
    return best


def mlp_floor(N, M, K, H, rate, backward=False):
    """Floor of the MLP kernel: per-pair lane-ops (pre K, act 20K, s HK, exp 20H, softmax/values
    16H forward; the issue's model) x pairs / rate. Backward is counted as twice the forward."""
    ops = K + 20 * K + H * K + 20 * H + 16 * H
    return N * M * ops * (3 if backward else 1) / rate


# ----------------------------------------------------------------------------- attention

def bench_attention(repeat, N=4096, H=8, d=64):
    import torch
    import torch.nn.functional as F

    from itnet_np.transform.fused import attention_backward, attention_forward
    rng = np.random.default_rng(0)
    q, k, v, g = (rng.standard_normal((1, H, N, d)).astype(np.float32) for _ in range(4))
    tq, tk, tv = (torch.from_numpy(a).requires_grad_() for a in (q, k, v))
    tg = torch.from_numpy(g)
    scale = 1 / math.sqrt(d)
    rows = []
    for causal in (False, True):
        def ours_f():
            return attention_forward(q, k, v, scale, causal=causal)

        def torch_f():
            with torch.no_grad():
                return F.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)

        def ours_fb():
            out, st = attention_forward(q, k, v, scale, causal=causal)
            return attention_backward(q, k, v, out, st, g, scale, causal=causal)

        def torch_fb():
            tq.grad = tk.grad = tv.grad = None
            F.scaled_dot_product_attention(tq, tk, tv, is_causal=causal).backward(tg)

        err = float(np.abs(ours_f()[0] - torch_f().numpy()).max())
        l0 = load()
        f = interleaved([ours_f, torch_f], repeat)
        fb = interleaved([ours_fb, torch_fb], max(3, repeat // 2))
        rows.append({"N": N, "H": H, "d": d, "causal": causal, "fwd_ms": [1e3 * t for t in f],
                     "fwd_ratio": f[0] / f[1], "fwdbwd_ms": [1e3 * t for t in fb],
                     "fwdbwd_ratio": fb[0] / fb[1], "max_abs_diff": err, "load": [l0, load()]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


# ----------------------------------------------------------------------------- MLP kernel

def bench_mlp(repeat, rate, N=4096, dv=16, shapes=((16, 4), (32, 8))):
    import torch

    from itnet_np.transform.fused import mlp_backward, mlp_forward
    rows = []
    for K, H in shapes:
        rng = np.random.default_rng(K)
        f32 = np.float32
        a, b = (rng.standard_normal((1, N, K)).astype(f32) for _ in range(2))
        W2 = (rng.standard_normal((H, K)) / math.sqrt(K)).astype(f32)
        b2 = (0.1 * rng.standard_normal(H)).astype(f32)
        v, g = (rng.standard_normal((1, H, N, dv)).astype(f32) for _ in range(2))
        x0, W0, w = np.zeros((1, N, 0), f32), np.zeros((K, 0), f32), np.ones((1, N), f32)
        kw = {"act": "silu", "normalization": "softmax"}
        t = {n: torch.from_numpy(z).requires_grad_() for n, z in
             (("a", a), ("b", b), ("W2", W2), ("b2", b2), ("v", v))}

        def torch_fwd():
            act = torch.nn.functional.silu(t["a"][:, :, None, :] + t["b"][:, None, :, :])
            s = torch.einsum("bnmk,hk->bhnm", act, t["W2"]) + t["b2"][None, :, None, None]
            return torch.softmax(s, dim=-1) @ t["v"]

        def torch_f():
            with torch.no_grad():
                return torch_fwd()

        def torch_fb():
            for z in t.values():
                z.grad = None
            torch_fwd().backward(torch.from_numpy(g))

        def ours_f():
            return mlp_forward(a, b, x0, x0, W0, W2, b2, v, w, **kw)

        def ours_fb():
            out, st = mlp_forward(a, b, x0, x0, W0, W2, b2, v, w, **kw)
            return mlp_backward(a, b, x0, x0, W0, W2, b2, v, w, out, st, g, **kw)

        err = float(np.abs(ours_f()[0] - torch_f().numpy()).max())
        l0 = load()
        f = interleaved([ours_f, torch_f], repeat)
        fb = interleaved([ours_fb, torch_fb], max(3, repeat // 2))
        floor_f, floor_fb = mlp_floor(N, N, K, H, rate), mlp_floor(N, N, K, H, rate, backward=True)
        rows.append({"N": N, "K": K, "H": H, "fwd_ms": [1e3 * x for x in f],
                     "fwd_speedup": f[1] / f[0], "fwd_floor_ms": 1e3 * floor_f,
                     "fwd_floor_fraction": floor_f / f[0], "fwdbwd_ms": [1e3 * x for x in fb],
                     "fwdbwd_speedup": fb[1] / fb[0], "fwdbwd_floor_ms": 1e3 * floor_fb,
                     "fwdbwd_floor_fraction": floor_fb / fb[0], "max_abs_diff": err,
                     "load": [l0, load()]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


# ----------------------------------------------------------------------------- operator overhead

def bench_overhead(repeat, shapes=((4096, 8), (16384, 1)), d=64):
    """IntegralTransform(DotProductKernel, softmax, causal, numba) forward against the same work
    done by hand: the kernel's q, k and the value projections, the SDPA entry point, the head
    merge and the output projection (like for like: the difference is the operator's own work).
    Also the peak traced (tracemalloc) allocation of each call."""
    import tracemalloc

    import itnet_np as itn
    from itnet_np.autograd import ops
    from itnet_np.transform import DotProductKernel, IntegralTransform, scaled_dot_product_attention
    from itnet_np.transform.kernels.base import split_heads
    rows = []
    for N, H in shapes:
        C = H * d
        kern = DotProductKernel(C, heads=H, rng=0, dtype=np.float32)
        op = IntegralTransform(C, C, kern, normalization="softmax", support="causal", backend="numba",
                               rng=1, dtype=np.float32)
        x = itn.tensor(np.random.default_rng(1).standard_normal((1, N, C)).astype(np.float32))
        fns = _overhead_pair(itn, ops, op, kern, x, split_heads, scaled_dot_product_attention)
        err = float(np.abs(fns[0]().data - fns[1]().data).max())
        peaks = []
        for fn in fns:
            tracemalloc.start()
            fn()
            peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
            tracemalloc.stop()
        l0 = load()
        t = interleaved(fns, repeat)
        rows.append({"N": N, "H": H, "ms": [1e3 * z for z in t], "ratio": t[0] / t[1],
                     "peak_traced_mib": peaks, "max_abs_diff": err, "load": [l0, load()]})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _overhead_pair(itn, ops, op, kern, x, split_heads, sdpa):
    B, N, C = x.shape
    H, d = kern.heads, kern.head_dim

    def operator():
        with itn.no_grad():
            return op(x)

    def by_hand():
        with itn.no_grad():
            q, k, v = (ops.transpose(split_heads(x, W, b, H, d), (0, 2, 1, 3))
                       for W, b in ((kern.W_q, kern.b_q), (kern.W_k, kern.b_k), (op.W_V, None)))
            out = sdpa(q, k, v, is_causal=True, backend="numba", scale=kern.scale)
            merged = ops.reshape(ops.transpose(out, (0, 2, 1, 3)), (B, N, C))
            return ops.matmul(merged, ops.transpose(op.W_O)) + op.b
    return operator, by_hand


# ----------------------------------------------------------------------------- cold start

_COLD = r"""
import time
import numpy as np
from itnet_np.transform.fused import attention_backward, attention_forward, mlp_backward, mlp_forward
f32, rng = np.float32, np.random.default_rng(0)
q, k, v, g = (rng.standard_normal((1, 2, 70, 8)).astype(f32) for _ in range(4))
a, b = (rng.standard_normal((1, 70, 4)).astype(f32) for _ in range(2))
x0, W0, w = np.zeros((1, 70, 0), f32), np.zeros((4, 0), f32), np.ones((1, 70), f32)
W2, b2 = rng.standard_normal((2, 4)).astype(f32), np.zeros(2, f32)
calls = {"attention forward": lambda: attention_forward(q, k, v, 0.3, causal=True),
         "attention backward": lambda: attention_backward(q, k, v, *res, g, 0.3, causal=True),
         "mlp forward": lambda: mlp_forward(a, b, x0, x0, W0, W2, b2, v, w, act="silu"),
         "mlp backward": lambda: mlp_backward(a, b, x0, x0, W0, W2, b2, v, w, *res, g, act="silu")}
times = {}
for name, call in calls.items():
    t0, c0 = time.perf_counter(), time.process_time()
    out = call()
    times[name] = (time.perf_counter() - t0, time.process_time() - c0)
    if name.endswith("forward"):
        res = out
print(repr(times))
"""


def bench_cold(pythonpath=None):
    """First calls in a fresh NUMBA_CACHE_DIR: (wall, CPU) seconds per kernel family; compiling is
    single-threaded, so the CPU time is the load-independent figure. ``pythonpath``: another
    checkout's itnet_np (to time an older version in the same conditions)."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        l0 = load()
        res = subprocess.run([sys.executable, "-c", _COLD], env=env, capture_output=True, text=True,
                             check=True)
    times = ast.literal_eval(res.stdout.strip().splitlines()[-1])
    row = {"version": pythonpath or "this checkout", "wall_cpu_s": times,
           "total_wall_s": sum(t[0] for t in times.values()),
           "total_cpu_s": sum(t[1] for t in times.values()),
           "notices": res.stderr.count("compiling fused kernels"), "load": [l0, load()]}
    print(json.dumps(row), flush=True)
    return [row]


def main(argv):
    repeat = 7
    out = None
    if "--repeat" in argv:
        repeat = int(argv[argv.index("--repeat") + 1])
    if "--json" in argv:
        out = argv[argv.index("--json") + 1]
    what = [w for w in argv if w in ("rate", "attention", "mlp", "overhead", "cold")] or \
        ["rate", "attention", "mlp", "overhead", "cold"]
    result = {"machine": machine(), "load_start": load()}
    rate = None
    if "rate" in what or "mlp" in what:
        rate = lane_rate()
        result["lane_ops_per_s"] = rate
        print(f"lane-op rate: {rate / 1e9:.1f} G/s", flush=True)
    if "attention" in what:
        result["attention"] = bench_attention(repeat)
    if "mlp" in what:
        result["mlp"] = bench_mlp(repeat, rate)
    if "overhead" in what:
        result["overhead"] = bench_overhead(repeat)
    if "cold" in what:
        old = argv[argv.index("--old") + 1] if "--old" in argv else None
        result["cold"] = bench_cold() + (bench_cold(old) if old else [])
    result["load_end"] = load()
    if out:
        from itnet_np.io import write_json
        write_json(out, result)


if __name__ == "__main__":
    main(sys.argv[1:])
