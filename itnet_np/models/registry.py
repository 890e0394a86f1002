"""Which models fit which task, and how to build them: the one table the CLI (``itnet train``) and the
experiments script (bench/experiments.py) read.

=============== ============== ========================================= =============================
task            data set       models that fit (first: ITNet)            metric
=============== ============== ========================================= =============================
mnist1d         mnist1d        itnet, cnn (1-D ResNet), gru, transformer  accuracy
                               (the last three on 9-sample windows)
digits          digits         itnet (2x2 patches), cnn (2-D ResNet)     accuracy
listops         listops (256)  itnet, transformer, gru                   accuracy
burgers         burgers        itnet (operator), cnn (grid CNN)          relative L2 (rel_l2)
antiderivative  antiderivative itnet (operator), cnn (grid CNN)          relative L2 (rel_l2)
=============== ============== ========================================= =============================

ITNet is built at a named size (``ITNetConfig.named``, optionally an ablation, with the task's
``itnet`` options: the operator tasks integrate over the residual stream and drop the final LN,
``OPERATOR``, so the functions' amplitudes pass through linearly); every baseline is
built at the width whose parameter count is nearest ITNet's (``match_width``, within 20%), so the
comparisons are at matched parameter counts. :func:`batch_inputs` turns a batch of a data set's
arrays into the model's arguments, :func:`batch_target` the labels/targets into what the loss takes.

Signals (MNIST-1D) reach the sequence models (itnet, transformer, gru) as windows: token t holds
the ``window`` samples centred on sample ``t * stride`` (zero-padded at the ends) and sits at that
sample's position (:func:`signal_windows`), the 1-D counterpart of the image patches; the CNN reads
the raw signal (its first convolution is its own window). Every sequence model gets the same tokens.

Operator tasks are trained at ``resolution`` points, on the relative L2 loss (the metric, as FNO
trains: the MSE lets large-norm functions dominate); the data are generated once at 4x that
resolution (``fine_resolution``) and subsampled, so :func:`load_task_data` can hand out the same
functions at the training grid or at the 4x grid (discretisation invariance, ``itnet eval
--resolution``). Token batches are cut after their longest real sequence (trailing padding carries
weight 0 in every token model, so this changes no output, only the cost).
"""
import dataclasses

import numpy as np

from ..errors import ConfigError, ShapeError
from ..nn.functional.conv import unfold
from .baselines import GridCNN, GRUClassifier, ResNetCNN, Transformer
from .config import ABLATIONS, ITNetConfig
from .itnet import itnet_for_functions, itnet_for_images, itnet_for_tokens
from .params import count_parameters, match_width


@dataclasses.dataclass(frozen=True)
class Task:
    """A task: its data set, modality ('signal', 'image', 'tokens', 'function'), kind ('classify' or
    'regress'), the models that fit it, and the data options used (``data_options``)."""
    name: str
    dataset: str
    modality: str
    models: tuple
    data_options: dict = dataclasses.field(default_factory=dict)
    resolution: int | None = None        # operator tasks: the training grid
    window: tuple | None = None          # signals: (window, stride) of the sequence models' tokens
    itnet: dict = dataclasses.field(default_factory=dict)   # ITNetConfig fields set for this task

    @property
    def kind(self):
        return "regress" if self.modality == "function" else "classify"

    @property
    def metric(self):
        return "rel_l2" if self.kind == "regress" else "accuracy"


OPERATOR = {"source": "stream", "final_norm": False}   # see ITNetConfig: amplitudes pass through exactly
TASKS = {
    "mnist1d": Task("mnist1d", "mnist1d", "signal", ("itnet", "cnn", "gru", "transformer"),
                    window=(9, 2)),
    "digits": Task("digits", "digits", "image", ("itnet", "cnn")),
    "listops": Task("listops", "listops", "tokens", ("itnet", "transformer", "gru"),
                    {"max_length": 256, "num_test": 250}),
    "burgers": Task("burgers", "burgers", "function", ("itnet", "cnn"),
                    {"num_train": 400, "num_test": 100, "resolution": 128, "fine": 128}, resolution=32,
                    itnet=OPERATOR),
    "antiderivative": Task("antiderivative", "antiderivative", "function", ("itnet", "cnn"),
                           {"num_train": 1000, "num_test": 200, "resolution": 128}, resolution=32, itnet=OPERATOR),
}
PAD = 0  # the token id of padding in the token data sets (data.listops.PAD)


def get_task(name):
    """The :class:`Task` called ``name``; ConfigError naming the known ones otherwise."""
    if name not in TASKS:
        raise ConfigError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


def check_fits(task, model):
    """ConfigError unless ``model`` fits ``task`` (the message lists the models that do)."""
    task = get_task(task) if isinstance(task, str) else task
    if model not in task.models:
        raise ConfigError(f"model {model!r} does not fit task {task.name!r}; models that fit "
                          f"{task.name}: {', '.join(task.models)}")


def load_task_data(task, grid=None, cache=True, **options):
    """The task's Dataset (``options`` override the task's data options, e.g. smaller sets for a
    smoke test); operator tasks subsampled to ``grid`` points (default: the training grid)."""
    from ..data import get_dataset
    from ..data.operators import subsample
    task = get_task(task) if isinstance(task, str) else task
    data = get_dataset(task.dataset, cache=cache, **{**task.data_options, **options})
    if task.modality == "function":
        data = subsample(data, grid or task.resolution)
    elif grid is not None:
        raise ConfigError(f"task {task.name!r} has a fixed grid; a resolution applies to the operator tasks "
                          f"({', '.join(n for n, t in TASKS.items() if t.modality == 'function')})")
    return data


