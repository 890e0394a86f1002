"""The experiments of issue 12: ITNet against specialist baselines at matched parameter counts, and the
kernel-input ablation on MNIST-1D; writes EXPERIMENTS.md and one JSON per run.

    python bench/experiments.py                  # every run (skips runs whose JSON exists), then the report
    python bench/experiments.py --shard 0/2      # half of the runs (start a 2nd process with 1/2)
    python bench/experiments.py --report         # only rewrite EXPERIMENTS.md from the JSON files
    python bench/experiments.py --dry-run        # 1 epoch on 64 examples per run, into a temporary dir

Every run is exactly ``itnet train TASK --model M ...`` (itnet_np.cli_train.train, in process), timed,
then ``itnet eval`` on its test set (operator tasks also at 4x the training resolution). Run
directories (checkpoints) go to --runs (default ~/.cache/itnet_np/experiment-runs); an interrupted
run resumes from its checkpoint. Results: bench/results/experiments/NAME.json.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from itnet_np import cli_train
from itnet_np.io import write_json
from itnet_np.models.config import ABLATIONS
from itnet_np.models.registry import TASKS

RESULTS = os.path.join(ROOT, "bench", "results", "experiments")
SEEDS = (0, 1, 2)
# Per task: the same settings for every model (sized to a few minutes of CPU per run on this 2-core machine).
SETTINGS = {
    "mnist1d": {"size": "small", "epochs": 20, "batch_size": 64, "lr": 3e-3, "train_size": 4000},
    "digits": {"size": "small", "epochs": 60, "batch_size": 32, "lr": 3e-3, "train_size": None},
    "listops": {"size": "tiny", "epochs": 10, "batch_size": 32, "lr": 3e-3, "train_size": None},
    "burgers": {"size": "small", "epochs": 200, "batch_size": 20, "lr": 3e-3, "train_size": None},
    "antiderivative": {"size": "small", "epochs": 20, "batch_size": 32, "lr": 3e-3, "train_size": 500},
}
ABLATION = dict(SETTINGS["mnist1d"], size="small", epochs=10, train_size=2000)
TABLE5 = ("full", "no_prod", "no_dp", "no_dist2", "no_fourier", "content_only", "position_only")


def plan():
    """Every run: (name, config) with the config of cli_train.FIELDS."""
    runs = []
    for task, models in ((t, TASKS[t].models) for t in SETTINGS):
        for model in models:
            for seed in SEEDS:
                runs.append((f"{task}-{model}-s{seed}",
                             dict(task=task, model=model, ablation=None, seed=seed, **SETTINGS[task])))
    for ablation in TABLE5:
        if ABLATIONS[ablation] in (ABLATIONS[a] for a in TABLE5[:TABLE5.index(ablation)]):
            continue                          # position_only: the inputs of no_prod, already run
        for seed in SEEDS:
            runs.append((f"ablation-{ablation}-s{seed}",
                         dict(task="mnist1d", model="itnet", ablation=ablation, seed=seed, **ABLATION)))
    return sorted(runs, key=lambda run: run[1]["seed"])     # every task and ablation once before seed 1


def command(config, out):
    """The ``itnet train`` command line of a run."""
    parts = ["itnet", "train", config["task"], "--model", config["model"], "--size", config["size"],
             "--epochs", str(config["epochs"]), "--batch-size", str(config["batch_size"]), "--lr", str(config["lr"]),
             "--seed", str(config["seed"])]
    if config["train_size"]:
        parts += ["--train-size", str(config["train_size"])]
    if config["ablation"]:
        parts += ["--ablation", config["ablation"]]
    return " ".join(parts + ["--out", out])


def execute(name, config, runs_dir, results_dir):
    """Train (resuming a checkpoint), evaluate, write results_dir/NAME.json; returns the record."""
    out = os.path.join(runs_dir, name)
    resume = os.path.exists(os.path.join(out, cli_train.CHECKPOINT))
    if not resume and os.path.exists(out):                 # a run that died before its first checkpoint
        for f in os.listdir(out):
            os.remove(os.path.join(out, f))
    start, cpu = time.perf_counter(), time.process_time()
    code = cli_train.train(config, out, resume=resume, log=lambda s: print(f"[{name}] {s}", flush=True))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    if code != 0:
        raise KeyboardInterrupt
    record = {"name": name, "config": config, "command": command(config, "DIR"), "wall_seconds": wall,
              "cpu_seconds": cpu,
              "resumed": resume, "parameters": cli_train._read_json(os.path.join(out, cli_train.CONFIG),
                                                                    "config")["parameters"],
              "epochs": cli_train.read_metrics(out), "test": cli_train.evaluate(out)}
    record.update(evaluate_4x(config, out))
    write_json(os.path.join(results_dir, f"{name}.json"), record)
    return record


def evaluate_4x(config, out):
    """Operator tasks: {'test_4x': the trained model at 4x the grid (or why it refuses), 'test_4x_forced':
    the grid CNN rebuilt for the 4x grid with the same weights}; {} for the other tasks."""
    if TASKS[config["task"]].kind != "regress":
        return {}
    fine = 4 * TASKS[config["task"]].resolution
    found = {}
    try:
        found["test_4x"] = cli_train.evaluate(out, resolution=fine)
    except Exception as exc:  # noqa: BLE001  the grid CNN refuses another grid: record why
        found["test_4x"] = {"error": f"{type(exc).__name__}: {exc}"}
    if config["model"] == "cnn":
        found["test_4x_forced"] = cli_train.evaluate(out, resolution=fine, force_grid=True)
    return found


def reevaluate(results_dir, runs_dir):
    """Recompute the 4x-grid evaluations of the finished operator runs from their checkpoints."""
    for name, record in load_results(results_dir).items():
        extra = evaluate_4x(record["config"], os.path.join(runs_dir, name))
        if extra:
            record.update(extra)
            write_json(os.path.join(results_dir, f"{name}.json"), record)


def load_results(results_dir):
    found = {}
    for f in sorted(os.listdir(results_dir)) if os.path.isdir(results_dir) else []:
        if f.endswith(".json"):
            with open(os.path.join(results_dir, f)) as fh:
                found[f[:-5]] = json.load(fh)
    return found


# ----------------------------------------------------------------------------------------- report
TARGETS = {
    "mnist1d": "CNN >= 90% (published 94%), ITNet >= CNN; GRU (published 91%) and Transformer for context",
    "digits": "ITNet and CNN >= 97%",
    "listops": "ITNet >= Transformer (LRA full length: Transformer 36.4%, S4 59.5%, context only)",
    "burgers": "ITNet rel-L2 <= 1e-2 at the training grid, <= 2x that at 4x the grid without retraining",
    "antiderivative": "(no numeric target) ITNet vs the grid CNN, and at 4x the grid",
}
NAMES = {"itnet": "ITNet", "cnn": "CNN", "gru": "GRU", "transformer": "Transformer"}
KERNEL_COLUMNS = (("prod", "f_i*f_j"), ("dp", "dp"), ("dist2", "|dp|^2"), ("fourier", "Fourier"))


def _stats(values, percent):
    if not values:
        return "-"
    scale = 100.0 if percent else 1.0
    mean = statistics.mean(values) * scale
    if len(values) == 1:
        return f"{mean:.1f}" if percent else f"{mean:.2e}"
    std = statistics.stdev(values) * scale
    return f"{mean:.1f} +- {std:.1f}" if percent else f"{mean:.2e} +- {std:.1e}"


def _group(results, prefix):
    return [r for n, r in sorted(results.items()) if n.rsplit("-s", 1)[0] == prefix]


def _task_table(task, results):
    regress = TASKS[task].kind == "regress"
    head = ("| model | parameters | test rel-L2 (train grid) | test rel-L2 at 4x grid | CPU s / run | wall s / run | seeds |"
            if regress else "| model | parameters | test accuracy % | CPU s / run | wall s / run | seeds |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for model in TASKS[task].models:
        runs = _group(results, f"{task}-{model}")
        if not runs:
            lines.append(f"| {NAMES[model]} | - | not run |" + " |" * (head.count("|") - 5) + " 0 |")
            continue
        metric = "test_rel_l2" if regress else "test_accuracy"
        cells = [NAMES[model], f"{runs[0]['parameters']:,}", _stats([r["test"][metric] for r in runs], not regress)]
        if regress:
            fine = [r["test_4x"] for r in runs]
            errors = {f["error"].split(":")[0] for f in fine if "error" in f}
            cell = (_stats([f[metric] for f in fine if "error" not in f], False) if not errors
                    else f"refuses ({', '.join(sorted(errors))})")
            forced = [r["test_4x_forced"][metric] for r in runs if "test_4x_forced" in r]
            if forced:
                cell += f"; forced onto the 4x grid: {_stats(forced, False)}"
            cells.append(cell)
        cells += [f"{statistics.mean(r.get('cpu_seconds', float('nan')) for r in runs):.0f}",
                  f"{statistics.mean(r['wall_seconds'] for r in runs):.0f}", str(len(runs))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _ablation_table(results):
    lines = ["| kernel | " + " | ".join(c for _, c in KERNEL_COLUMNS) + " | f_i, f_j | test accuracy % | seeds |",
             "|---|" + "---|" * (len(KERNEL_COLUMNS) + 3)]
    for name in TABLE5:
        inputs = ABLATIONS[name]
        same = next(a for a in TABLE5 if ABLATIONS[a] == inputs)        # identical inputs: one set of runs
        runs = _group(results, f"ablation-{same}")
        marks = ["yes" if key in inputs else "-" for key, _ in KERNEL_COLUMNS]
        marks.append("yes" if "fi" in inputs else "-")
        acc = _stats([r["test"]["test_accuracy"] for r in runs], True) if runs else "not run"
        seeds = f"{len(runs)}" + (f" (the runs of {same})" if same != name else "")
        lines.append(f"| {name} | " + " | ".join(marks) + f" | {acc} | {seeds} |")
    return lines


def burgers_references():
    """Test rel-L2 of two predictors that need no training, on the Burgers test set at the training
    grid: the input's mean (u(T) -> mean u(0), which viscosity leaves after the waves decay; the mean
    is conserved) and the heat equation's solution exp(-nu (2 pi k)^2 T) per Fourier mode (Burgers
    without its nonlinear term). A model must beat both to have learned the nonlinear operator."""
    import inspect

    import numpy as np

    from itnet_np.data.operators import make_burgers
    from itnet_np.models.registry import load_task_data
    from itnet_np.train import relative_l2
    defaults = inspect.signature(make_burgers).parameters
    nu, t_final = (TASKS["burgers"].data_options.get(name, defaults[name].default) for name in ("nu", "t_final"))
    data = load_task_data("burgers")
    x, y = data.x_test.astype(np.float64), data.y_test.astype(np.float64)
    k = np.fft.fftfreq(x.shape[1], 1.0 / x.shape[1])
    heat = np.fft.ifft(np.fft.fft(x, axis=1) * np.exp(-nu * (2 * np.pi * k) ** 2 * t_final), axis=1).real
    return {"the input's mean": relative_l2(np.broadcast_to(x.mean(axis=1, keepdims=True), y.shape), y),
            "the heat equation (no u u_x)": relative_l2(heat, y)}


def report(results, runs, target, settings, ablation, machine):
    """Write EXPERIMENTS.md from the per-run results."""
    missing = [n for n, _ in runs if n not in results]
    out = ["# Experiments (issue 12)", "",
           ("Produced by `python bench/experiments.py` (per-run JSON in `bench/results/experiments/`); "
           f"machine: {machine}. Two processes (`--shard 0/2`, `--shard 1/2`) with one Numba and one BLAS "
           "thread each, on a machine also used for other work during the runs: the CPU seconds are the "
           "stable measure, the wall times include the contention. Mean +- std over seeds "
           f"{', '.join(map(str, SEEDS))} (the model and shuffling seed; the data sets are fixed). The issue "
           "allowed up to 10 minutes per run; the runs are sized to a few minutes of CPU each (the settings "
           "below) so that all of them fit in about an hour of a 2-core machine. Baselines are built at the "
           "width whose parameter count is nearest the ITNet's (`models.registry.build_model`, within 20%). "
           "On MNIST-1D the sequence models (ITNet, Transformer, GRU) read the same tokens, 9-sample windows "
           "at stride 2 (`models.registry.signal_windows`, the 1-D counterpart of image patches); the CNN "
           "reads the raw signal."), ""]
    out += ["## Settings (the same for every model of a task)", "",
            "| task | ITNet size | epochs | batch | peak lr | training examples |", "|---|---|---|---|---|---|"]
    for task, s in settings.items():
        out.append(f"| {task} | {s['size']} | {s['epochs']} | {s['batch_size']} | {s['lr']} | "
                   f"{s['train_size'] or 'all'} |")
    out += ["", "AdamW (weight decay 0.01), 5% linear warm-up then cosine decay to lr/100, as `itnet train` does."]
    for task in settings:
        out += ["", f"## {task}", "", f"Target: {TARGETS[task]}.", ""] + _task_table(task, results)
        if task == "burgers":
            out += ["", "Predictors without training, on the same test set (bench/experiments.py, "
                    "`burgers_references`): " + "; ".join(f"{name}: rel-L2 {value:.2e}"
                                                          for name, value in burgers_references().items()) + "."]
    out += ["", "## Kernel-input ablation on MNIST-1D (the layout of the paper's Table 5)", "",
            (f"ITNet {ablation['size']}, "
            f"{ablation['epochs']} epochs on the first {ablation['train_size']} training examples, 3 seeds. 'no_prod' and "
            "'position_only' have the same inputs with the default full set (models.config)."), ""]
    out += _ablation_table(results)
    notes = os.path.join(RESULTS, "notes.md")          # the discussion, written by hand after the runs
    if os.path.exists(notes):
        with open(notes) as f:
            out += ["", f.read().strip()]
    out += ["", "## Commands", "", ("Each run is the command below with `--out DIR` its run directory, then "
            "`itnet eval DIR` (and `itnet eval DIR --resolution R` at 4x for the operator tasks)."), "", "```"]
    out += [command(c, "DIR") for n, c in runs if n in results]
    out += ["```"]
    if missing:
        out += ["", "## Not finished", "", "These runs did not finish in the session's time: "
                + ", ".join(missing) + "."]
    with tempfile.NamedTemporaryFile("w", dir=os.path.dirname(os.path.abspath(target)), delete=False,
                                     suffix=".tmp") as f:                # atomic: write, then rename
        f.write("\n".join(out) + "\n")
    os.replace(f.name, target)


if __name__ == "__main__":
    import _common  # bench/ is the script's directory
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shard", default="0/1", help="I/N: run every N-th run starting at I")
    parser.add_argument("--only", default="", help="run only the runs whose name contains this")
    parser.add_argument("--runs", default=os.path.join(os.path.expanduser("~"), ".cache", "itnet_np", "experiment-runs"))
    parser.add_argument("--report", action="store_true", help="only write EXPERIMENTS.md from the JSON results")
    parser.add_argument("--reevaluate", action="store_true",
                        help="recompute the operator runs' 4x-grid evaluations from their checkpoints, then report")
    parser.add_argument("--dry-run", action="store_true", help="1 epoch on 64 examples, into a temporary directory")
    args = parser.parse_args()
    results_dir, runs_dir = RESULTS, args.runs
    runs = [(n, c) for n, c in plan() if args.only in n]
    if args.dry_run:
        tmp = tempfile.mkdtemp(prefix="itnet-experiments-")
        results_dir, runs_dir = os.path.join(tmp, "results"), os.path.join(tmp, "runs")
        runs = [(n, dict(c, epochs=1, train_size=64)) for n, c in runs if n.endswith("-s0")]
    index, count = (int(v) for v in args.shard.split("/"))
    os.makedirs(results_dir, exist_ok=True)
    if args.reevaluate:
        reevaluate(results_dir, runs_dir)
    elif not args.report:
        for k, (name, config) in enumerate(runs):
            if k % count != index or os.path.exists(os.path.join(results_dir, f"{name}.json")):
                continue
            print(f"=== {name}: {command(config, os.path.join(runs_dir, name))}", flush=True)
            execute(name, config, runs_dir, results_dir)
    target = os.path.join(os.path.dirname(results_dir), "EXPERIMENTS.md") if args.dry_run else \
        os.path.join(ROOT, "EXPERIMENTS.md")
    report(load_results(results_dir), plan(), target, SETTINGS, ABLATION,
           machine=f"{_common.machine().get('cpu', platform.machine())}, {os.cpu_count()} cores, "
                   f"python {platform.python_version()}, numpy {np.__version__}")
    print(f"wrote {target}")
