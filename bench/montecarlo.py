"""Monte Carlo integration and low-rank factorisation against the exact fused kernel (issue 11):
relative Frobenius error of the layer output against wall-clock time (forward, no grad, float32).

Cases (1-D sequence, p_i = i / N, C = 16 features, H = 2 heads of width 8, self mode, full support):
  smooth   MLPKernel(dp, Fourier F = 4, scale 3), 'none', quadrature 'mean'   (unbiased MC, control
           variate, low rank: skeleton / cross / distilled / learned)      at N = 4096 and 16,384
  softmax  MLPKernel(dp, Fourier F = 4 at scale 10, f_i, f_j), 'softmax'   (SNIS, proposals, exact
           top-k, low rank of e^s under 'sum')                              at N = 4096
  dot      DotProductKernel, 'softmax'                                      (SNIS, Performer, skeleton of e^s)
                                                                            at N = 4096
Every case runs at every size. Every method's time includes everything it computes per forward
(draws, proposals, landmarks). Low-rank students (rank 64) are fitted once at N = 1024 on the same
input functions and reused at 4096 and 16,384 (the kernel is a function of p in [0, 1] and f, so it
carries over): 'distilled' in closed form for 'none' (lowrank.distill.fit_output_layers: reduced-rank
regression of the output layers on the teacher's 1024 x 1024 values, hidden width 128) and by 150
Adam steps on kernel values for the softmax case; 'learned' by 150 Adam steps on the layer output.
Their fit time is reported, not counted per forward. Exact top-k forms every score: above N = 4096 it
runs on the first 1024 query rows only (error over those rows, time scaled by N / 1024, said in the
method's name).

    python bench/montecarlo.py [--sizes 4096 16384] [--cases smooth softmax dot] [--out bench/results/montecarlo]
                              (results merge into the JSON by (case, N); the plot is redrawn from all of them)
    python bench/montecarlo.py --spectrum     singular-value mass captured at R (dense E, N = 2048)
    python bench/montecarlo.py --train [--epochs 10 --samples 4000]
                                              MNIST-1D: exact / Monte Carlo / low-rank training, exact eval
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine

import itnet_np as itn
from itnet_np import transform as T
from itnet_np.optim import Adam
from itnet_np.transform.kernels.base import Points
from itnet_np.transform.lowrank import approx
from itnet_np.transform.lowrank.distill import distill, fit_output_layers
from itnet_np.transform.montecarlo import MonteCarlo

C, H, D = 16, 2, 8
FIT_N, FIT_STEPS = 1024, 150
F32 = np.float32


def make(case, N, seed=0):
    rng = np.random.default_rng(seed)
    pos = (np.arange(N) / N)[:, None].astype(F32)
    # input functions on [0, 1], as in operator learning: low-frequency waves plus a little noise
    k, phase, offset = rng.uniform(0.3, 3, size=C), rng.uniform(0, 2 * np.pi, size=C), rng.normal(size=C)
    x = (np.sin(2 * np.pi * k * pos + phase) + offset + 0.1 * rng.normal(size=(N, C)))[None].astype(F32)
    if case == "dot":
        kernel = T.DotProductKernel(C, heads=H, head_dim=D, rng=1)
    elif case == "smooth":
        kernel = T.MLPKernel(C, heads=H, hidden=32, inputs=("dp", "fourier"), fourier=4, frequency_scale=3.0, rng=1)
    else:
        kernel = T.MLPKernel(C, heads=H, hidden=32, inputs=("dp", "fourier", "fi", "fj"), fourier=4,
                             frequency_scale=10.0, rng=1)
    norm = "none" if case == "smooth" else "softmax"
    layer = T.IntegralTransform(C, C, kernel, embed_dim=H * D, normalization=norm, bias=False, backend="numba",
                                quadrature="mean" if norm == "none" else "uniform", rng=2)
    return layer, x, pos


def timed(fn, repeat):
    out, best = None, math.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def error(y, exact):
    return float(np.linalg.norm(np.asarray(y, np.float64) - exact) / np.linalg.norm(exact))


def apply_factors(layer, x, pos, phi, psi, mode):
    """The layer output with the kernel (or e^s) replaced by phi psi^T ('none', or the 'sum' ratio)."""
    B, N = x.shape[:2]
    v = np.asarray(layer.values(itn.tensor(x)).data, np.float64)                   # (B, H, M, d)
    if mode == "none":
        y = np.einsum("bhnr,bhrd->bhnd", phi, np.einsum("bhmr,bhmd->bhrd", psi, v)) / N
    else:
        u = np.concatenate([v, np.ones(v.shape[:3] + (1,))], -1)
        t = np.einsum("bhnr,bhrd->bhnd", phi, np.einsum("bhmr,bhmd->bhrd", psi, u))
        y = t[..., :-1] / np.where(t[..., -1:] != 0, t[..., -1:], 1)
    return y.transpose(0, 2, 1, 3).reshape(B, N, H * D) @ np.asarray(layer.W_O.data, np.float64).T


def factor_method(layer, x, pos, how, rank, mode):
    def run():
        proj = layer.kernel.project(Points(itn.tensor(x), pos[None]), Points(itn.tensor(x), pos[None]))
        entries = approx.kernel_entries(layer.kernel, proj, None if mode == "none" else _stable_exp)
        N = x.shape[1]
        if how == "skeleton":
            phi, psi = approx.skeleton(entries, N, N, rank)
        else:
            phi, psi = approx.cross(entries, N, N, rank, rng=0)
        return apply_factors(layer, x, pos, phi, psi, mode)
    return run


def _stable_exp(s):
    return np.exp(s)


def performer_method(layer, x, rank, seed=0):
    def run():
        proj = layer.kernel.project(Points(itn.tensor(x), None), Points(itn.tensor(x), None))
        q = np.asarray(proj.query["q"].data, np.float64).transpose(0, 2, 1, 3) * math.sqrt(layer.kernel.scale)
        k = np.asarray(proj.source["k"].data, np.float64).transpose(0, 2, 1, 3) * math.sqrt(layer.kernel.scale)
        phi, psi = approx.performer(q, k, rank, rng=seed)
        return apply_factors(layer, x, None, phi, psi, "sum")
    return run


def topk_method(layer, x, pos, k, block=256, rows=None):
    """Softmax over each query's k largest scores (every score formed, a block of queries at a time);
    only the first ``rows`` queries when given."""
    def run():
        proj = layer.kernel.project(Points(itn.tensor(x), pos[None]), Points(itn.tensor(x), pos[None]))
        entries = approx.kernel_entries(layer.kernel, proj)
        v = np.asarray(layer.values(itn.tensor(x)).data, np.float64)
        N = x.shape[1]
        n = N if rows is None else rows
        out = np.zeros((1, H, n, D))
        for i0 in range(0, n, block):
            s = entries(np.arange(i0, min(i0 + block, n)), np.arange(N))              # (1, H, b, N)
            top = np.argpartition(-s, k - 1, axis=-1)[..., :k]
            st = np.take_along_axis(s, top, -1)
            p = np.exp(st - st.max(-1, keepdims=True))
            p /= p.sum(-1, keepdims=True)
            out[:, :, i0:i0 + s.shape[2]] = np.einsum("bhnk,bhnkd->bhnd", p, _gather(v, top))
        return out.transpose(0, 2, 1, 3).reshape(1, n, H * D) @ np.asarray(layer.W_O.data, np.float64).T
    return run


def _gather(v, idx):
    """v (1, H, M, d) at idx (1, H, b, k) -> (1, H, b, k, d)."""
    return np.stack([v[0, h][idx[0, h]] for h in range(v.shape[1])])[None]


def student_layer(layer, rank, mode, hidden=64):
    """A low-rank layer sharing the teacher layer's value and output maps and Fourier frequencies."""
    kernel = T.LowRankKernel(C, heads=H, feature_dim=rank, inputs=("p", "fourier", "f"), hidden=hidden,
                             frequencies=layer.kernel.frequencies, feature_map="identity" if mode == "none" else "softplus",
                             rng=3)
    out = T.IntegralTransform(C, C, kernel, embed_dim=H * D, normalization=mode, bias=False, backend="lowrank",
                              quadrature="mean" if mode == "none" else "uniform", rng=2)
    out.W_V.data[:] = layer.W_V.data
    out.W_O.data[:] = layer.W_O.data
    return out


