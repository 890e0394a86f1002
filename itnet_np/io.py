"""Checkpoints: ``save(path, obj)`` and ``load(path)``, safe to write and safe to read.

``obj`` is a state_dict (name -> array or Tensor) or any nesting of dicts (string keys) and lists
holding arrays, Tensors and JSON values (None, bool, int, float, str)::

    itn.save("ckpt.npz", {"model": model.state_dict(), "optim": opt.state_dict(), "step": 3})

Format: an ``.npz`` (zip) archive. Each array is stored as ``a0.npy``, ``a1.npy``, ... and the entry
``__itnet_meta__.npy`` holds UTF-8 JSON as a uint8 array::

    {"format": "itnet-np-checkpoint", "version": 1,
     "tree": <obj with every array replaced by {"__array__": "a0"}>,
     "arrays": {"a0": {"shape": [...], "dtype": "<f4"}, ...}}

Loading never unpickles (``allow_pickle=False``): object arrays are refused when saving and
reading, and no entry is allocated before its header is checked against the size the zip records.
Tuples come back as lists, Tensors and device arrays as host ndarrays.

Saving is atomic (see :func:`atomic_write`): the path holds either the complete old file or the
complete new one, whatever happens. Every problem on loading (missing, not a zip, truncated or
garbled bytes, no metadata, foreign format or version, malformed metadata, missing or mismatched
arrays) raises CheckpointError naming the file and what is wrong.
"""
import contextlib
import hashlib
import json
import math
import os
import re
import socket
import stat
import struct
import tempfile
import zipfile
import zlib

import numpy as np

from .autograd import backend
from .autograd.tensor import Tensor
from .errors import CheckpointError, DeviceError

try:
    import fcntl
except ImportError:  # Windows: no flock, and os.kill(pid, 0) there would signal the process
    fcntl = None

FORMAT = "itnet-np-checkpoint"
VERSION = 1
META_KEY = "__itnet_meta__"
_REF = "__array__"
_JSON_SCALARS = (type(None), bool, int, float, str)
# Temporaries are named '.NAME.HOST-PID.XXXXXXXX.tmp': HOST hashes this machine's name, PID is the writer.
_HOST = hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


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

    The one atomic writer of the project (checkpoints, ``itnet verify --json``, the benches). The
    temporary is ``.NAME.HOST-PID.XXXXXXXX.tmp`` in the target's directory (HOST: a hash of the host
    name, PID: the writer's process id), and the writer holds an exclusive ``flock`` on it until the
    rename. An exception or KeyboardInterrupt removes it and leaves the old file untouched.

    What a crash can leave: ``path`` itself is always the complete old or the complete new file.
    A writer killed outright (SIGKILL, the OOM killer, power loss) cannot clean up, so its temporary
    stays, at most as large as the new file. The next write to the same ``path`` removes every
    temporary of that path that was written on this host by a process that no longer runs and that
    nobody holds a lock on; a temporary of a live writer (another process or thread) is never touched.
    Left for good: temporaries from other hosts (a shared network filesystem), from before this naming,
    all of them where ``fcntl`` is missing (Windows), and, until that process exits, one whose pid has
    been taken by a new, unrelated process.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    os.makedirs(directory, exist_ok=True)
    _remove_stale_temporaries(directory, base)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.{_HOST}-{os.getpid()}.", suffix=".tmp", dir=directory)
    lock = _lock(fd)
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
    finally:
        if lock is not None:
            os.close(lock)
    _fsync_directory(directory)


