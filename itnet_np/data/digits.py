"""Digits: scikit-learn's bundled handwritten digits (UCI), 1797 real 8x8 images, 10 classes.

No download: the images ship inside scikit-learn, installed by the optional extra
``pip install 'itnet-np[data]'``. Pixels (0..16) are scaled to [0, 1]; the split is stratified
by class and seeded (``test_fraction``, default 0.2).

Shapes: x (N, 8, 8) float32, y (N,) int64, positions (8, 8, 2) float32: (row, column) / 7.
"""
import numpy as np

from ..errors import ConfigError
from .base import Dataset, check_float, stratified_split

EXTRA = "pip install 'itnet-np[data]'"


def require(module, package, purpose):
    """Import ``module`` (from the optional ``package`` of the ``data`` extra), or ConfigError
    naming the extra."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{purpose} needs the optional package {package!r}: {EXTRA}") from None


def grid_2d(h, w):
    """(h, w, 2) float32 (row, column) coordinates scaled to [0, 1]."""
    rows, cols = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    return np.stack([rows, cols], axis=-1).astype(np.float32)


def make_digits(test_fraction=0.2, seed=0):
    """Load and split the digits (see the module docstring)."""
    datasets = require("sklearn.datasets", "scikit-learn", "the digits data set")
    test_fraction = check_float("test_fraction", test_fraction)
    if test_fraction >= 1:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    raw = datasets.load_digits()
    x = (np.asarray(raw.images, dtype=np.float64) / 16.0).astype(np.float32)
    y = np.asarray(raw.target, dtype=np.int64)
    train, test = stratified_split(y, test_fraction, np.random.default_rng(seed))
    return Dataset(x[train], y[train], x[test], y[test], grid_2d(8, 8), 10)
