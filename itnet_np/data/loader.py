"""A minimal batch iterator over arrays that share their first axis.

``DataLoader((x, y), batch_size, shuffle=True, seed=0, drop_last=False)``: each pass (``for xb, yb
in loader``) visits every example once, in order, or in a permutation drawn from
``numpy.random.default_rng([seed, epoch])``. The epoch counts passes and can be set
(``loader.set_epoch(e)``), so a resumed run sees exactly the batches of an uninterrupted one.
With ``drop_last`` a final batch smaller than ``batch_size`` is skipped.
"""
import numpy as np

from ..errors import ConfigError, ShapeError
from .base import check_int


class DataLoader:
    """Batches of ``arrays`` (a tuple of arrays with the same length N); see the module docstring."""

    def __init__(self, arrays, batch_size, shuffle=False, seed=0, drop_last=False):
        if not isinstance(arrays, (tuple, list)) or not arrays:
            raise ConfigError(f"arrays must be a non-empty tuple of arrays, got {type(arrays).__name__}")
        self.arrays = tuple(arrays)
        n = len(self.arrays[0])
        for i, a in enumerate(self.arrays):
            if len(a) != n:
                raise ShapeError(f"DataLoader: arrays[{i}] has {len(a)} examples, arrays[0] has {n}")
        self.n = n
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.shuffle = bool(shuffle)
        self.seed = check_int("seed", seed, 0)
        self.drop_last = bool(drop_last)
        self.epoch = 0

    def set_epoch(self, epoch):
        """Make the next pass epoch number ``epoch`` (its order depends on seed and epoch only)."""
        self.epoch = check_int("epoch", epoch, 0)

    def order(self, epoch):
        """The example indices of pass ``epoch``: (N,) int64."""
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def __len__(self):
        full, rest = divmod(self.n, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self):
        order = self.order(self.epoch)
        self.epoch += 1
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            yield tuple(a[idx] for a in self.arrays)
