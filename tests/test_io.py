"""Checkpoints: round trips, atomic saves, and every kind of bad file raising CheckpointError."""
import functools
import io as _stdio
import json
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import itnet_np.io as itio
from itnet_np import nn
from itnet_np.autograd.tensor import Tensor
from itnet_np.errors import CheckpointError


def _state():
    rng = np.random.default_rng(0)
    return {
        "layers.0.weight": rng.standard_normal((4, 3)).astype(np.float32),
        "layers.0.bias": rng.standard_normal(4),
        "table": np.arange(6, dtype=np.int64).reshape(2, 3),
        "mask": np.array([True, False]),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 5)),
        "fortran": np.asfortranarray(rng.standard_normal((3, 2))),
        "names": np.array(["a", "bc"]),
    }


def _assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert isinstance(b[k], np.ndarray) and b[k].dtype == a[k].dtype and b[k].shape == a[k].shape, k
        np.testing.assert_array_equal(b[k], a[k])


def test_state_dict_round_trip(tmp_path):
    sd = _state()
    path = tmp_path / "model.ckpt"  # no suffix is added
    itio.save(path, sd)
    assert os.listdir(tmp_path) == ["model.ckpt"]
    loaded = itio.load(str(path))
    _assert_same(sd, loaded)
    assert list(loaded) == list(sd)  # order kept


def test_nested_round_trip_with_metadata_and_tensors(tmp_path):
    model = nn.MLP([2, 3, 1], rng=0)
    obj = {"model": model.state_dict(), "optim": {"state": {"w": {"step": 3, "buf": Tensor(np.ones(2))}},
                                                  "param_groups": [{"lr": 0.1, "betas": (0.9, 0.99)}]},
           "step": 3, "name": "run-1", "done": False, "none": None, "loss": 0.125, "history": [1.5, np.ones(2)]}
    itio.save(tmp_path / "c.npz", obj, compress=True)
    back = itio.load(tmp_path / "c.npz")
    _assert_same(obj["model"], back["model"])
    assert back["step"] == 3 and back["name"] == "run-1" and back["done"] is False and back["none"] is None
    assert back["loss"] == 0.125
    assert back["optim"]["param_groups"] == [{"lr": 0.1, "betas": [0.9, 0.99]}]  # tuples become lists
    assert back["optim"]["state"]["w"]["step"] == 3
    np.testing.assert_array_equal(back["optim"]["state"]["w"]["buf"], np.ones(2))
    assert back["history"][0] == 1.5 and isinstance(back["history"][1], np.ndarray)
    model2 = nn.MLP([2, 3, 1], rng=5)
    model2.load_state_dict(back["model"])
    _assert_same(model.state_dict(), model2.state_dict())


def test_overwrite_replaces_and_keeps_permissions(tmp_path):
    path = tmp_path / "c.npz"
    itio.save(path, {"a": np.zeros(2)})
    os.chmod(path, 0o640)
    itio.save(path, {"a": np.ones(3)})
    np.testing.assert_array_equal(itio.load(path)["a"], np.ones(3))
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert os.listdir(tmp_path) == ["c.npz"]


def test_save_rejects_what_it_cannot_store_safely(tmp_path):
    for bad, match in [({"a": np.array([{}, 1], dtype=object)}, "object"),
                       ({1: np.zeros(1)}, "keys must be strings"),
                       ({"a": {1, 2}}, "set"),
                       ({"__array__": "a0"}, "reserved")]:
        with pytest.raises(CheckpointError, match=match):
            itio.save(tmp_path / "x.npz", bad)
    assert os.listdir(tmp_path) == []


# ----- atomicity ------------------------------------------------------------------------------
def _interrupted_save(tmp_path, monkeypatch, target, attr):
    path = tmp_path / "c.npz"
    old = {"w": np.arange(5.0)}
    itio.save(path, old)
    original_bytes = path.read_bytes()

    def boom(*args, **kwargs):
        if attr != "os.replace":  # simulate a crash after part of the archive was written
            args[0].write(b"PK\x03\x04 half an archive")
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(target, attr.split(".")[-1], boom)
    with pytest.raises(OSError, match="simulated"):
        itio.save(path, {"w": np.zeros(1000), "v": np.ones(3)})
    monkeypatch.undo()
    assert path.read_bytes() == original_bytes
    _assert_same(old, itio.load(path))
    assert os.listdir(tmp_path) == ["c.npz"]  # no temporary file left behind


def test_failed_rename_leaves_old_checkpoint(tmp_path, monkeypatch):
    _interrupted_save(tmp_path, monkeypatch, itio.os, "os.replace")


