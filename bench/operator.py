"""Operator benchmark: fused vs dense attention and MLP-kernel transforms, against torch and NumPy.

    python bench/operator.py [--quick] [--cases PATTERNS] [--json bench/results/operator.json]

Every case (group, implementation, mode, shape; ``--list`` prints them) runs in a fresh subprocess
(bench/_operator_cases.run_case), so that its peak extra memory (RSS growth over a baseline taken
after imports, inputs and a warm-up call) belongs to one implementation and one case; times are
medians over repetitions. Groups (implementations in bench/_operator_impls.py):

- attention, B=1, d=64, (N, H) in (1024, 8), (4096, 8), (16384, 1), full and causal: itnet fused
  (the scaled_dot_product_attention entry point with backend='numba', when it exists, and the raw
  Numba kernels), itnet dense, torch SDPA (CPU), naive NumPy (forward only); fwd and fwd+bwd.
- mlp: the ITNet MLP kernel (inputs dp, f_i, f_j; silu; softmax; C=32, d=16 per head), hidden K
  and heads H in (16, 4), (32, 8), N in 1024, 4096: IntegralTransform with backend 'numba' (or the
  raw mlp kernels), backend 'dense', and torch eager building the (B, N, M, K) pair tensor.

Threads: the fused cases run with OPENBLAS_NUM_THREADS=1 (--fused-blas-threads): they split work
into tasks on numba.get_num_threads() threads and call BLAS on 64x64 tiles from each; a multi-
threaded OpenBLAS underneath made them 2-3x slower here. All other cases get os.cpu_count() BLAS
threads, and torch gets torch.set_num_threads(os.cpu_count()). Cases whose pair tensors are
estimated above --mem-limit-gib are skipped with the estimate as the reason. Ratios and targets
are computed from the itnet fused entry point when it ran, else from the raw kernels. Outputs (or
the gradient of q / x) of every implementation are cross-checked (column "outputs agree").

A full run takes about half an hour on 2 cores and needs about 8 GiB of free memory (dense and
torch-eager cases at N=4096); ``--quick`` takes about a minute.
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
# This file shares its name with the stdlib module 'operator': keep bench/ behind the stdlib.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE] + [_HERE]

import argparse
import json
import subprocess
import tempfile
import time

from _common import log, machine, markdown_table
from itnet_np.io import write_json
from _operator_cases import MIB, all_cases, case_id, estimate_bytes, run_case, select, shape_id

FUSED = ("itnet-fused", "itnet-fused-raw")        # preference order for ratios and targets
LABELS = {"itnet-fused": "itnet fused", "itnet-fused-raw": "itnet fused (raw kernels)",
          "itnet-dense": "itnet dense", "torch": "torch SDPA", "numpy": "NumPy naive",
          "torch-eager": "torch eager"}
TOL = {"float32": 1e-4, "float64": 1e-9}           # cross-check: |probe.(a - ref)| / ||ref||


def _env(spec, args):
    env = dict(os.environ)
    fused = spec["impl"] in FUSED
    blas = args.fused_blas_threads if fused else (args.blas_threads or os.cpu_count() or 1)
    env.update(OPENBLAS_NUM_THREADS=str(blas), MALLOC_MMAP_THRESHOLD_=str(128 * 1024),
               MALLOC_TRIM_THRESHOLD_=str(128 * 1024))
    return env


def _mem_available():
    """MemAvailable in bytes (None where /proc/meminfo is missing)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def run_one(spec, args):
    """Run one case in a fresh interpreter; the worker writes its result to a temporary file."""
    est, avail = estimate_bytes(spec), _mem_available()
    limit = min(args.mem_limit_gib * 1024 * MIB, 0.8 * avail if avail else float("inf"))
    if est is not None and est > limit:
        return {"id": case_id(spec), "spec": spec, "status": "skipped",
                "reason": f"estimated {est / 1024 / MIB:.1f} GiB > limit {limit / 1024 / MIB:.1f} GiB "
                          f"(--mem-limit-gib {args.mem_limit_gib}, 80% of MemAvailable)"}
    fd, out = tempfile.mkstemp(prefix="itnet-bench-", suffix=".json")
    os.close(fd)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec), "--worker-out", out,
           "--budget", str(args.budget), "--min-repeat", str(args.min_repeat)]
    try:
        proc = subprocess.run(cmd, env=_env(spec, args), capture_output=True, text=True, timeout=args.timeout,
                              check=False)
        with open(out) as fh:
            text = fh.read()
        if proc.returncode == 0 and text:
            return json.loads(text)
        why = f"worker exited with {proc.returncode}" + (" (killed: out of memory?)" if proc.returncode < 0 else "")
        return {"id": case_id(spec), "spec": spec, "status": "error", "reason": why,
                "stderr_tail": proc.stderr[-2000:]}
    except subprocess.TimeoutExpired:
        return {"id": case_id(spec), "spec": spec, "status": "error", "reason": f"timeout after {args.timeout} s"}
    finally:
        os.unlink(out)