def fit_students(layer, x, pos, exact, rank, mode, steps):
    """(distilled layer, learned layer, fit seconds): distilled on kernel values (e^s for softmax),
    learned by regression of the layer output on the exact output."""
    t0 = time.perf_counter()
    pts = Points(x, pos[None])
    if mode == "none":                                   # closed form (reduced-rank regression)
        distilled = student_layer(layer, rank, mode, hidden=128)
        fit_output_layers(distilled.kernel, layer.kernel, pts, rows=x.shape[1], cols=x.shape[1])
    else:                                                # positive feature maps: gradient steps
        distilled = student_layer(layer, rank, mode)
        distill(distilled.kernel, layer.kernel, pts, steps=steps, rows=128, cols=128, lr=3e-3,
                transform=_stable_exp)
    t_distill = time.perf_counter() - t0
    t0 = time.perf_counter()
    learned = student_layer(layer, rank, mode)
    params = [p for n, p in learned.named_parameters() if n.startswith("kernel.")]
    opt = Adam(params, lr=3e-3)
    target, scale = exact.astype(F32), float(np.mean(exact ** 2))
    for _ in range(steps):
        y = learned(itn.tensor(x), pos)
        loss = itn.mean((y - target) ** 2) / scale
        opt.zero_grad()
        loss.backward()
        opt.step()
    return distilled, learned, {"distill_s": t_distill, "learn_s": time.perf_counter() - t0}