def test_crash_while_writing_leaves_old_checkpoint(tmp_path, monkeypatch):
    _interrupted_save(tmp_path, monkeypatch, itio.np, "np.savez")


def test_interrupt_is_not_swallowed(tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(itio.os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        itio.save(tmp_path / "c.npz", {"a": np.zeros(1)})
    assert os.listdir(tmp_path) == []


# ----- writers killed mid-save (SIGKILL): their temporaries -----------------------------------
# The child opens the atomic writer that itio.save uses, writes part of a file, says so, then blocks
# on its stdin: the parent kills it (or lets it live) at a known point of the write.
_WRITER = """
import sys
from itnet_np.io import atomic_write
with atomic_write(sys.argv[1]) as f:
    f.write(b"partial archive " * 4096)
    f.flush()
    print("writing", flush=True)
    sys.stdin.read()
"""


def _start_writer(target):
    """A live child process in the middle of writing ``target``, and its temporary file's name."""
    before = set(os.listdir(os.path.dirname(target)))
    child = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "writing\n"
    (tmp,) = set(os.listdir(os.path.dirname(target))) - before
    assert tmp.startswith(f".{os.path.basename(target)}.{itio._HOST}-{child.pid}.") and tmp.endswith(".tmp")
    return child, tmp


def _kill(child):
    child.send_signal(signal.SIGKILL)
    child.wait()  # reaped: its pid no longer exists
    child.stdin.close()
    child.stdout.close()


def test_next_save_removes_temporaries_of_killed_writers_only(tmp_path):
    fcntl = pytest.importorskip("fcntl", reason="POSIX only: elsewhere stale temporaries are never removed")
    target = tmp_path / "c.npz"
    killed, killed_tmp = _start_writer(target)
    _kill(killed)
    assert killed.returncode == -signal.SIGKILL and killed_tmp in os.listdir(tmp_path)
    live, live_tmp = _start_writer(target)
    try:
        # Temporaries the next save must keep: of another target, from another host, and one whose
        # writer's pid is gone but whose lock is still held (a writer in another pid namespace).
        dead = killed.pid
        keep = [f".other.npz.{itio._HOST}-{dead}.abcdefgh.tmp", f".c.npz.0badc0de-{dead}.abcdefgh.tmp",
                f".c.npz.{itio._HOST}-{dead}.locked00.tmp"]
        for name in keep:
            (tmp_path / name).write_bytes(b"x")
        with open(tmp_path / keep[-1], "rb") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            itio.save(target, {"w": np.arange(3.0)})
        assert sorted(os.listdir(tmp_path)) == sorted(["c.npz", live_tmp] + keep)
        np.testing.assert_array_equal(itio.load(target)["w"], np.arange(3.0))
    finally:
        _kill(live)
    itio.write_json(target, {"second": "save"})  # json results share the writer and its cleanup
    assert sorted(os.listdir(tmp_path)) == sorted(["c.npz"] + keep[:2])
    assert json.loads(target.read_text()) == {"second": "save"}


# ----- bad files ------------------------------------------------------------------------------
def _write_npz(path, **arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _meta(**changes):
    meta = {"format": itio.FORMAT, "version": itio.VERSION, "tree": {"w": {"__array__": "a0"}},
            "arrays": {"a0": {"shape": [2], "dtype": np.dtype(np.float64).str}}}
    meta.update(changes)
    return np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.9, 0.999])
def test_truncated_file(tmp_path, fraction):
    path = tmp_path / "c.npz"
    itio.save(path, _state())
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])
    with pytest.raises(CheckpointError):
        itio.load(path)


def test_corrupted_bytes_fail_the_crc(tmp_path):
    path = tmp_path / "c.npz"
    itio.save(path, {"w": np.zeros(4096)})
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the zero array's payload
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        itio.load(path)