def _out(task, data):
    return data.num_classes if task.kind == "classify" else 1


def _sequence_length(task, data):
    length = data.x_train.shape[1]
    return -(-length // task.window[1]) if task.window else length


def _in_features(task):
    """Input features per token of a signal's sequence models: the window length (1 without windows)."""
    return task.window[0] if task.window else 1


def signal_windows(x, positions, window, stride):
    """Windows of 1-D signals as tokens: x (B, L) -> (B, T, window) with T = ceil(L / stride) and
    tokens[b, t, k] = x[b, t*stride + k - (window-1)//2] (0 outside [0, L)); positions (L, 1) -> the
    tokens' positions positions[::stride] (T, 1), each window's centre sample."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ShapeError(f"signal_windows: x must be (B, L), got shape {x.shape}")
    length = x.shape[1]
    if positions is None or np.shape(positions) != (length, 1):
        raise ShapeError(f"signal_windows: positions must be ({length}, 1) to match x {x.shape}, got "
                         f"{None if positions is None else np.shape(positions)}")
    left = (window - 1) // 2
    padded = np.pad(x, ((0, 0), (left, window - 1 - left)))[:, None]          # (B, 1, L + window - 1)
    cols = unfold(padded, kernel=(window,), stride=(stride,), dilation=(1,))  # im2col: (B, 1, window, T)
    return cols[:, 0].transpose(0, 2, 1), np.asarray(positions)[::stride]


def _baseline(task, model, data, width, seed):
    """The baseline ``model`` of ``task`` at ``width`` (hidden size for the GRU)."""
    out, m = _out(task, data), task.modality
    if model == "cnn":
        if m == "function":
            return GridCNN(1, 1, data.x_train.shape[1], width=width, rng=seed)
        return ResNetCNN(1, out, width=width, dim=2 if m == "image" else 1, rng=seed)
    if model == "gru":
        if m == "tokens":
            return GRUClassifier(out, hidden=width, vocab=_vocab(data), pad_index=PAD, rng=seed)
        return GRUClassifier(out, hidden=width, in_features=_in_features(task), rng=seed)
    if model == "transformer":
        common = {"width": width, "depth": 2, "heads": 4, "max_length": _sequence_length(task, data), "rng": seed}
        if m == "tokens":
            return Transformer(_vocab(data), out, pad_index=PAD, **common)
        return Transformer(None, out, in_features=_in_features(task), **common)
    raise ConfigError(f"no baseline called {model!r}")  # unreachable after check_fits


def _vocab(data):
    from ..data.listops import VOCAB
    return len(VOCAB)


def itnet_config(size="small", ablation=None, **options):
    """ITNetConfig.named(size, **options), with the kernel inputs of ``ABLATIONS[ablation]`` when given."""
    config = ITNetConfig.named(size, **options)
    if ablation is not None:
        if ablation not in ABLATIONS:
            raise ConfigError(f"unknown ablation {ablation!r}; choose one of {', '.join(ABLATIONS)}")
        config = config.ablation(ablation)
    return config


def build_model(task, model, data, size="small", seed=0, ablation=None):
    """The ``model`` for ``task`` on ``data``: ITNet at ``size`` (and ``ablation``), or a baseline
    whose parameter count is matched (within 20%) to the full ITNet of that size."""
    task = get_task(task) if isinstance(task, str) else task
    check_fits(task, model)
    if ablation is not None and model != "itnet":
        raise ConfigError(f"--ablation applies to the itnet model only, not {model!r}")
    config = itnet_config(size, ablation if model == "itnet" else None, **task.itnet)
    out, m = _out(task, data), task.modality
    if model == "itnet":
        if m == "image":
            return itnet_for_images(1, out, config, patch=2, rng=seed)     # 8x8 -> 16 tokens
        if m == "tokens":
            return itnet_for_tokens(_vocab(data), out, config, max_length=_sequence_length(task, data),
                                    pad_index=PAD, rng=seed)
        return itnet_for_functions(_in_features(task), out, config, task=task.kind, rng=seed)
    target = count_parameters(build_model(task, "itnet", data, size, seed))
    step = 4 if model == "transformer" else 1
    _, net = match_width(lambda w: _baseline(task, model, data, w, seed), target,
                         widths=range(step, 513, step), tolerance=0.2)
    return net


def batch_inputs(task, model, x, positions):
    """The model's arguments for a batch ``x`` of the task's inputs (see the module docstring)."""
    task = get_task(task) if isinstance(task, str) else task
    m = task.modality
    if m == "tokens":
        length = max(int(np.max(np.flatnonzero((x != PAD).any(axis=0)), initial=0)) + 1, 1)
        return (x[:, :length],)
    if m == "image":
        return (x[:, None],)                                             # (B, 1, H, W)
    if m == "signal" and model == "cnn":
        return (x[:, None],)                                             # (B, 1, L)
    if m == "signal" and task.window:
        tokens, centres = signal_windows(x, positions, *task.window)     # (B, T, window), (T, 1)
        return (tokens, centres[None]) if model == "itnet" else (tokens,)
    if model == "itnet" or m == "function":
        return (x[..., None], positions[None])                           # values (B, N, 1), (1, N, 1)
    return (x[..., None],)                                               # (B, T, 1) sequences


def batch_target(task, y):
    """Labels as they are (classification); targets (B, N) -> (B, N, 1) (regression)."""
    task = get_task(task) if isinstance(task, str) else task
    return y[..., None] if task.kind == "regress" else y
