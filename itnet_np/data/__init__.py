"""Data sets and loaders: ``get_dataset(name, **options)`` -> :class:`Dataset`.

Generated and bundled sets, every one deterministic from its ``seed`` option and cached as npz in
``$ITNET_DATA_DIR`` (default ``~/.cache/itnet_np``; pass ``cache=False`` to skip the cache):

=============== ============================================= ==================================
name            x, y                                          positions
=============== ============================================= ==================================
mnist1d         (N, 40) float32, (N,) int64 in 0..9           (40, 1)
digits          (N, 8, 8) float32 in [0, 1], (N,) int64       (8, 8, 2)   (needs the data extra)
listops         (N, 256) int64 token ids, (N,) int64 in 0..9  (256, 1)
antiderivative  (N, R) float32, (N, R) float32                (R, 1), R = resolution
burgers         (N, R) float32, (N, R) float32                (R, 1), R = resolution
=============== ============================================= ==================================

Each module documents its recipe and options. Formats users bring: :func:`load_image_folder`
(class folders of images) and :func:`read_tsv` with :func:`build_vocab` / :func:`encode` (GLUE-style
TSV). :class:`DataLoader` batches arrays, shuffled by a seed.
"""
import inspect

from ..errors import ConfigError
from .base import Dataset, cache_path, cached, data_dir
from .digits import make_digits
from .folders import load_image_folder
from .listops import make_listops
from .loader import DataLoader
from .mnist1d import make_mnist1d
from .operators import make_antiderivative, make_burgers
from .text import build_vocab, encode, read_tsv

# name -> (builder, version): bump the version when a builder's output changes (new cache key).
DATASETS = {
    "mnist1d": (make_mnist1d, 1),
    "digits": (make_digits, 1),
    "listops": (make_listops, 1),
    "antiderivative": (make_antiderivative, 1),
    "burgers": (make_burgers, 1),
}


def options(name):
    """The options of data set ``name`` with their defaults: {option: default}."""
    builder = _builder(name)
    return {p.name: p.default for p in inspect.signature(builder).parameters.values()
            if p.kind is p.POSITIONAL_OR_KEYWORD}


def _builder(name):
    if name not in DATASETS:
        raise ConfigError(f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name][0]


def get_dataset(name, cache=True, **opts):
    """Data set ``name`` built with ``opts`` (defaults filled in), from the cache when present."""
    known = options(name)
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise ConfigError(f"get_dataset({name!r}): unknown option(s) {unknown}; options: {sorted(known)}")
    full = {**known, **opts}
    key = {k: list(v) if isinstance(v, tuple) else v for k, v in full.items()}
    key["__version__"] = DATASETS[name][1]
    return cached(name, key, lambda: _builder(name)(**full), cache=cache)


__all__ = [
    "DATASETS",
    "DataLoader",
    "Dataset",
    "build_vocab",
    "cache_path",
    "cached",
    "data_dir",
    "encode",
    "get_dataset",
    "load_image_folder",
    "make_antiderivative",
    "make_burgers",
    "make_digits",
    "make_listops",
    "make_mnist1d",
    "options",
    "read_tsv",
]