def run_case(case, N, students, quick):
    layer, x, pos = make(case, N)
    xt = itn.tensor(x)
    with itn.no_grad():
        layer(itn.tensor(x[:, :256]), pos[:256])                     # compile / warm at a small size
        exact_y, t_exact = timed(lambda: layer(xt, pos).data, 1)
    exact = np.asarray(exact_y, np.float64)
    rows = [{"method": "exact fused", "param": N, "time": t_exact, "error": 0.0}]
    print(f"[{case} N={N}] exact fused {t_exact:.2f} s", flush=True)

    def record(method, param, fn, repeat=1, seeds=(0,), exact_rows=None):
        errs, times = [], []
        for seed in seeds:
            with itn.no_grad():
                y, t = timed(lambda seed=seed: fn(seed), repeat)
            errs.append(error(y, exact if exact_rows is None else exact[:, :exact_rows]))
            times.append(t)
        row = {"method": method, "param": param, "time": float(np.median(times)), "error": float(np.mean(errs)),
               "mse": float(np.mean(np.square(errs)))}
        rows.append(row)
        print(f"  {method:>24} {param:>6}: {row['time']:.3f} s  err {row['error']:.3e}", flush=True)

    def mc(samples, proposal="uniform", cv=False, rank=16):
        def fn(seed):
            layer.integration = MonteCarlo(samples=samples, proposal=proposal, control_variate=cv, rank=rank,
                                           seed=seed)
            try:
                return layer(xt, pos).data
            finally:
                layer.integration = "exact"
        return fn

    with itn.no_grad():                               # compile the sampled kernels before timing
        mc(64)(0)
    sizes = [N // 64, N // 16] if quick else [N // 64, N // 16, N // 4]
    seeds = (0, 1)
    proposals = ["uniform", "stratified", "locality", "proxy"]
    for S in sizes:
        for proposal in proposals:
            record(f"MC {proposal}" + (" (SNIS)" if case != "smooth" else ""), S, mc(S, proposal), seeds=seeds)
        if case == "smooth":
            for rank in (16, 64):
                record(f"MC uniform + CV r{rank}", S, mc(S, "uniform", True, rank), seeds=seeds)
    mode = "none" if case == "smooth" else "sum"
    if case in ("smooth", "softmax"):
        for rank in (16, 64):
            for how in ("skeleton",) if quick or rank > 16 else ("skeleton", "cross"):
                fn = factor_method(layer, x, pos, how, rank, mode)
                record(f"low rank {how}", rank, lambda seed, fn=fn: fn())
        if case == "softmax":
            for k in (N // 16,):
                rows_run = N if N <= 4096 else 1024
                fn = topk_method(layer, x, pos, k, rows=rows_run)
                name = "exact top-k" if rows_run == N else f"exact top-k ({rows_run} rows, time x{N // rows_run})"
                rows_before = len(rows)
                record(name, k, lambda seed, fn=fn: fn(), exact_rows=rows_run)
                rows[rows_before]["time"] *= N / rows_run
        key = (case, 64)
        if key not in students:                       # fitted once, on the same functions at N = 1024
            small, xs, ps = make(case, FIT_N)
            with itn.no_grad():
                target = np.asarray(small(itn.tensor(xs), ps).data, np.float64)
            students[key] = fit_students(small, xs, ps, target, 64, mode, steps=FIT_STEPS)
        distilled, learned, fit = students[key]
        for name, student in (("distilled r64", distilled), ("learned r64", learned)):
            record(name, 64, lambda seed, s=student: s(xt, pos).data, repeat=2)
            rows[-1].update(fit)
    else:
        for rank in (16, 64, 256):
            record("Performer", rank, lambda seed, r=rank: performer_method(layer, x, r, seed)(), seeds=seeds)
        for rank in (16, 64):
            record("low rank skeleton", rank, lambda seed, r=rank: factor_method(layer, x, pos, "skeleton", r, "sum")())
    return rows


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = list(results)
    cols = min(2, len(keys))
    fig, axes = plt.subplots(-(-len(keys) // cols), cols, figsize=(7 * cols, 5.5 * -(-len(keys) // cols)),
                             squeeze=False)
    every = sorted({r["method"].replace(" (SNIS)", "") for rows in results.values() for r in rows[1:]})
    colour = {m: plt.cm.tab20(i % 20) for i, m in enumerate(every)}          # one colour per method
    for ax, key in zip(axes.flat, keys):
        rows = results[key]
        t_exact = rows[0]["time"]
        methods = sorted({r["method"] for r in rows[1:]})
        for m in methods:
            pts = sorted((r["time"], r["error"]) for r in rows if r["method"] == m and r["error"] > 0)
            if pts:
                ax.loglog(*zip(*pts), "o-" if m.startswith("MC") else "s--", label=m, ms=4,
                          color=colour[m.replace(" (SNIS)", "")])
        ax.axvline(t_exact, color="k", lw=1, label="exact fused (time)")
        ax.axhline(1e-2, color="grey", lw=0.8, ls=":")
        mc = [r for r in rows if r["method"].startswith("MC uniform") and "CV" not in r["method"]]
        if mc:
            t0, e0 = min((r["time"], r["error"]) for r in mc)
            ts = np.array([t0, t0 * 100])
            ax.loglog(ts, e0 * (ts / t0) ** -0.5, "k:", lw=1, label="slope -1/2")
        ax.set_title(key)
        ax.set_xlabel("wall-clock time per forward (s)")
        ax.set_ylabel("relative Frobenius error")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ------------------------------------------------------------------- spectrum (--spectrum)

def spectrum(N=2048, ranks=(16, 64)):
    """Per case, on the dense kernel matrix E (s for 'smooth', e^s for the softmax cases) at N points:
    the singular-value mass the best rank-R approximation keeps, its relative Frobenius error
    sqrt(1 - mass), and the error of the skeleton, pivoted cross and (dot) Performer approximations."""
    out = {}
    for case in ("smooth", "softmax", "dot"):
        layer, x, pos = make(case, N)
        pts = Points(itn.tensor(x), pos[None])
        entries = approx.kernel_entries(layer.kernel, layer.kernel.project(pts, pts),
                                        None if case == "smooth" else np.exp)
        E = entries(np.arange(N), np.arange(N))
        norm = np.linalg.norm(E, axis=(-2, -1))
        out[case] = {}
        for R in ranks:
            mass = approx.svd_mass(E, R)
            row = {"svd_mass": float(mass.mean()), "best": float(np.sqrt(1 - mass).mean())}
            fits = {"skeleton": approx.skeleton(entries, N, N, R), "cross": approx.cross(entries, N, N, R, rng=0)}
            if case == "dot":
                proj = layer.kernel.project(pts, pts)
                q, k = (np.asarray(proj.query["q"].data, np.float64).transpose(0, 2, 1, 3),
                        np.asarray(proj.source["k"].data, np.float64).transpose(0, 2, 1, 3))
                root = math.sqrt(layer.kernel.scale)
                fits["Performer"] = approx.performer(q * root, k * root, R, rng=0)
            for name, (phi, psi) in fits.items():
                diff = phi @ np.swapaxes(psi, -1, -2) - E
                row[name] = float((np.linalg.norm(diff, axis=(-2, -1)) / norm).mean())
            out[case][R] = row
            print(f"  spectrum {case} R={R}: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items()), flush=True)
    return out


# ------------------------------------------------------------------- training comparison (--train)

def train_compare(epochs=3, samples=1500, batch=50, seed=0):
    """ITNet on MNIST-1D (N = 40 points) trained exactly, with Monte Carlo (S = 16 of 40 sources per
    tile, uniform and stratified) and with the learned low-rank kernel (r = 16, 'sum', positive
    features) in place of the MLP kernel; all evaluated exactly (eval mode). Returns rows of
    (variant, test accuracy, train step seconds)."""
    from itnet_np import models
    from itnet_np.data import get_dataset
    from itnet_np.nn.functional import cross_entropy
    data = get_dataset("mnist1d", num_samples=samples)
    pos = data.positions.astype(F32)[None]                                   # (1, 40, 1)
    xtr, ytr = data.x_train[..., None].astype(F32), data.y_train
    xte, yte = data.x_test[..., None].astype(F32), data.y_test
    rows = []
    for variant in ("exact", "MC uniform S=16", "MC stratified S=16", "low rank r16"):
        cfg = models.ITNetConfig(width=32, depth=2, heads=2, backend="auto")
        model = models.ITNet(models.FunctionEncoder(1, 32, rng=seed), 10, cfg, rng=seed)
        for block in model.blocks:
            if variant.startswith("MC"):
                block.transform.integration = MonteCarlo(samples=16, proposal=variant.split()[1], seed=seed)
            elif variant.startswith("low rank"):
                kernel = T.LowRankKernel(32, heads=2, feature_dim=16, inputs=("p", "fourier", "f"), hidden=16,
                                         fourier=8, frequency_scale=6.0, feature_map="softplus", rng=seed)
                block.transform = T.IntegralTransform(32, 32, kernel, normalization="sum", backend="lowrank",
                                                      rng=seed)
        opt = Adam(list(model.parameters()), lr=3e-3)
        rng = np.random.default_rng(seed)
        step_times = []
        for _ in range(epochs):
            model.train()
            for idx in np.array_split(rng.permutation(len(xtr)), len(xtr) // batch):
                t0 = time.perf_counter()
                loss = cross_entropy(model(xtr[idx], pos), ytr[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                step_times.append(time.perf_counter() - t0)
        model.eval()
        with itn.no_grad():
            pred = np.concatenate([np.asarray(model(xte[i:i + 200], pos).data).argmax(-1)
                                   for i in range(0, len(xte), 200)])
        rows.append({"variant": variant, "accuracy": float((pred == yte).mean()),
                     "step_s": float(np.median(step_times[5:]))})
        print(f"  {variant:>20}: test accuracy {rows[-1]['accuracy']:.3f}, step {rows[-1]['step_s'] * 1e3:.1f} ms",
              flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--cases", nargs="+", choices=["smooth", "softmax", "dot"], default=["smooth", "softmax", "dot"])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "montecarlo"))
    ap.add_argument("--spectrum", action="store_true", help="only the singular-value mass table")
    ap.add_argument("--train", action="store_true", help="only the MNIST-1D training comparison")
    ap.add_argument("--epochs", type=int, default=10, help="--train: epochs per variant (default 10)")
    ap.add_argument("--samples", type=int, default=4000, help="--train: MNIST-1D examples (default 4000)")
    args = ap.parse_args()
    if args.spectrum or args.train:
        extra = {"spectrum": spectrum()} if args.spectrum else \
            {"train": train_compare(args.epochs, args.samples), "epochs": args.epochs, "samples": args.samples,
             "load": os.getloadavg()[0]}
        path = args.out + ("_spectrum" if args.spectrum else "_train") + ".json"
        with open(path + ".tmp", "w") as f:
            json.dump({"machine": machine(), **extra}, f, indent=1)
        os.replace(path + ".tmp", path)
        print("wrote", path)
        return
    old = {}
    if os.path.exists(args.out + ".json"):                # merge: a run of some cases keeps the others
        with open(args.out + ".json") as f:
            old = json.load(f)
    results, students = old.get("results", {}), {}
    machines = old.get("machines", {key: old["machine"] for key in results} if "machine" in old else {})
    for N in args.sizes:
        for case in args.cases:
            key = f"{case} N={N}"
            results[key] = run_case(case, N, students, quick=N > 4096)
            machines[key] = dict(machine(), date=time.strftime("%Y-%m-%d"), load=os.getloadavg()[0])
    fits = dict(old.get("fit", {}), **{f"{k[0]} r{k[1]}": v[2] for k, v in students.items()})
    record = {"machines": machines, "results": results, "fit": fits}
    tmp = args.out + ".json.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=1)
    os.replace(tmp, args.out + ".json")
    plot(results, args.out + ".png")
    print("wrote", args.out + ".json", args.out + ".png")


if __name__ == "__main__":
    main()
