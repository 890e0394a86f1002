"""``itnet train``, ``itnet eval`` and ``itnet plot``: the training tool (a plug-in of itnet_np.cli).

    itnet train mnist1d --model itnet --size small --epochs 5 --out runs/m1d
    itnet train mnist1d --model itnet --size small --epochs 5 --out runs/m1d --resume   # continue
    itnet eval runs/m1d [--resolution 128]     # test metrics as JSON (operators: at any resolution)
    itnet plot runs/m1d                        # runs/m1d/curves.png: loss and accuracy / rel-L2

A run directory holds ``config.json`` (the configuration, written atomically), ``metrics.jsonl``
(one JSON line per epoch, appended and flushed: train loss, test loss and metric, lr, seconds) and
``checkpoint.npz`` (itnet_np.io, atomic, rewritten after every epoch). Which models fit which task is
the table in :mod:`itnet_np.models.registry`. The loss is cross-entropy (classification) or the
relative L2 error (operator tasks, F.relative_l2_loss). Training is AdamW (weight decay 0.01) with a linear
warm-up over the first 5% of the steps and a cosine decay to lr/100, batches shuffled from --seed.

Ctrl-C (SIGINT) finishes the current step, saves the checkpoint (with the position inside the epoch)
and exits 130; ``--resume`` continues bit-identically to a run that never stopped. A resumed run
must be given the same configuration: any difference is an error naming the fields (exit 2).
"""
import json
import os
import time

from .cli import SigintFlag, _fail, _integer, _one_line, _positive_float, subcommand

CONFIG, METRICS, CHECKPOINT = "config.json", "metrics.jsonl", "checkpoint.npz"
SIZES = ("tiny", "small", "base")
FIELDS = ("task", "model", "size", "ablation", "epochs", "batch_size", "lr", "seed", "train_size")


def run_config(args):
    """The configuration of a run from parsed arguments: {field: value} over FIELDS."""
    return {k: getattr(args, k) for k in FIELDS}


def _check(config):
    from .models import registry
    task = registry.get_task(config["task"])
    registry.check_fits(task, config["model"])
    return task


def _data(config, resolution=None):
    from .models import registry
    data = registry.load_task_data(config["task"], resolution)
    if config.get("train_size"):
        data = data._replace(x_train=data.x_train[:config["train_size"]], y_train=data.y_train[:config["train_size"]])
    return data


def build(config, data):
    """(model, loss_fn, metric name, metric fn) for a run configuration on ``data``."""
    import itnet_np as itn

    from .models import registry
    from .nn import functional as F
    from .train import accuracy, relative_l2
    task = _check(config)
    model = registry.build_model(task, config["model"], data, config["size"], config["seed"], config["ablation"])
    if task.kind == "regress":
        return model, lambda out, y: F.relative_l2_loss(out, itn.tensor(y)), "rel_l2", relative_l2
    return model, F.cross_entropy, "accuracy", accuracy


def batches(config, loader, positions):
    """(inputs, target) pairs of a DataLoader in the form the task's models take."""
    from .models import registry
    for x, y in loader:
        yield (registry.batch_inputs(config["task"], config["model"], x, positions),
               registry.batch_target(config["task"], y))


