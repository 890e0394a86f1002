"""CI smoke of every (task, model) pair that fits (models.registry.TASKS): tiny data, the tiny ITNet
size (baselines matched to it), a few Adam steps on one batch through the Trainer; the loss must
fall and the model must beat the trivial predictor on that batch: accuracy above the majority
class's share (classification), relative L2 below the zero predictor's, which is exactly 1
(operators). The whole module is sized to run in well under 60 s on 2 cores."""
import numpy as np
import pytest

from itnet_np import optim
from itnet_np.models import count_parameters, registry
from itnet_np.train import Trainer, accuracy, relative_l2

# Small versions of each task's data (the loaders' size arguments); ListOps at length <= 48 here.
SMALL = {
    "mnist1d": {"num_samples": 200},
    "digits": {},
    "listops": {"num_train": 64, "num_test": 8, "min_length": 8, "max_length": 48},
    "burgers": {"num_train": 8, "num_test": 2, "resolution": 32, "fine": 32},
    "antiderivative": {"num_train": 16, "num_test": 4, "resolution": 64, "fine": 256},
}
RESOLUTION = {"burgers": 8, "antiderivative": 16}
PAIRS = [(task, model) for task, spec in registry.TASKS.items() for model in spec.models]
STEPS, BATCH = 30, 16


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    import importlib.util
    mp = pytest.MonkeyPatch()
    mp.setenv("ITNET_DATA_DIR", str(tmp_path_factory.mktemp("data")))
    missing = {"digits"} if importlib.util.find_spec("sklearn") is None else set()   # the data extra
    out = {task: registry.load_task_data(task, RESOLUTION.get(task), **SMALL[task])
           for task in registry.TASKS if task not in missing}
    mp.undo()
    return out


def test_every_task_is_covered():
    assert set(SMALL) == set(registry.TASKS)


@pytest.mark.parametrize("task, model", PAIRS)
def test_smoke_loss_falls_and_beats_the_trivial_predictor(task, model, datasets):
    import itnet_np as itn
    from itnet_np.nn import functional as F

    if task not in datasets:
        pytest.skip(f"{task} needs the data extra (scikit-learn)")
    data, spec = datasets[task], registry.TASKS[task]
    net = registry.build_model(task, model, data, size="tiny", seed=0)
    reference = count_parameters(registry.build_model(task, "itnet", data, size="tiny", seed=0))
    assert abs(count_parameters(net) - reference) <= 0.2 * reference          # matched parameter counts
    x, y = data.x_train[:BATCH], data.y_train[:BATCH]
    inputs, target = registry.batch_inputs(task, model, x, data.positions), registry.batch_target(task, y)
    regress = spec.kind == "regress"
    loss_fn = (lambda out, t: F.mse_loss(out, itn.tensor(t))) if regress else F.cross_entropy
    trainer = Trainer(net, optim.Adam(net, lr=2e-2), loss_fn, progress=False)
    losses = [trainer.train_step(inputs, target) for _ in range(STEPS)]
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    metric = "rel_l2" if regress else "accuracy"
    result = trainer.evaluate([(inputs, target)], {metric: relative_l2 if regress else accuracy})
    if regress:
        assert result["rel_l2"] < 1.0                  # the zero predictor's relative L2 is exactly 1
    else:
        majority = np.bincount(y).max() / len(y)
        assert result["accuracy"] > majority, (result, majority)
