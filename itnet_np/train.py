"""Training: a small :class:`Trainer` (one epoch, evaluation, checkpoints) and the metrics.

    trainer = Trainer(model, itn.optim.AdamW(model, lr=1e-3), F.cross_entropy, seed=0)
    for epoch in range(5):
        trainer.train_epoch(my_batches(trainer.rng))        # iterable of (inputs, target)
        print(trainer.evaluate(test_batches, {"accuracy": accuracy}))
        trainer.save("run/ckpt.npz")                         # atomic (itnet_np.io)

A batch is ``(inputs, target)``: ``inputs`` a tuple of model arguments (``model(*inputs)``) or one
array; ``target`` whatever ``loss_fn(output, target)`` takes. ``trainer.rng`` is the generator to
shuffle with: it is saved in the checkpoint together with the model, the optimiser, the step and
epoch counters and every generator a module owns (dropout masks), so :meth:`Trainer.load` continues
bit-identically to a run that never stopped. Progress bars are tqdm's with ``disable=None``: shown
on a terminal, silent when output is not a TTY (CI, logs).

Metrics (on raw arrays or Tensors):

    accuracy(logits (B, C), labels (B,))  = mean_b [argmax_c logits_bc == labels_b]
    relative_l2(pred, target), both (B, ...) = mean_b ||pred_b - target_b||_2 / ||target_b||_2
"""
import numpy as np
from tqdm.auto import tqdm

from .autograd.modes import no_grad
from .autograd.tensor import Tensor
from .errors import CheckpointError, ShapeError, describe
from .io import load, save
from .optim.clip import clip_grad_norm_


def _raw(x):
    return x.data if isinstance(x, Tensor) else np.asarray(x)


def accuracy(logits, labels):
    """Fraction of rows whose arg-max over the last axis equals the label."""
    logits, labels = _raw(logits), _raw(labels)
    if logits.ndim != 2 or labels.shape != logits.shape[:1] or labels.dtype.kind not in "iu":
        raise ShapeError(f"accuracy: logits must be (B, C) and labels integer (B,), got logits "
                         f"{describe(logits)} and labels {describe(labels)}")
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def relative_l2(pred, target):
    """Mean over the batch axis of ||pred_b - target_b|| / ||target_b|| (norms over all other axes)."""
    pred, target = _raw(pred), _raw(target)
    if pred.shape != target.shape or pred.ndim < 1:
        raise ShapeError(f"relative_l2: pred and target must have the same shape (B, ...), got "
                         f"{describe(pred)} and {describe(target)}")
    B = pred.shape[0]
    diff = np.linalg.norm((pred - target).reshape(B, -1), axis=1)
    return float(np.mean(diff / np.linalg.norm(target.reshape(B, -1), axis=1)))


def _call(model, inputs):
    return model(*inputs) if isinstance(inputs, tuple) else model(inputs)


def _generators(model):
    """{'module.attr': Generator} for every numpy Generator a (sub)module holds (dropout's masks)."""
    found = {}
    for name, module in model.named_modules():
        for attr, value in vars(module).items():
            if isinstance(value, np.random.Generator):
                found[f"{name}.{attr}" if name else attr] = value
    return found


class Trainer:
    """``Trainer(model, optimizer, loss_fn, seed=0, scheduler=None, clip_norm=None, progress=None)``.

    scheduler: an optim.LRScheduler, stepped after every optimiser step (and checkpointed);
    clip_norm: the gradients' global 2-norm is clipped to it before each step (optim.clip_grad_norm_);
    progress: None = tqdm's automatic choice (bars only on a TTY), False = never, True = always.
    """

    def __init__(self, model, optimizer, loss_fn, seed=0, scheduler=None, clip_norm=None, progress=None):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.scheduler, self.clip_norm = scheduler, clip_norm
        self.rng = np.random.default_rng(seed)
        self.step = 0
        self.epoch = 0
        self.progress = progress

    def progress_bar(self, batches, desc):
        """``batches`` wrapped in tqdm per ``self.progress`` (the class docstring)."""
        disable = None if self.progress is None else not self.progress     # None: tqdm asks isatty()
        return tqdm(batches, desc=desc, disable=disable, leave=False)

    def train_step(self, inputs, target):
        """One optimiser step on one batch; returns the loss as a float."""
        self.model.train()
        self.optimizer.zero_grad()
        loss = self.loss_fn(_call(self.model, inputs), target)
        loss.backward()
        if self.clip_norm is not None:
            clip_grad_norm_(self.model.parameters(), self.clip_norm)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        self.step += 1
        return float(_raw(loss))

    def train_epoch(self, batches, desc=None):
        """Train on every batch of ``batches``; returns {'loss': mean batch loss, 'steps': n}."""
        losses = []
        bar = self.progress_bar(batches, desc or f"epoch {self.epoch + 1}")
        for inputs, target in bar:
            losses.append(self.train_step(inputs, target))
            bar.set_postfix(loss=f"{losses[-1]:.4g}", refresh=False)
        self.epoch += 1
        return {"loss": float(np.mean(losses)) if losses else float("nan"), "steps": len(losses)}

    def evaluate(self, batches, metrics=None):
        """Loss and each ``metrics[name](output, target)``, averaged over samples (batch-size
        weighted), in eval mode and without a graph; the previous train/eval mode is restored."""
        metrics = metrics or {}
        was_training = self.model.training
        self.model.eval()
        totals, count = {"loss": 0.0, **{k: 0.0 for k in metrics}}, 0
        try:
            with no_grad():
                for inputs, target in self.progress_bar(batches, "eval"):
                    out = _call(self.model, inputs)
                    n = len(_raw(target))
                    totals["loss"] += n * float(_raw(self.loss_fn(out, target)))
                    for name, fn in metrics.items():
                        totals[name] += n * fn(out, target)
                    count += n
        finally:
            self.model.train(was_training)
        return {k: v / count if count else float("nan") for k, v in totals.items()}

    # ----- checkpoints ------------------------------------------------------------------------
    def state_dict(self):
        """Everything needed to continue: model, optimiser, counters and every generator's state."""
        return {"model": self.model.state_dict(), "optim": self.optimizer.state_dict(),
                "step": self.step, "epoch": self.epoch, "rng": self.rng.bit_generator.state,
                "module_rngs": {k: g.bit_generator.state for k, g in _generators(self.model).items()},
                "scheduler": None if self.scheduler is None else self.scheduler.state_dict()}

    def load_state_dict(self, state):
        gens = _generators(self.model)
        missing = sorted(set(gens) ^ set(state.get("module_rngs", {})))
        if missing:
            raise CheckpointError(f"Trainer: the checkpoint's module generators do not match the model's: "
                                  f"{missing}")
        if (self.scheduler is None) != (state.get("scheduler") is None):
            raise CheckpointError(f"Trainer: the checkpoint {'has' if state.get('scheduler') else 'has no'} "
                                  f"scheduler state but this trainer {'has no' if self.scheduler is None else 'has a'}"
                                  " scheduler")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optim"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch = int(state["step"]), int(state["epoch"])
        self.rng.bit_generator.state = state["rng"]
        for k, g in gens.items():
            g.bit_generator.state = state["module_rngs"][k]

    def save(self, path):
        """Write the checkpoint atomically (itnet_np.io.save)."""
        save(path, self.state_dict())

    def load(self, path):
        """Restore a checkpoint written by :meth:`save` (CheckpointError on any mismatch)."""
        self.load_state_dict(load(path))
        return self
