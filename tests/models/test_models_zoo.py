"""Every model of the zoo on a tiny synthetic task: output shapes, a gradient for every parameter,
the training loss falls within a few dozen steps, and pickling keeps the function."""
import pickle

import numpy as np
import pytest

import itnet_np as itn
from itnet_np import models, optim
from itnet_np.nn import functional as F

TINY = models.ITNetConfig.named("tiny")
RNG = np.random.default_rng(0)
IMAGES = RNG.normal(size=(16, 1, 4, 4)).astype(np.float32)
IMAGE_LABELS = (IMAGES[:, 0, :2].mean(axis=(1, 2)) > IMAGES[:, 0, 2:].mean(axis=(1, 2))).astype(np.int64)
SIGNALS = RNG.normal(size=(16, 1, 12)).astype(np.float32)
SIGNAL_LABELS = (SIGNALS[:, 0, :6].sum(1) > SIGNALS[:, 0, 6:].sum(1)).astype(np.int64)
TOKENS = RNG.integers(0, 5, size=(16, 6))
TOKEN_LABELS = (TOKENS[:, 0] % 2).astype(np.int64)
GRID = np.linspace(0.0, 1.0, 12, dtype=np.float32)[None, :, None]
FREQ = RNG.uniform(1.0, 3.0, size=(16, 1, 1)).astype(np.float32)
VALUES = np.cos(FREQ * GRID).astype(np.float32)              # u = cos(k x)
TARGETS = (np.sin(FREQ * GRID) / FREQ).astype(np.float32)    # its antiderivative from 0


def _ce(out, y):
    return F.cross_entropy(out, y)


def _mse(out, y):
    return F.mse_loss(out, itn.tensor(y))


CASES = {
    "itnet_image": (lambda: models.itnet_for_images(1, 2, TINY, patch=2, rng=0), (IMAGES,), IMAGE_LABELS, _ce, (16, 2)),
    "itnet_pixels": (lambda: models.itnet_for_images(1, 2, TINY, patch=1, rng=0), (IMAGES,), IMAGE_LABELS, _ce, (16, 2)),
    "cnn2d": (lambda: models.ResNetCNN(1, 2, width=4, dim=2, rng=0), (IMAGES,), IMAGE_LABELS, _ce, (16, 2)),
    "cnn1d": (lambda: models.ResNetCNN(1, 2, width=4, dim=1, rng=0), (SIGNALS,), SIGNAL_LABELS, _ce, (16, 2)),
    "itnet_tokens": (lambda: models.itnet_for_tokens(5, 2, TINY, max_length=8, rng=0), (TOKENS,), TOKEN_LABELS, _ce, (16, 2)),
    "transformer": (lambda: models.Transformer(5, 2, width=8, depth=1, heads=2, max_length=8, rng=0), (TOKENS,),
                    TOKEN_LABELS, _ce, (16, 2)),
    "transformer_signal": (lambda: models.Transformer(None, 2, width=8, depth=1, heads=2, max_length=12, in_features=1,
                                                      rng=0), (SIGNALS.transpose(0, 2, 1),), SIGNAL_LABELS, _ce, (16, 2)),
    "gru_tokens": (lambda: models.GRUClassifier(2, hidden=8, vocab=5, rng=0), (TOKENS,), TOKEN_LABELS, _ce, (16, 2)),
    "gru_signal": (lambda: models.GRUClassifier(2, hidden=8, in_features=1, rng=0), (SIGNALS.transpose(0, 2, 1),),
                   SIGNAL_LABELS, _ce, (16, 2)),
    "itnet_signal": (lambda: models.itnet_for_functions(1, 2, TINY, task="classify", rng=0),
                     (SIGNALS.transpose(0, 2, 1), GRID), SIGNAL_LABELS, _ce, (16, 2)),
    "itnet_function": (lambda: models.itnet_for_functions(1, 1, TINY, rng=0), (VALUES, GRID), TARGETS, _mse, (16, 12, 1)),
    "grid_cnn": (lambda: models.GridCNN(1, 1, 12, width=8, depth=2, rng=0), (VALUES, GRID), TARGETS, _mse, (16, 12, 1)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_shape_and_every_parameter_gets_a_gradient(name):
    build, inputs, target, loss_fn, shape = CASES[name]
    model = build()
    out = model(*inputs)
    assert out.shape == shape and out.dtype == np.float32
    loss_fn(out, target).backward()
    names = [n for n, p in model.named_parameters() if p.grad is None or not np.any(p.grad.data != 0)]
    assert not names, f"{name}: no gradient reached {names}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_training_loss_falls(name):
    build, inputs, target, loss_fn, _ = CASES[name]
    model = build()
    opt = optim.Adam(model, lr=1e-2)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn(model(*inputs), target)
        loss.backward()
        opt.step()
        losses.append(float(loss.data))
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:3]), losses


@pytest.mark.parametrize("name", sorted(CASES))
def test_pickle_round_trip_keeps_outputs(name):
    build, inputs, *_ = CASES[name]
    model = build().eval()
    clone = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(clone(*inputs).data, model(*inputs).data)
    assert clone.state_dict().keys() == model.state_dict().keys()