def test_foreign_files(tmp_path):
    cases = {}
    (tmp_path / "text.txt").write_text("hello, I am not a checkpoint\n")
    cases["text.txt"] = "not a zip"
    np.save(tmp_path / "single.npy", np.zeros(3))
    cases["single.npy"] = "single .npy"
    _write_npz(tmp_path / "plain.npz", w=np.zeros(2))
    cases["plain.npz"] = "no '__itnet_meta__' metadata"
    _write_npz(tmp_path / "object.npz", **{itio.META_KEY: _meta(), "a0": np.array([None, {}], dtype=object)})
    cases["object.npz"] = "object array"
    _write_npz(tmp_path / "tag.npz", **{itio.META_KEY: _meta(format="other-tool"), "a0": np.zeros(2)})
    cases["tag.npz"] = "format tag 'other-tool'"
    _write_npz(tmp_path / "future.npz", **{itio.META_KEY: _meta(version=99), "a0": np.zeros(2)})
    cases["future.npz"] = "version 99"
    _write_npz(tmp_path / "missing.npz", **{itio.META_KEY: _meta()})
    cases["missing.npz"] = r"missing arrays \['a0'\]"
    _write_npz(tmp_path / "extra.npz", **{itio.META_KEY: _meta(), "a0": np.zeros(2), "a1": np.zeros(1)})
    cases["extra.npz"] = r"unexpected entries \['a1'\]"
    _write_npz(tmp_path / "shape.npz", **{itio.META_KEY: _meta(), "a0": np.zeros(3)})
    cases["shape.npz"] = "metadata says"
    _write_npz(tmp_path / "json.npz", **{itio.META_KEY: np.frombuffer(b"{not json", np.uint8), "a0": np.zeros(2)})
    cases["json.npz"] = "not valid UTF-8 JSON"
    _write_npz(tmp_path / "metatype.npz", **{itio.META_KEY: np.zeros(3), "a0": np.zeros(2)})
    cases["metatype.npz"] = "expected a 1-d uint8"
    tree = _meta(tree={"w": {"__array__": "a7"}})
    _write_npz(tmp_path / "dangling.npz", **{itio.META_KEY: tree, "a0": np.zeros(2)})
    cases["dangling.npz"] = "missing array"
    cases["does-not-exist.npz"] = "no checkpoint at"
    for name, match in cases.items():
        with pytest.raises(CheckpointError, match=match):
            itio.load(tmp_path / name)


def test_load_never_unpickles(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    itio.save(path, {"model": _state(), "step": 1})
    seen = []
    real_read = np.lib.format.read_array

    def spy(*args, **kwargs):
        seen.append(kwargs.get("allow_pickle"))
        return real_read(*args, **kwargs)

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used while loading a checkpoint")

    monkeypatch.setattr(np.lib.format, "read_array", spy)
    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    _assert_same(_state(), itio.load(path)["model"])
    assert seen == [False] * (len(_state()) + 1)  # every entry, metadata included
    # and an archive whose entries are pickles (an object array) is refused before anything runs
    evil = tmp_path / "evil.npz"
    with zipfile.ZipFile(evil, "w") as z:
        buf = _stdio.BytesIO()
        np.lib.format.write_array(buf, np.array([print], dtype=object), allow_pickle=True)
        z.writestr(itio.META_KEY + ".npy", _npy_bytes(_meta(tree={"w": {"__array__": "a0"}})))
        z.writestr("a0.npy", buf.getvalue())
    with pytest.raises(CheckpointError, match="object array"):
        itio.load(evil)


def _npy_bytes(array):
    buf = _stdio.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=False)
    return buf.getvalue()


def _write_meta_json(path, text, **arrays):
    _write_npz(path, **{itio.META_KEY: np.frombuffer(text.encode(), np.uint8)}, **arrays)


@pytest.mark.parametrize("spec", [[2, "<f8"], "a0", None, {"shape": 2, "dtype": "<f8"}, {"shape": [2]},
                                  {"shape": [2.0], "dtype": "<f8"}, {"shape": [-2], "dtype": "<f8"}])
def test_malformed_array_spec(tmp_path, spec):
    _write_npz(tmp_path / "c.npz", **{itio.META_KEY: _meta(arrays={"a0": spec}), "a0": np.zeros(2)})
    with pytest.raises(CheckpointError, match="describes array 'a0'"):
        itio.load(tmp_path / "c.npz")


@pytest.mark.parametrize("arrays", [["a0"], "a0", 3])
def test_arrays_not_a_dict(tmp_path, arrays):
    _write_npz(tmp_path / "c.npz", **{itio.META_KEY: _meta(arrays=arrays), "a0": np.zeros(2)})
    with pytest.raises(CheckpointError, match="'arrays' dict"):
        itio.load(tmp_path / "c.npz")


@pytest.mark.parametrize("version", [True, False, 1.0, "1", None, 0])
def test_version_must_be_an_int(tmp_path, version):
    _write_npz(tmp_path / "c.npz", **{itio.META_KEY: _meta(version=version), "a0": np.zeros(2)})
    with pytest.raises(CheckpointError, match="format version"):
        itio.load(tmp_path / "c.npz")