def _trainer(config, model, steps_per_epoch):
    from . import optim
    from .train import Trainer
    total = config["epochs"] * steps_per_epoch
    warmup = max(1, total // 20)
    opt = optim.AdamW(model, lr=config["lr"], weight_decay=0.01)
    sched = optim.LRScheduler(opt, optim.LinearWarmup(warmup).then(
        optim.Cosine(max(1, total - warmup), eta_min=config["lr"] / 100)))
    return Trainer(model, opt, None, seed=config["seed"], scheduler=sched)


def _read_json(path, what):
    from .errors import ConfigError
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{os.path.dirname(path) or '.'} holds no run: {what} {path} is missing") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from None


def _differences(saved, config):
    return ", ".join(f"{k}: {saved.get(k)!r} in the run, {config.get(k)!r} now"
                     for k in FIELDS if saved.get(k) != config.get(k))


def read_metrics(out):
    """The per-epoch records of the run in ``out`` (a list of dicts, in epoch order)."""
    path = os.path.join(out, METRICS)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def train(config, out, resume=False, log=print):
    """Train the run ``config`` into directory ``out``; returns 0, or 130 when interrupted (saved)."""
    import numpy as np

    from . import io
    from .data import DataLoader
    from .errors import CheckpointError, ConfigError
    from .models import count_parameters
    from .train import _raw

    _check(config)
    ckpt_path, config_path = os.path.join(out, CHECKPOINT), os.path.join(out, CONFIG)
    if resume:
        saved = _read_json(config_path, "the run configuration")
        if _differences(saved.get("config", {}), config):
            raise CheckpointError(f"--resume: {out} holds a run of another configuration "
                                  f"({_differences(saved.get('config', {}), config)})")
        if not os.path.exists(ckpt_path):
            raise ConfigError(f"--resume: {out} holds no checkpoint ({ckpt_path} is missing)")
    elif os.path.exists(config_path) or os.path.exists(ckpt_path):
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    data = _data(config)
    model, loss_fn, metric, metric_fn = build(config, data)
    train_loader = DataLoader((data.x_train, data.y_train), config["batch_size"], shuffle=True, seed=config["seed"])
    test_loader = DataLoader((data.x_test, data.y_test), max(64, config["batch_size"]))
    trainer = _trainer(config, model, len(train_loader))
    trainer.loss_fn = loss_fn
    params = count_parameters(model)
    partial = []
    if resume:
        state = io.load(ckpt_path)
        if _differences(state.get("config", {}), config):
            raise CheckpointError(f"--resume: {ckpt_path} was written by another configuration "
                                  f"({_differences(state.get('config', {}), config)})")
        trainer.load_state_dict(state["trainer"])
        partial = [float(v) for v in np.asarray(state["partial_losses"]).ravel()]
        kept = [r for r in read_metrics(out) if r["epoch"] <= trainer.epoch]
        with io.atomic_write(os.path.join(out, METRICS), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
    else:
        os.makedirs(out, exist_ok=True)
        io.write_json(config_path, {"config": config, "parameters": params, "kind": metric})
    log(f"itnet train: {config['task']} / {config['model']} ({params:,} parameters), "
        f"{len(data.x_train)} training examples, {len(train_loader)} steps per epoch -> {out}")

    def save():
        io.save(ckpt_path, {"config": config, "trainer": trainer.state_dict(),
                            "partial_losses": np.asarray(partial, np.float64)})

    with SigintFlag() as interrupt:
        while trainer.epoch < config["epochs"]:
            epoch, start = trainer.epoch, time.perf_counter()
            train_loader.set_epoch(epoch)
            skip = trainer.step - epoch * len(train_loader)
            bar = trainer.progress_bar(batches(config, train_loader, data.positions), f"epoch {epoch + 1}")
            for b, (inputs, target) in enumerate(bar):
                if b < skip:
                    continue
                partial.append(trainer.train_step(inputs, target))
                if interrupt.requested:
                    bar.close()
                    save()
                    log(f"interrupted: saved {ckpt_path} at step {trainer.step}; continue with --resume")
                    return 130
            trainer.epoch += 1
            result = trainer.evaluate(batches(config, test_loader, data.positions), {metric: metric_fn})
            record = {"epoch": trainer.epoch, "step": trainer.step, "train_loss": float(np.mean(partial)),
                      "test_loss": result["loss"], f"test_{metric}": result[metric],
                      "lr": float(_raw(trainer.optimizer.param_groups[0]["lr"])),
                      "seconds": time.perf_counter() - start}
            partial = []
            with open(os.path.join(out, METRICS), "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
            save()
            log(f"epoch {record['epoch']}/{config['epochs']}  train loss {record['train_loss']:.4f}  "
                f"test loss {record['test_loss']:.4f}  test {metric} {record[f'test_{metric}']:.4f}  "
                f"({record['seconds']:.1f} s)")
            if interrupt.requested and trainer.epoch < config["epochs"]:    # Ctrl-C during the evaluation
                log(f"interrupted: saved {ckpt_path} after epoch {trainer.epoch}; continue with --resume")
                return 130
    return 0


def evaluate(out, resolution=None, batch_size=64, force_grid=False):
    """Test loss and metric of the run in ``out`` from its checkpoint (operator tasks: at ``resolution``).

    The model is the one trained (built for the training data), so a grid CNN refuses another grid
    (ShapeError). ``force_grid=True`` builds it for the evaluation grid instead and loads the same
    weights: the CNN's stencil, in grid steps, then spans a 4x shorter interval at 4x the resolution
    (what forcing a CNN onto another grid means; ITNet is the same model either way)."""
    from . import io
    from .data import DataLoader
    from .train import Trainer

    config = _read_json(os.path.join(out, CONFIG), "the run configuration")["config"]
    data = _data(config, resolution)
    model, loss_fn, metric, metric_fn = build(config, data if force_grid else _data(config))
    state = io.load(os.path.join(out, CHECKPOINT))
    model.load_state_dict(state["trainer"]["model"])
    trainer = Trainer(model, None, loss_fn, progress=False)
    result = trainer.evaluate(batches(config, DataLoader((data.x_test, data.y_test), batch_size), data.positions),
                              {metric: metric_fn})
    return {"task": config["task"], "model": config["model"], "epoch": state["trainer"]["epoch"],
            "resolution": int(data.x_test.shape[1]) if config["task"] in _operator_tasks() else None,
            **{f"test_{k}": v for k, v in result.items()}}


def _operator_tasks():
    from .models.registry import TASKS
    return [name for name, task in TASKS.items() if task.kind == "regress"]


def plot(out, path=None):
    """Loss curves (train and test) and the test metric per epoch, as a PNG; returns its path."""
    from .errors import ConfigError
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("itnet plot needs matplotlib (pip install 'itnet-np[plot]', or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config = _read_json(os.path.join(out, CONFIG), "the run configuration")
    records = read_metrics(out)
    if not records:
        raise ConfigError(f"{out} has no finished epoch to plot ({os.path.join(out, METRICS)} is empty or missing)")
    metric = config["kind"]
    epochs = [r["epoch"] for r in records]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    left.plot(epochs, [r["train_loss"] for r in records], "o-", label="train")
    left.plot(epochs, [r["test_loss"] for r in records], "s-", label="test")
    left.set(xlabel="epoch", ylabel="loss", title="loss")
    left.legend()
    right.plot(epochs, [r[f"test_{metric}"] for r in records], "o-")
    right.set(xlabel="epoch", ylabel=metric, title=f"test {metric}")
    if metric == "rel_l2":
        right.set_yscale("log")
    c = config["config"]
    fig.suptitle(f"{c['task']} / {c['model']} ({config['parameters']:,} parameters)")
    fig.tight_layout()
    path = path or os.path.join(out, "curves.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------- subcommands

def _train_arguments(parser):
    parser.add_argument("task", help="mnist1d, digits, listops, burgers or antiderivative")
    parser.add_argument("--model", default="itnet", help="itnet (default), cnn, transformer or gru: "
                        "which fit which task is listed in itnet_np.models.registry")
    parser.add_argument("--size", choices=SIZES, default="small", help="ITNet size (default small); "
                        "baselines are matched to its parameter count")
    parser.add_argument("--epochs", type=_integer(1), default=5, help="epochs (default 5)")
    parser.add_argument("--batch-size", type=_integer(1), default=32, help="batch size (default 32)")
    parser.add_argument("--lr", type=_positive_float, default=3e-3, help="peak learning rate (default 3e-3)")
    parser.add_argument("--seed", type=_integer(0), default=0, help="model and shuffling seed (default 0)")
    parser.add_argument("--train-size", type=_integer(1), default=None, metavar="N",
                        help="train on the first N training examples only (default: all)")
    parser.add_argument("--ablation", default=None, metavar="NAME",
                        help="ITNet kernel-input ablation (models.ABLATIONS: no_prod, no_dp, ...)")
    parser.add_argument("--out", default=None, metavar="DIR", help="run directory (default runs/TASK-MODEL-sSEED)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")


@subcommand("train", help="train a model on a task (checkpoints, metrics, resume)", arguments=_train_arguments)
def _train(args):
    from .errors import CheckpointError
    config = run_config(args)
    out = args.out or os.path.join("runs", f"{args.task}-{args.model}-s{args.seed}")
    try:
        return train(config, out, resume=args.resume, log=lambda s: print(s, flush=True))
    except CheckpointError as exc:       # another configuration's checkpoint: a usage error, exit 2
        if args.traceback:
            raise
        return _fail(_one_line(exc), 2)


def _eval_arguments(parser):
    parser.add_argument("dir", help="a run directory written by itnet train")
    parser.add_argument("--resolution", type=_integer(1), default=None,
                        help="operator tasks: evaluate on this grid (e.g. 4x the training one)")


@subcommand("eval", help="evaluate a trained run on its test set (JSON)", arguments=_eval_arguments)
def _eval(args):
    print(json.dumps(evaluate(args.dir, args.resolution)))
    return 0


def _plot_arguments(parser):
    parser.add_argument("dir", help="a run directory written by itnet train")
    parser.add_argument("--output", default=None, metavar="PNG", help="where to write (default DIR/curves.png)")


@subcommand("plot", help="plot a run's loss and accuracy / rel-L2 curves as PNG", arguments=_plot_arguments)
def _plot(args):
    print(plot(args.dir, args.output))
    return 0