def _lock(fd):
    """Take an exclusive flock on the open temporary; returns a duplicate descriptor that keeps the
    lock until it is closed (after the rename), or None where locks are unavailable."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return os.dup(fd)
    except OSError:  # a filesystem without locks: the pid check alone protects this writer
        return None


def _remove_stale_temporaries(directory, base):
    """Delete the temporaries of ``base`` whose writer is gone (see :func:`atomic_write`). Best
    effort: anything unexpected leaves the file where it is."""
    if fcntl is None:
        return
    pattern = re.compile(re.escape(f".{base}.") + r"([0-9a-f]{8})-([0-9]{1,10})\.[^.]+\.tmp")
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = pattern.fullmatch(name)
        if match and match[1] == _HOST and not _pid_running(int(match[2])):
            _unlink_if_unlocked(os.path.join(directory, name))


def _pid_running(pid):
    """Whether a process with this id exists on this host (a zombie counts until it is reaped)."""
    if pid == os.getpid():
        return True  # another thread of this process may be writing the same path
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # EPERM: it runs under another user
        return True
    return True


def _unlink_if_unlocked(tmp):
    """Remove the regular file ``tmp`` unless a live process holds a lock on it."""
    try:
        if not stat.S_ISREG(os.lstat(tmp).st_mode):
            return
        fd = os.open(tmp, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(tmp)
    except OSError:  # locked by its writer, or already removed by another cleaner
        pass
    finally:
        os.close(fd)


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
        with zipfile.ZipFile(path) as archive:
            entries = {}
            for info in archive.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else None
                if name is None or name in entries:
                    raise CheckpointError(f"load: '{path}' has a {'duplicate' if name else 'non-.npy'} entry "
                                          f"{info.filename!r}; not an itnet-np checkpoint")
                with archive.open(info) as f:
                    entries[name] = _read_entry(path, info, f)
            return entries
    except CheckpointError:
        raise
    except _CORRUPT as e:
        raise CheckpointError(f"load: '{path}' is truncated or corrupt ({type(e).__name__}: {e})") from e


# What a damaged zip or .npy header can raise from zipfile, zlib and numpy's header parser.
_CORRUPT = (zipfile.BadZipFile, zlib.error, struct.error, EOFError, OSError, KeyError, RuntimeError,
            NotImplementedError, ValueError, OverflowError)


def _read_entry(path, info, f):
    """One .npy entry, read after checking that its header agrees with the size the zip records
    (so a damaged header cannot make us allocate terabytes) and that it needs no pickle."""
    version = np.lib.format.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        raise CheckpointError(f"load: entry {info.filename!r} in '{path}' is .npy format {version}, "
                              "expected 1.0 or 2.0")
    fmt = np.lib.format
    shape, _, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0)(f)
    if dtype.hasobject:
        raise CheckpointError(f"load: '{path}' holds an object array ({info.filename!r}), which cannot be "
                              "read without pickle; refusing (not an itnet-np checkpoint)")
    size = f.tell() + math.prod(shape) * dtype.itemsize
    if size != info.file_size:
        raise CheckpointError(f"load: entry {info.filename!r} in '{path}' is corrupt: its header declares "
                              f"{dtype.str}{list(shape)} ({size} bytes in all), the archive holds "
                              f"{info.file_size} bytes")
    f.seek(0)
    return np.lib.format.read_array(f, allow_pickle=False)


def _decode(tree, arrays):
    if isinstance(tree, dict):
        if set(tree) == {_REF}:
            return arrays[tree[_REF]]
        return {k: _decode(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_decode(v, arrays) for v in tree]
    return tree


def _metadata(path, entries):
    """The checked metadata dict of a checkpoint (popped from ``entries``), or CheckpointError."""
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
    except RecursionError:
        raise CheckpointError(f"load: metadata in '{path}' is nested too deeply to read") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        tag = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"load: '{path}' has format tag {tag!r}, expected {FORMAT!r}")
    version = meta.get("version")
    if type(version) is not int or not 1 <= version <= VERSION:  # bool is an int subclass: refused
        raise CheckpointError(f"load: '{path}' is format version {version!r}; this itnet-np reads "
                              f"versions 1..{VERSION} (upgrade itnet-np to read newer checkpoints)")
    if "tree" not in meta or not isinstance(meta.get("arrays"), dict):
        raise CheckpointError(f"load: metadata in '{path}' lacks 'tree' or an 'arrays' dict")
    for key, spec in meta["arrays"].items():
        shape = spec.get("shape") if isinstance(spec, dict) else None
        if not (isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape)
                and isinstance(spec.get("dtype"), str)):
            raise CheckpointError(f"load: metadata in '{path}' describes array '{key}' as {spec!r:.200}; "
                                  "expected {'shape': [non-negative ints], 'dtype': str}")
    return meta


def _to_device(tree, device):
    """Numeric arrays in ``tree`` moved to ``device`` (bool and string arrays stay on the host)."""
    if isinstance(tree, np.ndarray):
        return backend.to_device(tree, device) if tree.dtype.kind in "biufc" else tree
    if isinstance(tree, dict):
        return {k: _to_device(v, device) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_to_device(v, device) for v in tree]
    return tree


def load(path, device="cpu"):
    """Read a checkpoint written by :func:`save`; arrays come back as host ndarrays, or with
    ``device='cuda'`` their numeric arrays as CuPy arrays (one explicit copy each)."""
    if device not in ("cpu", "cuda"):
        raise DeviceError(f"load: device must be 'cpu' or 'cuda', got {device!r}")
    path = os.fspath(path)
    entries = _read_archive(path)
    meta = _metadata(path, entries)
    declared = meta["arrays"]
    missing = sorted(set(declared) - set(entries))
    unexpected = sorted(set(entries) - set(declared))
    if missing or unexpected:
        raise CheckpointError(f"load: '{path}' is inconsistent with its metadata: missing arrays "
                              f"{missing}, unexpected entries {unexpected}")
    for key, spec in declared.items():
        a = entries[key]
        if list(a.shape) != spec["shape"] or a.dtype.str != spec["dtype"]:
            raise CheckpointError(f"load: array '{key}' in '{path}' is {a.dtype.str}{list(a.shape)}, "
                                  f"metadata says {spec['dtype']}{spec['shape']}")
    try:
        tree = _decode(meta["tree"], entries)
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"load: metadata tree in '{path}' refers to a missing array: {e!r}") from e
    except RecursionError:
        raise CheckpointError(f"load: metadata tree in '{path}' is nested too deeply to read") from None
    return tree if device == "cpu" else _to_device(tree, device)