@pytest.mark.parametrize("depth", [100, 800, 980, 5000, 100_000])
def test_deeply_nested_metadata(tmp_path, depth):
    head = json.dumps({"format": itio.FORMAT, "version": itio.VERSION, "arrays": {}})[:-1]
    _write_meta_json(tmp_path / "c.npz", head + ', "tree": ' + "[" * depth + "]" * depth + "}")
    try:
        tree = itio.load(tmp_path / "c.npz")
    except CheckpointError as e:
        assert "nested too deeply" in str(e) and "c.npz" in str(e)
        assert depth > 100
    else:  # a depth the reader can handle comes back whole
        for _ in range(depth - 1):
            assert isinstance(tree, list) and len(tree) == 1
            tree = tree[0]
        assert tree == []


def test_entry_header_claiming_more_data_than_stored(tmp_path):
    # numpy would try to allocate 7 TiB for this header; the zip says the entry holds 152 bytes.
    header = _stdio.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)})
    with zipfile.ZipFile(tmp_path / "c.npz", "w") as z:
        z.writestr(itio.META_KEY + ".npy", _npy_bytes(_meta()))
        z.writestr("a0.npy", header.getvalue() + np.zeros(3).tobytes())
    with pytest.raises(CheckpointError, match=r"header declares <f8\[1000000000000\]"):
        itio.load(tmp_path / "c.npz")


# ----- fuzzing: whatever the damage, only CheckpointError escapes -----------------------------
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 10**20) | st.floats() | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6)
_CONFUSIONS = st.sampled_from([
    True, False, 0, 1, 2, -1, 1.0, "1", "a0", "<f8", None, [], {}, [2], ["a0"], [2.0], [True, True],
    {"__array__": "a0"}, {"__array__": ["a0"]}, {"__array__": 0}, {"shape": [2], "dtype": "<f4"},
    {"a0": {"shape": [2], "dtype": "<f8"}}])
_META_PATHS = [(), ("format",), ("version",), ("tree",), ("arrays",), ("arrays", "a0"),
               ("arrays", "a0", "shape"), ("arrays", "a0", "dtype"), ("tree", "w"), ("tree", "w", "__array__"),
               ("extra",)]


@given(path=st.sampled_from(_META_PATHS), value=_CONFUSIONS | _JSON, delete=st.booleans())
def test_fuzzed_metadata_raises_only_checkpoint_errors(path, value, delete):
    meta = json.loads(_meta().tobytes())
    if not path:
        meta = value
    else:
        node = meta
        for key in path[:-1]:
            node = node[key]
        if delete:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    with tempfile.TemporaryDirectory() as tmp:
        name = os.path.join(tmp, "c.npz")
        _write_meta_json(name, json.dumps(meta), a0=np.arange(2.0))
        try:
            itio.load(name)
        except CheckpointError as e:
            assert name in str(e)


@functools.cache
def _good_checkpoint(compress):
    with tempfile.TemporaryDirectory() as tmp:
        itio.save(os.path.join(tmp, "c.npz"), _fuzz_object(), compress=compress)
        with open(os.path.join(tmp, "c.npz"), "rb") as f:
            return f.read()


def _fuzz_object():
    rng = np.random.default_rng(0)
    return {"w": rng.standard_normal((8, 5)).astype(np.float32), "i": np.arange(7), "meta": [1, "a", None]}


@given(compress=st.booleans(), kind=st.sampled_from(["flip", "truncate", "insert", "delete"]), data=st.data())
def test_garbled_files_raise_only_checkpoint_errors(compress, kind, data):
    raw = bytearray(_good_checkpoint(compress))
    at = data.draw(st.integers(0, len(raw) - 1), label="at")
    if kind == "flip":
        for i in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=4), label="more"):
            raw[i] = data.draw(st.integers(0, 255).filter(lambda b, old=raw[i]: b != old), label="byte")
        raw[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
    elif kind == "truncate":
        del raw[at:]
    elif kind == "insert":
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=16), label="inserted")
    else:
        del raw[at:at + data.draw(st.integers(1, 64), label="length")]
    with tempfile.TemporaryDirectory() as tmp:
        name = os.path.join(tmp, "c.npz")
        with open(name, "wb") as f:
            f.write(raw)
        try:
            back = itio.load(name)
        except CheckpointError as e:
            assert name in str(e)
            return
    # damage the zip does not notice (a timestamp, a spare field) must not change what is read
    good = _fuzz_object()
    assert back["meta"] == good["meta"]
    for key in ("w", "i"):
        assert back[key].dtype == good[key].dtype
        np.testing.assert_array_equal(back[key], good[key])