# ----------------------------------------------------------------------------- summary
def _ok(results, group, impl, mode, sid):
    r = results.get(f"{group}/{impl}/{mode}/{sid}")
    return r if r and r.get("status") == "ok" else None


def _ratio(a, b):
    return a / b if a is not None and b else None


def _shapes(results, group):
    seen = {}
    for r in results.values():
        if r["spec"]["group"] == group:
            seen.setdefault(shape_id(r["spec"]), r["spec"])
    return seen


def ratios(results):
    """Per shape: the ratios the issue asks for (None where a side is missing)."""
    out = {"attention": {}, "mlp": {}}
    for sid in _shapes(results, "attention"):
        entry = {}
        for fused in FUSED:
            row = {}
            for mode in ("fwd", "fwdbwd"):
                f = _ok(results, "attention", fused, mode, sid)
                t, d = _ok(results, "attention", "torch", mode, sid), _ok(results, "attention", "itnet-dense", mode, sid)
                row[f"{mode}_time_over_torch"] = _ratio(f and f["median_s"], t and t["median_s"])
                row[f"{mode}_time_over_dense"] = _ratio(f and f["median_s"], d and d["median_s"])
                row[f"{mode}_mem_over_dense"] = _ratio(f and f["peak_extra_mib"], d and d["peak_extra_mib"])
            entry[fused] = row
        out["attention"][sid] = entry
    for sid in _shapes(results, "mlp"):
        entry = {}
        for fused in FUSED:
            row = {}
            for mode in ("fwd", "fwdbwd"):
                f = _ok(results, "mlp", fused, mode, sid)
                for peer in ("torch-eager", "itnet-dense"):
                    p = _ok(results, "mlp", peer, mode, sid)
                    key = "torch" if peer == "torch-eager" else "dense"
                    row[f"{mode}_speedup_vs_{key}"] = _ratio(p and p["median_s"], f and f["median_s"])
                    row[f"{mode}_mem_ratio_vs_{key}"] = _ratio(p and p["peak_extra_mib"], f and f["peak_extra_mib"])
            entry[fused] = row
        out["mlp"][sid] = entry
    return out


def targets(results, rat):
    """The issue's targets, at N=4096 (the largest N where both sides ran, for the MLP)."""
    goals = [("attention", "fwd_time_over_torch", "<=", 1.0), ("attention", "fwdbwd_time_over_torch", "<=", 1.3),
             ("attention", "fwd_mem_over_dense", "<=", 0.1), ("attention", "fwdbwd_mem_over_dense", "<=", 0.1),
             ("mlp", "fwd_speedup_vs_torch", ">=", 8.0), ("mlp", "fwdbwd_speedup_vs_torch", ">=", 8.0),
             ("mlp", "fwd_mem_ratio_vs_torch", ">=", 100.0), ("mlp", "fwdbwd_mem_ratio_vs_torch", ">=", 100.0)]
    rows = []
    for group, metric, op, goal in goals:
        shapes = _shapes(results, group)
        for sid, spec in shapes.items():
            for fused in FUSED:
                value = rat[group][sid][fused][metric]
                if value is None:
                    continue
                largest = max((s["N"] for k, s in shapes.items()
                               if rat[group][k][fused][metric] is not None), default=None)
                if spec["N"] == 4096 or (spec["N"] == largest and 4096 not in [s["N"] for s in shapes.values()]):
                    rows.append({"group": group, "metric": metric, "shape": sid, "itnet": fused, "value": value,
                                 "goal": f"{op} {goal}", "met": value <= goal if op == "<=" else value >= goal})
                break                                   # only the preferred fused implementation
    return rows


