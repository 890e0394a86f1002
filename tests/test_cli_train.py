"""``itnet train`` / ``eval`` / ``plot`` through itnet_np.cli.main: run files, resume bit-identical to
an uninterrupted run (also after Ctrl-C mid-epoch), one-line errors with exit 2, eval against an
independent evaluation of the checkpoint, operator evaluation at 4x the grid, and the PNG."""
import dataclasses
import json
import signal

import numpy as np
import pytest

from itnet_np import io
from itnet_np.cli import main
from itnet_np.cli_train import read_metrics
from itnet_np.models import registry
from itnet_np.train import Trainer


@pytest.fixture(autouse=True)
def small_data(tmp_path_factory, monkeypatch):
    """A private data cache and smaller MNIST-1D / antiderivative sets, so each run takes seconds."""
    monkeypatch.setenv("ITNET_DATA_DIR", str(tmp_path_factory.getbasetemp() / "data"))
    small = {"mnist1d": ({"num_samples": 150}, None),
             "antiderivative": ({"num_train": 24, "num_test": 8, "resolution": 128, "fine": 256}, 32)}
    for name, (options, resolution) in small.items():
        task = registry.TASKS[name]
        monkeypatch.setitem(registry.TASKS, name, dataclasses.replace(
            task, data_options={**task.data_options, **options}, resolution=resolution or task.resolution))


