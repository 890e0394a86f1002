"""get_dataset: names, options, the npz cache; digits; the DataLoader."""
import functools
import os
import sys

import numpy as np
import pytest

from itnet_np import data
from itnet_np.data import DataLoader, get_dataset
from itnet_np.errors import ConfigError, ShapeError


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ITNET_DATA_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_unknown_name_and_option_are_config_errors():
    with pytest.raises(ConfigError, match=r"unknown data set 'mnist2d'; known: .*mnist1d"):
        get_dataset("mnist2d")
    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['resolutoin'\]"):
        get_dataset("burgers", resolutoin=64)
    with pytest.raises(ConfigError, match="num_train must be >= 1, got 0"):
        get_dataset("listops", num_train=0, cache=False)


def test_cache_round_trip_is_exact_and_keyed_by_options(cache_dir):
    opts = {"num_train": 6, "num_test": 3, "resolution": 16, "fine": 64, "seed": 2}
    first = get_dataset("antiderivative", **opts)
    files = os.listdir(cache_dir)
    assert len(files) == 1 and files[0].startswith("antiderivative-") and files[0].endswith(".npz")
    with np.load(cache_dir / files[0], allow_pickle=False) as z:  # plain arrays, no pickles
        np.testing.assert_array_equal(z["x_train"], first.x_train)
    again = get_dataset("antiderivative", **opts)
    for a, b in zip(first[:5], again[:5]):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert again.num_classes is None
    fresh = get_dataset("antiderivative", cache=False, **opts)
    np.testing.assert_array_equal(fresh.y_test, first.y_test)
    get_dataset("antiderivative", **{**opts, "seed": 3})
    assert len(os.listdir(cache_dir)) == 2


def test_cache_is_used_and_a_corrupt_file_is_rebuilt(cache_dir, monkeypatch):
    opts = {"num_train": 5, "num_test": 5, "max_length": 32, "min_length": 5, "seed": 0}
    built = get_dataset("listops", **opts)
    path = cache_dir / os.listdir(cache_dir)[0]
    builder, version = data.DATASETS["listops"]

    @functools.wraps(builder)  # same options, but building now fails
    def fail(**_):
        raise AssertionError("rebuilt")

    monkeypatch.setitem(data.DATASETS, "listops", (fail, version))
    np.testing.assert_array_equal(get_dataset("listops", **opts).x_train, built.x_train)  # no rebuild
    path.write_bytes(b"garbage")
    with pytest.raises(AssertionError, match="rebuilt"):
        get_dataset("listops", **opts)


def test_digits_split_is_stratified_and_deterministic():
    pytest.importorskip("sklearn", reason="scikit-learn not installed: pip install 'itnet-np[data]'")
    from sklearn.datasets import load_digits
    d = get_dataset("digits", seed=1)
    assert d.x_train.shape[1:] == (8, 8) and len(d.x_train) + len(d.x_test) == 1797
    assert d.x_train.dtype == np.float32 and d.y_train.dtype == np.int64 and d.num_classes == 10
    assert 0 <= d.x_train.min() and d.x_train.max() <= 1
    assert d.positions.shape == (8, 8, 2)
    np.testing.assert_allclose(d.positions[2, 5], [2 / 7, 5 / 7], rtol=1e-6)
    ref = load_digits()
    counts = np.bincount(np.concatenate([d.y_train, d.y_test]))
    np.testing.assert_array_equal(counts, np.bincount(ref.target))
    np.testing.assert_allclose(np.bincount(d.y_test) / counts, 0.2, atol=0.5 / counts.min() + 1e-9)
    # every image is one of sklearn's, scaled by 1/16
    raw = {img.tobytes(): t for img, t in zip(ref.images, ref.target)}
    for img, label in zip(d.x_test[:20], d.y_test[:20]):
        assert raw[(img.astype(np.float64) * 16).round().tobytes()] == label
    np.testing.assert_array_equal(get_dataset("digits", seed=1, cache=False).y_train, d.y_train)


def test_digits_without_scikit_learn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import now raises ImportError
    with pytest.raises(ConfigError, match=r"scikit-learn.*pip install 'itnet-np\[data\]'"):
        get_dataset("digits", cache=False)


@pytest.mark.parametrize("n, batch, drop_last", [(10, 3, False), (10, 3, True), (9, 3, True), (2, 5, False)])
def test_loader_visits_each_example_once_per_epoch(n, batch, drop_last):
    x, y = np.arange(n * 2).reshape(n, 2), np.arange(n)
    loader = DataLoader((x, y), batch, shuffle=True, seed=7, drop_last=drop_last)
    epochs = []
    for _ in range(3):
        batches = list(loader)
        assert len(batches) == len(loader)
        seen = np.concatenate([yb for _, yb in batches]) if batches else np.array([], int)
        for xb, yb in batches:
            np.testing.assert_array_equal(xb, x[yb])
            assert len(yb) == batch or (not drop_last and len(yb) == n % batch)
        expected = n - n % batch if drop_last else n
        assert len(seen) == expected and len(np.unique(seen)) == expected
        epochs.append(seen)
    if n > batch:
        assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each epoch
    replay = DataLoader((x, y), batch, shuffle=True, seed=7, drop_last=drop_last)
    replay.set_epoch(2)
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in replay] or [[]]), epochs[2])


def test_loader_in_order_and_bad_input():
    y = np.arange(7)
    np.testing.assert_array_equal(np.concatenate([b for (b,) in DataLoader((y,), 2)]), y)
    with pytest.raises(ShapeError, match=r"arrays\[1\] has 6 examples, arrays\[0\] has 7"):
        DataLoader((y, y[:6]), 2)
    with pytest.raises(ConfigError, match="batch_size"):
        DataLoader((y,), 0)