def crosscheck(results):
    """Per (group, mode, shape): |probe.(out - ref)| / ||ref|| against the first peer that ran."""
    out = {}
    for r in results.values():
        if r.get("status") != "ok":
            continue
        s = r["spec"]
        key = f"{s['group']}/{s['mode']}/{shape_id(s)}"
        out.setdefault(key, {})[s["impl"]] = r["check"]
    report = {}
    for key, checks in out.items():
        ref_impl = next((i for i in ("torch", "torch-eager", "numpy", "itnet-dense", *FUSED) if i in checks), None)
        ref = checks[ref_impl]
        report[key] = {"reference": ref_impl, "rel_diff": {
            i: abs(c["probe_dot"] - ref["probe_dot"]) / max(ref["norm"], 1e-30) for i, c in checks.items()},
            "all_finite": all(c["finite"] for c in checks.values())}
    return report


def _cell(r):
    if r is None:
        return "n/a"
    if r["status"] != "ok":
        return r["status"]
    ms = r["median_s"] * 1e3
    t = f"{ms:.0f} ms" if ms >= 100 else f"{ms:.1f} ms" if ms >= 1 else f"{ms:.3f} ms"
    return f"{t}, {r['peak_extra_mib']:.1f} MiB"


def _fmt_load(load):
    return " / ".join(f"{x:.2f}" for x in load)


def _fmt(x, spec="{:.2f}"):
    return "n/a" if x is None else spec.format(x)


