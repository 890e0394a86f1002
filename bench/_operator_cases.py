"""Cases of bench/operator.py and the per-case worker that runs in a fresh subprocess.

A case is a dict: group ('attention' | 'mlp'), impl, mode ('fwd' | 'fwdbwd'), shapes, dtype; its id
reads like ``attention/torch/fwd/N4096-H8-causal`` or ``mlp/itnet-fused/fwdbwd/N1024-H4-K16``.

Memory: the worker measures RSS growth over a baseline taken after imports, input construction
and one warm-up call (which also compiles the Numba kernels), with the input arrays alive:

    peak_extra = VmHWM - VmRSS(baseline),   VmHWM reset by writing 5 to /proc/self/clear_refs

so it counts what one call allocates (outputs, temporaries, saved residuals, gradients). The driver
runs the worker with MALLOC_MMAP_THRESHOLD_ fixed (glibc otherwise raises it after the first large
free and keeps later blocks in the heap, where freed memory stays resident) and calls malloc_trim
before the baseline. Where clear_refs is not writable, ru_maxrss (which includes the warm-up) is used.
"""
import ctypes
import fnmatch
import gc
import os
import resource
import statistics
import time
import traceback

MIB = 1024.0 * 1024.0
ATT_IMPLS = ("itnet-fused", "itnet-fused-raw", "itnet-dense", "torch", "numpy")
MLP_IMPLS = ("itnet-fused", "itnet-fused-raw", "itnet-dense", "torch-eager")
MODES = ("fwd", "fwdbwd")
# Peak extra bytes per pair element, in units of the itemsize (attention: per (b, h, i, j); MLP: per
# (b, i, j) times (K + H)), measured with this script (float32) and rounded up: dense attention via
# scaled_dot_product_attention(backend='dense') at N=4096: fwd 3.0 (full) / 4.0 (causal), fwd+bwd
# 8.0 / 9.0; NumPy 1.06; at N=1024 dense MLP 4.2 / 5.0, torch eager MLP 1.6 / 2.6 (fwd / fwd+bwd).
# Used only to skip cases that would not fit in --mem-limit-gib.
PAIR_FACTOR = {("attention", "itnet-dense", "fwd"): 4.5, ("attention", "itnet-dense", "fwdbwd"): 9.5,
               ("attention", "numpy", "fwd"): 1.5,
               ("mlp", "itnet-dense", "fwd"): 4.5, ("mlp", "itnet-dense", "fwdbwd"): 5.5,
               ("mlp", "torch-eager", "fwd"): 2.0, ("mlp", "torch-eager", "fwdbwd"): 3.0}


def all_cases(quick=False, dtype="float32"):
    """The full list (or the --quick list: same structure, small sizes)."""
    att_sizes = [(256, 2)] if quick else [(1024, 8), (4096, 8), (16384, 1)]
    mlp_sizes = [128] if quick else [1024, 4096]
    mlp_configs = [(16, 4)] if quick else [(16, 4), (32, 8)]     # (hidden K, heads H)
    cases = []
    for N, H in att_sizes:
        for causal in (False, True):
            for impl in ATT_IMPLS:
                for mode in MODES:
                    if impl == "numpy" and mode == "fwdbwd":
                        continue
                    cases.append({"group": "attention", "impl": impl, "mode": mode, "B": 1, "H": H,
                                  "N": N, "d": 64, "causal": causal, "dtype": dtype})
    for N in mlp_sizes:
        for K, H in mlp_configs:
            for impl in MLP_IMPLS:
                for mode in MODES:
                    cases.append({"group": "mlp", "impl": impl, "mode": mode, "B": 1, "H": H, "N": N,
                                  "C": 32, "d": 16, "hidden": K, "dtype": dtype})
    return cases


def shape_id(spec):
    if spec["group"] == "attention":
        return f"N{spec['N']}-H{spec['H']}-{'causal' if spec['causal'] else 'full'}"
    return f"N{spec['N']}-H{spec['H']}-K{spec['hidden']}"


def case_id(spec):
    return f"{spec['group']}/{spec['impl']}/{spec['mode']}/{shape_id(spec)}"


def select(cases, patterns):
    """Cases whose id matches any comma-separated pattern (fnmatch; no wildcard = substring)."""
    if not patterns:
        return cases
    pats = [p.strip() for p in patterns.split(",") if p.strip()]
    pats = [p if any(c in p for c in "*?[") else f"*{p}*" for p in pats]
    return [c for c in cases if any(fnmatch.fnmatchcase(case_id(c), p) for p in pats)]


def estimate_bytes(spec):
    """Rough peak extra bytes of the pair-forming implementations (None: O(N) memory)."""
    factor = PAIR_FACTOR.get((spec["group"], spec["impl"], spec["mode"]))
    if factor is None:
        return None
    item = 8 if spec["dtype"] == "float64" else 4
    inner = spec["H"] if spec["group"] == "attention" else spec["hidden"] + spec["H"]
    return factor * spec["B"] * spec["N"] ** 2 * inner * item


# ----------------------------------------------------------------------------- worker side
def _status(key):
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024 / MIB
    return float("nan")


def _reset_peak():
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _trim():
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _checksum(arr):
    """(probe . arr, ||arr||) in float64, probe a fixed N(0, 1) array: equal outputs, equal sums."""
    import numpy as np
    a = np.asarray(arr, dtype=np.float64).ravel()
    probe = np.random.default_rng(12345).standard_normal(a.size)
    return {"probe_dot": float(probe @ a), "norm": float(np.sqrt(a @ a)),
            "finite": bool(np.isfinite(a).all())}


def run_case(spec, budget_s=10.0, min_repeat=3, max_repeat=20):
    """Measure one case in this (fresh) process; returns the result dict (never raises)."""
    t_start = time.perf_counter()
    res = {"id": case_id(spec), "spec": spec, "load_avg_start": os.getloadavg()}
    try:
        import numba
        import numpy  # noqa: F401  (imported before the baseline, like everything else)
        from _operator_impls import Skip, build
        if spec["impl"].startswith("torch"):
            try:
                import torch
            except ImportError:
                return dict(res, status="skipped", reason="torch is not installed")
            torch.set_num_threads(os.cpu_count() or 1)
        import itnet_np  # noqa: F401
        res["threads"] = {"numba": numba.get_num_threads(),
                          "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
                          "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
        res["rss_after_import_mib"] = _status("VmRSS")
        try:
            fn, extract, info = build(spec)
        except Skip as e:
            return dict(res, status="skipped", reason=str(e))
        res["info"] = info
        t0 = time.perf_counter()
        r = fn()                                             # warm-up: compiles, creates pools
        res["first_call_s"] = time.perf_counter() - t0
        res["check"] = _checksum(extract(r))
        del r
        _trim()
        base = _status("VmRSS")
        exact = _reset_peak()
        samples = []
        while len(samples) < min_repeat or (len(samples) < max_repeat and sum(samples) < budget_s):
            t0 = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t0)
        peak = _status("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        res.update(status="ok", median_s=statistics.median(samples), min_s=min(samples),
                   repeat=len(samples), rss_base_mib=base, peak_extra_mib=max(peak - base, 0.0),
                   mem_method="VmHWM after clear_refs" if exact else "ru_maxrss (includes warm-up)")
    except Exception as e:  # noqa: BLE001 (a worker reports, the driver decides)
        res.update(status="error", reason=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
    res["maxrss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["worker_wall_s"] = time.perf_counter() - t_start
    return res
