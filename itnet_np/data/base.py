"""The dataset record every generator returns, and the npz cache they share.

A :class:`Dataset` holds NumPy arrays only::

    x_train (N_train, *sample_shape)   float32 features, or int64 token ids for sequences
    y_train (N_train,) int64 labels    or (N_train, *target_shape) float32 targets (regression)
    x_test, y_test                     the same for the test split
    positions (*grid, d) float32       where each sample's values sit (a 1-D or 2-D grid), or None
    num_classes                        int for classification, None for regression

``positions`` is shared by every sample: ``positions.shape[:-1] == x_train.shape[1:1 + len(grid)]``.

Caching: ``cached(name, options, build)`` stores ``build()``'s result as
``$ITNET_DATA_DIR/NAME-HASH.npz`` (default directory ``~/.cache/itnet_np``), HASH a digest of the
options and of the generator's version, written atomically through :func:`itnet_np.io.atomic_write`
and read back with ``allow_pickle=False``. A cache file that cannot be read is regenerated.
"""
import hashlib
import json
import os
import zipfile
from typing import NamedTuple

import numpy as np

from ..errors import ConfigError
from ..io import atomic_write

_FIELDS = ("x_train", "y_train", "x_test", "y_test", "positions")


class Dataset(NamedTuple):
    """Train/test arrays plus the sample grid; see the module docstring for shapes and dtypes."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    positions: np.ndarray | None = None
    num_classes: int | None = None


def data_dir():
    """The cache directory: ``$ITNET_DATA_DIR`` or ``~/.cache/itnet_np`` (created on demand)."""
    path = os.environ.get("ITNET_DATA_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "itnet_np")
    os.makedirs(path, exist_ok=True)
    return path


def cache_path(name, options):
    """Where ``cached`` keeps the dataset ``name`` built with ``options`` (a JSON-able dict)."""
    key = json.dumps(options, sort_keys=True)
    digest = hashlib.sha256(f"{name}:{key}".encode()).hexdigest()[:16]
    return os.path.join(data_dir(), f"{name}-{digest}.npz")


def _read(path):
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    positions = arrays.get("positions")
    num_classes = int(arrays["num_classes"]) if "num_classes" in arrays else None
    return Dataset(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                   positions, num_classes)


def _write(path, data):
    arrays = {k: getattr(data, k) for k in _FIELDS if getattr(data, k) is not None}
    if data.num_classes is not None:
        arrays["num_classes"] = np.asarray(data.num_classes, dtype=np.int64)
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def cached(name, options, build, cache=True):
    """``build()`` (a Dataset), memoised on disk under ``name`` + ``options``; ``cache=False``
    builds afresh and writes nothing."""
    if not cache:
        return build()
    path = cache_path(name, options)
    if os.path.exists(path):
        try:
            return _read(path)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # unreadable (an older format, a foreign file): rebuild and replace it
    data = build()
    _write(path, data)
    return data


def check_int(name, value, low, high=None):
    """``value`` as an int in [low, high], else ConfigError naming the option."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low or (high is not None and value > high):
        span = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ConfigError(f"{name} must be {span}, got {value}")
    return int(value)


def check_float(name, value, positive=True):
    """``value`` as a finite float (> 0 when ``positive``), else ConfigError naming the option."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value) or (positive and value <= 0):
        raise ConfigError(f"{name} must be a finite {'positive ' if positive else ''}number, got {value}")
    return value


def grid_1d(n):
    """The periodic-style grid x_j = j / n, j = 0..n-1, as positions of shape (n, 1) float32."""
    return (np.arange(n, dtype=np.float64) / n).astype(np.float32)[:, None]


def stratified_split(labels, test_fraction, rng):
    """Indices (train, test): each class split in the same proportion (round-half-even per class),
    each in a seeded random order (classes interleaved)."""
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test = round(len(idx) * test_fraction)
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