def tables(results, rat, targ, check):
    parts = []
    for group, impls, extra in (("attention", ("itnet-fused", "itnet-fused-raw", "itnet-dense", "torch", "numpy"),
                                 ("fused/torch time", "fused/dense memory")),
                                ("mlp", ("itnet-fused", "itnet-fused-raw", "itnet-dense", "torch-eager"),
                                 ("torch/fused time", "torch/fused memory"))):
        shapes = _shapes(results, group)
        for mode in ("fwd", "fwdbwd"):
            present = [i for i in impls if any(f"{group}/{i}/{mode}/{s}" in results for s in shapes)]
            if not present:
                continue
            rows = []
            for sid, spec in shapes.items():
                cells = [_cell(results.get(f"{group}/{i}/{mode}/{sid}")) for i in present]
                fused = next((f for f in FUSED if _ok(results, group, f, mode, sid)), FUSED[0])
                rr = rat[group][sid][fused]
                if group == "attention":
                    last = [_fmt(rr[f"{mode}_time_over_torch"]), _fmt(rr[f"{mode}_mem_over_dense"], "{:.3f}")]
                    head = [spec["N"], spec["H"], "causal" if spec["causal"] else "full"]
                else:
                    last = [_fmt(rr[f"{mode}_speedup_vs_torch"], "{:.1f}x"), _fmt(rr[f"{mode}_mem_ratio_vs_torch"], "{:.0f}x")]
                    head = [spec["N"], spec["H"], spec["hidden"]]
                bad = [i for i, d in check.get(f"{group}/{mode}/{sid}", {}).get("rel_diff", {}).items()
                       if d > TOL.get(spec["dtype"], 1e-3)]
                rows.append(head + cells + last + [", ".join(bad) or "ok"])
            cols = (["N", "H", "mask"] if group == "attention" else ["N", "H", "K"]) + [LABELS[i] for i in present]
            title = f"### {group}, {'forward' if mode == 'fwd' else 'forward + backward'} (median time, peak extra RSS)"
            parts.append(title + "\n\n" + markdown_table(cols + list(extra) + ["outputs agree"], rows))
    trow = [[t["group"], t["metric"], t["shape"], t["itnet"], f"{t['value']:.3g}", t["goal"], "yes" if t["met"] else "NO"]
            for t in targ]
    parts.append("### targets\n\n" + markdown_table(["group", "metric", "shape", "itnet", "value", "goal", "met"], trow))
    notes = sorted({f"- {r['id']}: {r['status']}: {r.get('reason', '')}" for r in results.values()
                    if r["status"] != "ok"})
    if notes:
        parts.append("### not measured\n\n" + "\n".join(notes))
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------- driver
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes and few repetitions (smoke run)")
    ap.add_argument("--cases", default="", help="comma-separated patterns on case ids (fnmatch; plain = substring)")
    ap.add_argument("--list", action="store_true", help="print the selected case ids and exit")
    ap.add_argument("--json", default=os.path.join(_HERE, "results", "operator.json"))
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--budget", type=float, default=None, help="seconds of timed repetitions per case (10; quick 0.5)")
    ap.add_argument("--min-repeat", type=int, default=3)
    ap.add_argument("--mem-limit-gib", type=float, default=8.0, help="skip pair-forming cases estimated above this")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per case subprocess")
    ap.add_argument("--fused-blas-threads", type=int, default=1, help="OPENBLAS_NUM_THREADS for itnet fused cases")
    ap.add_argument("--blas-threads", type=int, default=0, help="OPENBLAS_NUM_THREADS for the others (0: cpu_count)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.budget is None:
        args.budget = 0.5 if args.quick else 10.0
    if args.worker:                                    # inside the per-case subprocess
        res = run_case(json.loads(args.worker), budget_s=args.budget, min_repeat=args.min_repeat)
        with open(args.worker_out, "w") as fh:
            json.dump(res, fh)
        return 0
    cases = select(all_cases(args.quick, args.dtype), args.cases)
    if args.list or not cases:
        print("\n".join(case_id(c) for c in cases) or f"no case matches {args.cases!r}")
        return 0 if cases else 2
    load_start, t0 = os.getloadavg(), time.perf_counter()
    results = {}
    for n, spec in enumerate(cases, 1):
        r = run_one(spec, args)
        results[r["id"]] = r
        log(f"[{n}/{len(cases)}] {r['id']}: {_cell(r) if r['status'] == 'ok' else r['status'] + ': ' + r.get('reason', '')}")
    rat = ratios(results)
    targ = targets(results, rat)
    check = crosscheck(results)
    load_end = os.getloadavg()
    text = tables(results, rat, targ, check) + (
        f"\n\nRatios use the itnet fused entry point where it ran, else the raw kernels. Load average "
        f"(1/5/15 min) at start {_fmt_load(load_start)}, at end {_fmt_load(load_end)}, on "
        f"{os.cpu_count()} cores; wall {time.perf_counter() - t0:.0f} s.")
    print(text)
    settings = {"quick": args.quick, "cases": args.cases, "dtype": args.dtype, "budget_s": args.budget,
                "min_repeat": args.min_repeat, "mem_limit_gib": args.mem_limit_gib,
                "fused_OPENBLAS_NUM_THREADS": args.fused_blas_threads,
                "other_OPENBLAS_NUM_THREADS": args.blas_threads or os.cpu_count(),
                "torch_threads": os.cpu_count(), "MALLOC_MMAP_THRESHOLD_": 128 * 1024,
                "NUMBA_NUM_THREADS": os.environ.get("NUMBA_NUM_THREADS", "default (cores)"),
                "memory": "peak extra = VmHWM - VmRSS after warm-up (inputs alive), per fresh subprocess",
                "time": "median of >= min_repeat calls after one warm-up call"}
    write_json(args.json, {"benchmark": "operator", "machine": machine(), "settings": settings,
                                  "load_avg": {"start": load_start, "end": load_end},
                                  "wall_s": time.perf_counter() - t0, "cases": results, "ratios": rat,
                                  "targets": targ, "crosscheck": check, "tables_markdown": text})
    log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
