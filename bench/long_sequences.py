"""Long sequences and large point clouds through the fused backend (issue 8): an IntegralTransform
forward and backward at N = 65,536, H = 1, d = 64, float32, DotProductKernel with softmax, for

- causal: the causal support on the 1-D index grid (the tiled kernels' index band);
- radius: a radius support on a 2-D point cloud of unit density, r = sqrt(32 / pi), so about 32
  neighbours per point (CSR neighbour lists from a k-d tree, the neighbour-list kernels).

Each case runs in a fresh process (``--case``), warmed up on a small N first (compilation), then:
wall time of forward + backward (median of ``--repeat``), the growth of the process's peak RSS over
the timed runs (ru_maxrss after minus before: whatever NumPy, Numba and the k-d tree allocate,
traced or not), and the tracemalloc peak of one more forward + backward (NumPy's and Python's
allocations). A dense N x N float32 matrix would be 16 GiB here.

    python bench/long_sequences.py [--n 65536] [--repeat 3] [--json bench/results/long_sequences.json]
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import log, machine, markdown_table, peak_rss_mib

D_MODEL, NEIGHBOURS = 64, 32


def make_case(case, n, seed=0):
    """(layer, x, positions) of one case at size n."""
    from itnet_np.transform import DotProductKernel, IntegralTransform

    dtype = np.float32
    rng = np.random.default_rng(seed)
    support, positions = {"support": "causal"}, None
    if case == "radius":
        positions = rng.uniform(0, math.sqrt(n), (n, 2)).astype(dtype)        # unit density
        support = {"radius": math.sqrt(NEIGHBOURS / math.pi)}
    kernel = DotProductKernel(D_MODEL, heads=1, rng=1, dtype=dtype)
    layer = IntegralTransform(D_MODEL, D_MODEL, kernel, normalization="softmax", backend="numba", rng=2,
                              dtype=dtype, **support)
    x = rng.standard_normal((1, n, D_MODEL)).astype(dtype)
    return layer, x, positions


def step(layer, x, positions):
    """One forward and backward; returns the output's data (checked finite by the caller)."""
    import itnet_np as itn
    xt = itn.Tensor(x, requires_grad=True)
    y = layer(xt, positions=positions)
    y.sum().backward()
    return y.data, xt.grad.data


def run_case(case, n, repeat):
    """Measure one case in this process (see the module docstring)."""
    layer, x, positions = make_case(case, 4096)
    step(layer, x, positions)                                          # compile / warm up
    layer, x, positions = make_case(case, n)
    note = [line.strip() for line in layer.explain(x, positions=positions).splitlines() if "numba" in line][-1]
    rss_before = peak_rss_mib()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        y, gx = step(layer, x, positions)
        times.append(time.perf_counter() - t0)
        assert np.isfinite(y).all() and np.isfinite(gx).all()
    rss_growth = peak_rss_mib() - rss_before
    tracemalloc.start()
    step(layer, x, positions)
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    lists, build = None, None
    if positions is not None:                         # the k-d tree's share of one step
        t0 = time.perf_counter()
        lists = layer.support.plan(positions[None], positions[None]).neighbours()
        build = time.perf_counter() - t0
    return {"case": case, "n": n, "heads": 1, "d": D_MODEL, "dtype": "float32", "repeat": repeat,
            "seconds_median": float(np.median(times)), "seconds_min": float(min(times)),
            "tracemalloc_peak_mib": traced, "rss_peak_growth_mib": rss_growth,
            "neighbours_per_query": None if lists is None else lists.indices.size / n,
            "neighbour_lists_seconds": build,
            "dense_matrix_mib": n * n * 4 / 2**20, "plan_note": note}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=65536)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--case", choices=["causal", "radius"], help="measure one case in this process")
    parser.add_argument("--cases", default="causal,radius", help="comma-separated cases of a full run")
    parser.add_argument("--json", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                       "long_sequences.json"))
    args = parser.parse_args(argv)
    if args.case:                                      # child: one case, JSON on stdout
        print(json.dumps(run_case(args.case, args.n, args.repeat)))
        return
    from itnet_np.io import write_json
    results = {"machine": machine(), "load_average_before": os.getloadavg(), "cases": []}
    for case in args.cases.split(","):
        log(f"long_sequences: {case} at N = {args.n} ...")
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--case", case, "--n", str(args.n),
                              "--repeat", str(args.repeat)], capture_output=True, text=True, check=True)
        results["cases"].append(json.loads(out.stdout.strip().splitlines()[-1]))
    results["load_average_after"] = os.getloadavg()
    write_json(args.json, results)
    rows = [(c["case"], c["n"], f"{c['seconds_median']:.2f}", f"{c['tracemalloc_peak_mib']:.0f}",
             f"{c['rss_peak_growth_mib']:.0f}", c["neighbours_per_query"] and f"{c['neighbours_per_query']:.1f}")
            for c in results["cases"]]
    print(markdown_table(["case", "N", "fwd+bwd s (median)", "tracemalloc peak MiB", "RSS peak growth MiB",
                          "neighbours / query"], rows))
    for c in results["cases"]:
        if c.get("neighbour_lists_seconds") is not None:
            print(f"{c['case']}: building the neighbour lists (k-d tree) takes {c['neighbour_lists_seconds']:.2f} s")
    print(f"load average before {results['load_average_before']}, after {results['load_average_after']}")


if __name__ == "__main__":
    main()
