"""End to end: an MLP learns two interleaved spirals; a checkpointed run resumes bit for bit."""
import numpy as np

from itnet_np import nn, optim
from itnet_np.autograd.tensor import Tensor
from itnet_np.io import load, save
from itnet_np.nn import functional as F


def two_spirals(n_per_class, seed, noise=0.03):
    """Two interleaved 1.5-turn spirals in [-1, 1]^2, labels 0 and 1 (chance accuracy: 50%).

    Arm 0 is r(t) (cos t, sin t) with r = t / (3 pi), t in [0, 3 pi]; arm 1 is arm 0 rotated by pi.
    No straight line separates them: a linear classifier stays near chance.
    """
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.uniform(0, 1, n_per_class)) * 3 * np.pi   # sqrt: even density along the arm
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (3 * np.pi)
    x = np.concatenate([arm, -arm]) + noise * rng.standard_normal((2 * n_per_class, 2))
    return x.astype(np.float32), np.repeat([0, 1], n_per_class)


def _accuracy(model, x, y):
    return float((model(Tensor(x)).data.argmax(axis=1) == y).mean())


def test_mlp_learns_two_spirals_with_adam():
    x, y = two_spirals(200, seed=0)
    model = nn.MLP([2, 32, 32, 2], activation="relu", rng=0)
    opt = optim.Adam(model.named_parameters(), lr=0.02)
    inputs = Tensor(x)
    first = None
    for _ in range(300):  # full batch, float32
        loss = F.cross_entropy(model(inputs), y)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.dtype == np.float32 for p in model.parameters())
    assert loss.item() < 0.1 * first
    assert _accuracy(model, x, y) >= 0.95            # chance is 0.5
    x_test, y_test = two_spirals(200, seed=1)        # fresh points from the same spirals
    assert _accuracy(model, x_test, y_test) >= 0.90


def test_checkpoint_resume_is_exact(tmp_path):
    """Warm-up + cosine AdamW with clipping and dropout: stopping at step 15, saving everything to
    disk and resuming in fresh objects gives exactly the parameters of an uninterrupted run."""
    x, y = two_spirals(64, seed=2)
    batches = np.random.default_rng(3).integers(0, len(y), size=(30, 32))

    def build():
        model = nn.MLP([2, 16, 16, 2], activation="tanh", dropout=0.1, rng=0)
        opt = optim.AdamW(model.named_parameters(), lr=0.01, weight_decay=0.05)
        sched = optim.LRScheduler(opt, optim.LinearWarmup(5).then(optim.Cosine(25, eta_min=1e-4)))
        return model, opt, sched

    def run(model, opt, sched, steps):
        for idx in steps:
            loss = F.cross_entropy(model(Tensor(x[idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            optim.clip_grad_norm_(model.parameters(), 0.5)
            opt.step()
            sched.step()

    reference = build()
    run(*reference, batches)
    model, opt, sched = build()
    run(model, opt, sched, batches[:15])
    save(tmp_path / "run.npz", {"model": model.state_dict(), "optim": opt.state_dict(),
                                "sched": sched.state_dict(), "dropout_rng": model.dropout.rng.bit_generator.state})
    model, opt, sched = build()
    ckpt = load(tmp_path / "run.npz")
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optim"])
    sched.load_state_dict(ckpt["sched"])
    model.dropout.rng.bit_generator.state = ckpt["dropout_rng"]
    assert sched.last_step == 15
    run(model, opt, sched, batches[15:])
    for (name, a), b in zip(reference[0].named_parameters(), model.parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)
    assert opt.lr == reference[1].lr
