"""Checkpoints: ``save(path, obj)`` and ``load(path)``, safe to write and safe to read.

``obj`` is a state_dict (name -> array or Tensor) or any nesting of dicts (string keys) and lists
holding arrays, Tensors and JSON values (None, bool, int, float, str)::

    itn.save("ckpt.npz", {"model": model.state_dict(), "optim": opt.state_dict(), "step": 3})

Format: an ``.npz`` (zip) archive. Each array is stored as ``a0.npy``, ``a1.npy``, ... and the entry
``__itnet_meta__.npy`` holds UTF-8 JSON as a uint8 array::

    {"format": "itnet-np-checkpoint", "version": 1,
     "tree": <obj with every array replaced by {"__array__": "a0"}>,
     "arrays": {"a0": {"shape": [...], "dtype": "<f4"}, ...}}

Loading never unpickles (``np.load(..., allow_pickle=False)``): object arrays are refused when
saving and reading. Tuples come back as lists, Tensors and device arrays as host ndarrays.

Saving is atomic: the archive is written to a temporary file in the target's directory, flushed
and fsync'ed, then moved over the target with ``os.replace``; if anything fails the old file is
untouched and the temporary file is removed. Every problem on loading (missing, not a zip,
truncated, no metadata, foreign format, missing or mismatched arrays) raises CheckpointError.
"""
import contextlib
import json
import os
import tempfile
import zipfile

import numpy as np

from .autograd import backend
from .autograd.tensor import Tensor
from .errors import CheckpointError

FORMAT = "itnet-np-checkpoint"
VERSION = 1
META_KEY = "__itnet_meta__"
_REF = "__array__"
_JSON_SCALARS = (type(None), bool, int, float, str)


# ----- saving ---------------------------------------------------------------------------------
def _encode(obj, arrays, where):
    """obj with arrays replaced by {'__array__': key}; the arrays go into ``arrays``."""
    if isinstance(obj, Tensor):
        obj = obj.data
    if isinstance(obj, np.generic):
        obj = np.asarray(obj)
    if isinstance(obj, np.ndarray) or backend.is_cupy(obj):
        array = backend.to_device(obj, "cpu")
        if array.dtype.hasobject or array.dtype.kind == "V":
            raise CheckpointError(f"save: {where} is an array of dtype {array.dtype}; only numeric, bool "
                                  "and string arrays can be stored (object arrays would need pickle)")
        key = f"a{len(arrays)}"
        arrays[key] = array
        return {_REF: key}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if not isinstance(k, str):
                raise CheckpointError(f"save: {where} has a key {k!r} of type {type(k).__name__}; "
                                      "dict keys must be strings")
            if k == _REF:
                raise CheckpointError(f"save: {where} uses the reserved key {_REF!r}")
            out[k] = _encode(v, arrays, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, _JSON_SCALARS):
        return obj
    raise CheckpointError(f"save: {where} is a {type(obj).__name__}; a checkpoint holds arrays, "
                          "Tensors, dicts with string keys, lists and JSON scalars only")


def save(path, obj, compress=False):
    """Write ``obj`` to ``path`` atomically (see the module docstring). ``compress=True`` deflates
    the arrays (smaller, slower). The file is written exactly at ``path`` (no suffix is added)."""
    arrays = {}
    tree = _encode(obj, arrays, "obj")
    meta = {"format": FORMAT, "version": VERSION, "tree": tree,
            "arrays": {k: {"shape": list(a.shape), "dtype": a.dtype.str} for k, a in arrays.items()}}
    meta_bytes = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    writer = np.savez_compressed if compress else np.savez
    with atomic_write(path) as f:
        writer(f, **{META_KEY: meta_bytes}, **arrays)


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file beside ``path``; on success, fsync it and rename it onto ``path``.

    A crash or exception at any point leaves the previous file untouched and no temporary file
    behind. Used for checkpoints and every result file the project writes.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            # mkstemp makes the file private (0600); give it the mode a plain open() would have had.
            os.chmod(tmp, _file_mode(path))
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(directory)