def _train(out, *extra, model="cnn", task="mnist1d", epochs="2"):
    return main(["train", task, "--model", model, "--size", "tiny", "--epochs", epochs, "--batch-size", "16",
                 "--train-size", "48", "--seed", "3", "--out", str(out), *extra])


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _without_time(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def _state(out):
    return io.load(out / "checkpoint.npz")["trainer"]


def _assert_same_state(a, b):
    assert a["step"] == b["step"] and a["epoch"] == b["epoch"] and a["rng"] == b["rng"]
    for part in ("model", "optim"):
        flat_a, flat_b = _flatten(a[part]), _flatten(b[part])
        assert flat_a.keys() == flat_b.keys()
        for k in flat_a:
            np.testing.assert_array_equal(flat_a[k], flat_b[k], err_msg=f"{part}.{k}")


def _flatten(tree, prefix=""):
    if isinstance(tree, dict):
        return {k2: v2 for k, v in tree.items() for k2, v2 in _flatten(v, f"{prefix}{k}.").items()}
    if isinstance(tree, list):
        return {k2: v2 for i, v in enumerate(tree) for k2, v2 in _flatten(v, f"{prefix}{i}.").items()}
    return {prefix: np.asarray(tree)}


def test_train_writes_config_metrics_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["config"]["task"] == "mnist1d" and config["config"]["model"] == "cnn"
    records = _lines(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2] and records[-1]["step"] == 2 * 3   # 48 / 16 = 3 steps
    assert all(np.isfinite(r["train_loss"]) and 0 <= r["test_accuracy"] <= 1 for r in records)
    assert _state(out)["epoch"] == 2
    assert "epoch 2/2" in capsys.readouterr().out


@pytest.mark.parametrize("model, stop", [("cnn", 4), ("cnn", 3), ("itnet", 4)])
def test_resume_after_ctrl_c_is_bit_identical(tmp_path, monkeypatch, model, stop):
    """Ctrl-C after step 4 (inside epoch 2) or 3 (the last step of epoch 1, before its evaluation)."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert _train(ref, model=model) == 0
    original, calls = Trainer.train_step, []

    def step_then_ctrl_c(self, inputs, target):
        loss = original(self, inputs, target)
        calls.append(1)
        if len(calls) == stop:                       # 3 steps per epoch
            signal.raise_signal(signal.SIGINT)
        return loss

    monkeypatch.setattr(Trainer, "train_step", step_then_ctrl_c)
    assert _train(run, model=model) == 130
    monkeypatch.setattr(Trainer, "train_step", original)
    assert _state(run)["step"] == stop and _state(run)["epoch"] == (stop - 1) // 3
    assert len(read_metrics(run)) == (stop - 1) // 3
    assert _train(run, "--resume", model=model) == 0
    _assert_same_state(_state(ref), _state(run))
    assert _without_time(_lines(ref / "metrics.jsonl")) == _without_time(_lines(run / "metrics.jsonl"))


def test_ctrl_c_during_the_evaluation_stops_after_the_epoch_checkpoint(tmp_path, monkeypatch):
    ref, run = tmp_path / "ref", tmp_path / "run"
    assert _train(ref, epochs="3") == 0
    original = Trainer.evaluate

    def evaluate_with_ctrl_c(self, *args, **kwargs):
        signal.raise_signal(signal.SIGINT)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "evaluate", evaluate_with_ctrl_c)
    assert _train(run, epochs="3") == 130
    monkeypatch.setattr(Trainer, "evaluate", original)
    assert _state(run)["epoch"] == 1 and len(read_metrics(run)) == 1
    assert _train(run, "--resume", epochs="3") == 0
    _assert_same_state(_state(ref), _state(run))
    assert _without_time(read_metrics(ref)) == _without_time(read_metrics(run))


def test_unknown_task_and_unfit_model_are_one_line_exit_2(tmp_path, capsys):
    assert main(["train", "imagenet", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown task 'imagenet'" in err and "mnist1d" in err
    assert "Traceback" not in err
    assert main(["train", "listops", "--model", "cnn", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "does not fit task 'listops'" in err
    assert "itnet, transformer, gru" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_checkpoint_of_another_configuration_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, epochs="1") == 0
    capsys.readouterr()
    assert _train(out, "--resume", "--lr", "0.5", epochs="1") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "another configuration" in err and "lr" in err
    # a checkpoint copied in from another run, under this run's config.json
    other = tmp_path / "other"
    assert _train(other, "--seed", "4", epochs="1") == 0
    (out / "checkpoint.npz").write_bytes((other / "checkpoint.npz").read_bytes())
    capsys.readouterr()
    assert _train(out, "--resume", epochs="1") == 2
    err = capsys.readouterr().err.strip()
    assert "another configuration" in err and "seed: 4" in err
    assert _train(out, epochs="1") == 2                  # an existing run needs --resume
    assert "--resume" in capsys.readouterr().err


def test_eval_matches_an_independent_evaluation(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, model="cnn") == 0
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    data = registry.load_task_data("mnist1d")
    net = registry.build_model("mnist1d", "cnn", data, size="tiny", seed=3)
    net.load_state_dict(_state(out)["model"])
    net.eval()
    logits = np.concatenate([net(data.x_test[i:i + 7, None]).data for i in range(0, len(data.x_test), 7)])
    assert result["test_accuracy"] == pytest.approx(np.mean(logits.argmax(1) == data.y_test), abs=1e-12)
    assert result["epoch"] == 2


def test_operator_eval_at_4x_resolution_itnet_runs_cnn_refuses(tmp_path, capsys):
    itnet, cnn = tmp_path / "itnet", tmp_path / "cnn"
    common = ["--size", "tiny", "--epochs", "1", "--batch-size", "8", "--train-size", "16"]
    assert main(["train", "antiderivative", "--model", "itnet", *common, "--out", str(itnet)]) == 0
    assert main(["train", "antiderivative", "--model", "cnn", *common, "--out", str(cnn)]) == 0
    capsys.readouterr()
    assert main(["eval", str(itnet), "--resolution", "128"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["resolution"] == 128 and np.isfinite(result["test_rel_l2"])
    assert main(["eval", str(cnn), "--resolution", "128"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "ShapeError" in err and "another resolution" in err


def test_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    assert _train(out) == 0
    assert main(["plot", str(out)]) == 0
    png = out / "curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image
    assert matplotlib.image.imread(png).shape[:2] == (350, 900)
    assert main(["plot", str(tmp_path / "missing")]) == 2
    assert "holds no run" in capsys.readouterr().err
