"""Trainer and metrics: accuracy and relative L2 against explicit loops, evaluation, quiet progress
off a TTY, and a checkpoint that resumes bit-identically (shuffling and dropout included)."""
import numpy as np
import pytest

from itnet_np import models, optim
from itnet_np.errors import CheckpointError, ShapeError
from itnet_np.nn import functional as F
from itnet_np.train import Trainer, accuracy, relative_l2


def test_accuracy_against_loop():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(50, 4)), rng.integers(0, 4, size=50)
    want = sum(int(max(range(4), key=lambda c: logits[b, c]) == labels[b]) for b in range(50)) / 50
    assert accuracy(logits, labels) == want
    with pytest.raises(ShapeError, match="labels"):
        accuracy(logits, labels[:10])


def test_relative_l2_against_loop():
    rng = np.random.default_rng(1)
    pred, target = rng.normal(size=(6, 5, 2)), rng.normal(size=(6, 5, 2))
    want = np.mean([np.sqrt(((pred[b] - target[b]) ** 2).sum()) / np.sqrt((target[b] ** 2).sum())
                    for b in range(6)])
    assert abs(relative_l2(pred, target) - want) < 1e-12
    assert relative_l2(target, target) == 0.0
    with pytest.raises(ShapeError, match="same shape"):
        relative_l2(pred, target[:, :4])


X = np.random.default_rng(2).integers(0, 5, size=(24, 6))
Y = (X[:, 0] % 2).astype(np.int64)


def _batches(rng, size=8):
    order = rng.permutation(len(X))
    for s in range(0, len(X), size):
        idx = order[s:s + size]
        yield (X[idx],), Y[idx]


def _trainer(schedule=True):
    cfg = models.ITNetConfig.named("tiny", dropout=0.2)
    model = models.itnet_for_tokens(5, 2, cfg, max_length=8, rng=0)
    opt = optim.AdamW(model, lr=1e-2)
    sched = optim.LRScheduler(opt, optim.Cosine(12)) if schedule else None
    return Trainer(model, opt, F.cross_entropy, seed=7, scheduler=sched, clip_norm=1.0, progress=None)


def test_evaluate_weights_by_batch_size_and_restores_mode():
    t = _trainer()
    full = t.evaluate([((X,), Y)], {"accuracy": accuracy})
    split = t.evaluate([((X[:5],), Y[:5]), ((X[5:],), Y[5:])], {"accuracy": accuracy})
    assert abs(full["accuracy"] - split["accuracy"]) < 1e-12
    assert abs(full["loss"] - split["loss"]) < 1e-5
    assert t.model.training


def test_train_epochs_reduce_loss_and_progress_is_quiet_off_a_tty(capsys):
    t = _trainer()
    first = t.train_epoch(_batches(t.rng))
    for _ in range(6):
        last = t.train_epoch(_batches(t.rng))
    assert first["steps"] == 3 and t.step == 21 and t.epoch == 7
    assert last["loss"] < first["loss"]
    out = capsys.readouterr()
    assert out.out == "" and out.err == ""         # pytest's capture is not a TTY: tqdm stays silent
    t.progress = True                              # bars even off a TTY
    t.train_epoch(_batches(t.rng))
    assert "epoch 8" in capsys.readouterr().err


def test_resume_is_bit_identical(tmp_path):
    straight = _trainer()
    for _ in range(3):
        straight.train_epoch(_batches(straight.rng))

    first = _trainer()
    first.train_epoch(_batches(first.rng))
    first.save(tmp_path / "ckpt.npz")
    resumed = _trainer()
    # A fresh trainer whose generators are elsewhere: only the checkpoint can line them up.
    # (dropout generators still at their initial state, the shuffling one reseeded).
    resumed.rng = np.random.default_rng(123)
    resumed.load(tmp_path / "ckpt.npz")
    assert resumed.step == first.step and resumed.epoch == 1
    assert resumed.optimizer.param_groups[0]["lr"] == first.optimizer.param_groups[0]["lr"] < 1e-2
    for _ in range(2):
        resumed.train_epoch(_batches(resumed.rng))
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_resume_without_saved_generators_differs(tmp_path):
    """The guard above can fail: dropping the dropout generator state breaks bit-identity."""
    straight = _trainer(schedule=False)
    for _ in range(2):
        straight.train_epoch(_batches(straight.rng))
    first = _trainer(schedule=False)
    first.train_epoch(_batches(first.rng))
    state = first.state_dict()
    resumed = _trainer(schedule=False)               # dropout generators at their start
    resumed.model.load_state_dict(state["model"])
    resumed.optimizer.load_state_dict(state["optim"])
    resumed.rng.bit_generator.state = state["rng"]
    resumed.train_epoch(_batches(resumed.rng))
    diff = [k for k, v in straight.model.state_dict().items() if not np.array_equal(v, resumed.model.state_dict()[k])]
    assert diff


def test_checkpoint_from_another_model_is_refused(tmp_path):
    t = _trainer()
    t.save(tmp_path / "ckpt.npz")
    gru = models.GRUClassifier(2, hidden=8, vocab=5, rng=0)
    with pytest.raises(CheckpointError):
        Trainer(gru, optim.AdamW(gru, lr=1e-2), F.cross_entropy).load(tmp_path / "ckpt.npz")
    small = models.itnet_for_tokens(5, 2, models.ITNetConfig.named("small"), max_length=8, rng=0)
    with pytest.raises(CheckpointError):
        Trainer(small, optim.AdamW(small, lr=1e-2), F.cross_entropy).load(tmp_path / "ckpt.npz")


def test_clip_norm_bounds_the_step_gradients():
    t = _trainer(schedule=False)
    t.clip_norm = 1e-3
    t.train_step((X,), Y)
    total = np.sqrt(sum(float((p.grad.data ** 2).sum()) for p in t.model.parameters() if p.grad is not None))
    assert total <= 1e-3 * (1 + 1e-5)
    t.clip_norm = None
    t.train_step((X,), Y)
    total = np.sqrt(sum(float((p.grad.data ** 2).sum()) for p in t.model.parameters() if p.grad is not None))
    assert total > 1e-2


def test_checkpoint_scheduler_mismatch_is_refused(tmp_path):
    t = _trainer(schedule=True)
    t.save(tmp_path / "ckpt.npz")
    with pytest.raises(CheckpointError, match="scheduler"):
        _trainer(schedule=False).load(tmp_path / "ckpt.npz")