def write_json(path, obj):
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def _file_mode(path):
    """The existing checkpoint's permissions, or 0666 minus the umask for a new file."""
    try:
        return os.stat(path).st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _fsync_directory(directory):
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----- loading --------------------------------------------------------------------------------
def _read_archive(path):
    """{entry: ndarray} of every entry in the npz at ``path``, or CheckpointError."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except FileNotFoundError:
        raise CheckpointError(f"load: no checkpoint at '{path}'") from None
    except OSError as e:
        raise CheckpointError(f"load: cannot read '{path}': {e}") from e
    if not head:
        raise CheckpointError(f"load: '{path}' is empty (an interrupted copy or write?)")
    if head.startswith(b"\x93NUMPY"):
        raise CheckpointError(f"load: '{path}' is a single .npy array, not an itnet-np checkpoint (.npz)")
    if not head.startswith(b"PK\x03\x04"):
        raise CheckpointError(f"load: '{path}' is not a zip/npz archive (it starts with {head!r}); "
                              "not an itnet-np checkpoint")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise CheckpointError(f"load: '{path}' holds an object array, which cannot be read without "
                                  "pickle; refusing (not an itnet-np checkpoint)") from e
        raise CheckpointError(f"load: '{path}' is corrupt: {e}") from e
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"load: '{path}' is truncated or corrupt ({type(e).__name__}: {e})") from e


def _decode(tree, arrays):
    if isinstance(tree, dict):
        if set(tree) == {_REF}:
            return arrays[tree[_REF]]
        return {k: _decode(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_decode(v, arrays) for v in tree]
    return tree


def load(path):
    """Read a checkpoint written by :func:`save`; arrays come back as host ndarrays."""
    path = os.fspath(path)
    entries = _read_archive(path)
    if META_KEY not in entries:
        raise CheckpointError(f"load: '{path}' has no '{META_KEY}' metadata entry: a plain npz, not an "
                              f"itnet-np checkpoint (entries: {sorted(entries)[:8]})")
    raw_meta = entries.pop(META_KEY)
    if raw_meta.dtype != np.uint8 or raw_meta.ndim != 1:
        raise CheckpointError(f"load: metadata in '{path}' is {raw_meta.dtype}{list(raw_meta.shape)}, "
                              "expected a 1-d uint8 array of JSON")
    try:
        meta = json.loads(raw_meta.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"load: metadata in '{path}' is not valid UTF-8 JSON: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        tag = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"load: '{path}' has format tag {tag!r}, expected {FORMAT!r}")
    version = meta.get("version")
    if not isinstance(version, int) or not 1 <= version <= VERSION:
        raise CheckpointError(f"load: '{path}' is format version {version!r}; this itnet-np reads "
                              f"versions 1..{VERSION} (upgrade itnet-np to read newer checkpoints)")
    if "tree" not in meta or not isinstance(meta.get("arrays"), dict):
        raise CheckpointError(f"load: metadata in '{path}' lacks 'tree' or 'arrays'")
    declared = meta["arrays"]
    missing = sorted(set(declared) - set(entries))
    unexpected = sorted(set(entries) - set(declared))
    if missing or unexpected:
        raise CheckpointError(f"load: '{path}' is inconsistent with its metadata: missing arrays "
                              f"{missing}, unexpected entries {unexpected}")
    for key, spec in declared.items():
        a = entries[key]
        if list(a.shape) != list(spec.get("shape", [])) or a.dtype.str != spec.get("dtype"):
            raise CheckpointError(f"load: array '{key}' in '{path}' is {a.dtype.str}{list(a.shape)}, "
                                  f"metadata says {spec.get('dtype')}{spec.get('shape')}")
    try:
        return _decode(meta["tree"], entries)
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"load: metadata tree in '{path}' refers to a missing array: {e}") from e
