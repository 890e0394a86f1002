"""Checkpoints: round trips, atomic saves, and every kind of bad file raising CheckpointError."""
import io as _stdio
import json
import os
import pickle
import zipfile

import numpy as np
import pytest

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
    real_load = np.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("allow_pickle"))
        return real_load(*args, **kwargs)

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used while loading a checkpoint")

    monkeypatch.setattr(itio.np, "load", spy)
    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    _assert_same(_state(), itio.load(path)["model"])
    assert seen == [False]
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
