"""Loaders for files users bring: class-folder images and GLUE-style TSV, on tiny files written here."""
import numpy as np
import pytest

from itnet_np.data import build_vocab, encode, load_image_folder, read_tsv
from itnet_np.data.text import PAD, SEP, UNK
from itnet_np.errors import DataError, ShapeError


def write_image(path, rgb, size=(6, 4), fmt=None):
    """A constant-colour image of size (width, height); skips the test without Pillow."""
    image = pytest.importorskip("PIL.Image", reason="Pillow not installed: pip install 'itnet-np[data]'")
    image.new("RGB", size, tuple(rgb)).save(path, format=fmt)


def test_image_folder_reads_sorted_classes_and_resizes(tmp_path):
    (tmp_path / "zebra").mkdir()
    (tmp_path / "ant").mkdir()
    write_image(tmp_path / "zebra" / "b.png", (255, 0, 0))
    write_image(tmp_path / "zebra" / "a.jpg", (0, 0, 255), fmt="JPEG")
    write_image(tmp_path / "ant" / "x.PNG", (0, 255, 0), size=(3, 9))
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    (tmp_path / ".ipynb_checkpoints").mkdir()  # hidden: not a class
    images, labels, classes = load_image_folder(tmp_path, size=(5, 7))
    assert classes == ["ant", "zebra"]
    np.testing.assert_array_equal(labels, [0, 1, 1])
    assert images.shape == (3, 5, 7, 3) and images.dtype == np.float32
    np.testing.assert_allclose(images[0], np.broadcast_to([0, 1, 0], (5, 7, 3)), atol=1e-6)
    np.testing.assert_allclose(images[1], np.broadcast_to([0, 0, 1], (5, 7, 3)), atol=0.02)  # a.jpg
    np.testing.assert_allclose(images[2], np.broadcast_to([1, 0, 0], (5, 7, 3)), atol=1e-6)  # b.png
    gray, _, _ = load_image_folder(tmp_path, size=(2, 2), grayscale=True)
    assert gray.shape == (3, 2, 2, 1)
    np.testing.assert_allclose(gray[0], round(0.587 * 255) / 255, atol=1e-6)  # ITU-R 601 luma of green


def test_image_folder_errors_name_the_file_or_folder(tmp_path):
    pytest.importorskip("PIL.Image", reason="Pillow not installed: pip install 'itnet-np[data]'")
    with pytest.raises(DataError, match="not a directory"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(DataError, match="no class sub-directories"):
        load_image_folder(tmp_path)
    (tmp_path / "cat").mkdir()
    (tmp_path / "dog").mkdir()
    write_image(tmp_path / "cat" / "1.png", (1, 2, 3))
    with pytest.raises(DataError, match=r"dog.*holds no images"):
        load_image_folder(tmp_path)
    (tmp_path / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match=r"cannot read image .*broken\.png"):
        load_image_folder(tmp_path)


def write_tsv(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_read_tsv_pairs_and_label_mapping(tmp_path):
    f = write_tsv(tmp_path / "train.tsv", "index\tsentence1\tsentence2\tlabel\n"
                  "0\tA man sleeps .\tSomeone rests .\tentailment\n"
                  "1\tA dog runs\tA cat sits\tcontradiction\n"
                  "\n"
                  "2\tIt \"rains\"\tIt is wet\tentailment\n")
    texts, labels, mapping = read_tsv(f, ["sentence1", "sentence2"], "label")
    assert texts == [("A man sleeps .", "Someone rests ."), ("A dog runs", "A cat sits"),
                     ('It "rains"', "It is wet")]  # no quoting: quotes are text
    assert mapping == {"contradiction": 0, "entailment": 1}
    np.testing.assert_array_equal(labels, [1, 0, 1])
    assert labels.dtype == np.int64


def test_read_tsv_numeric_labels_sort_numerically(tmp_path):
    f = write_tsv(tmp_path / "sst.tsv", "sentence\tlabel\nbad\t10\ngood\t2\nok\t-1\n")
    _, labels, mapping = read_tsv(f, "sentence")
    assert mapping == {"-1": 0, "2": 1, "10": 2}
    np.testing.assert_array_equal(labels, [2, 1, 0])


@pytest.mark.parametrize("body, message", [
    ("sentence\tscore\nhi\t1\n", r"line 1: no column 'label'"),
    ("sentence\tlabel\nhi\t1\nthere\n", r"line 3: 1 fields, the header has 2"),
    ("sentence\tlabel\nhi\t1\nthere\t \n", r"line 3: empty label"),
    ("", r"empty"),
])
def test_read_tsv_errors_name_file_and_line(tmp_path, body, message):
    f = write_tsv(tmp_path / "bad.tsv", body)
    with pytest.raises(DataError, match=message) as info:
        read_tsv(f, "sentence")
    assert "bad.tsv" in str(info.value)


def test_read_tsv_unknown_label_with_a_given_mapping(tmp_path):
    f = write_tsv(tmp_path / "dev.tsv", "sentence\tlabel\na\tpos\nb\tneutral\n")
    with pytest.raises(DataError, match=r"dev\.tsv, line 3: label 'neutral' is not one of \['neg', 'pos'\]"):
        read_tsv(f, "sentence", label_map={"neg": 0, "pos": 1})


def test_vocabulary_and_encoding():
    texts = [("the cat", "the dog"), ("a cat",), "the end"]
    vocab = build_vocab(texts)
    # specials, then by count (the: 3, cat: 2), then ties alphabetically
    assert list(vocab) == ["<pad>", "<unk>", "<sep>", "the", "cat", "a", "dog", "end"]
    ids = encode(texts + ["zebra the"], vocab, length=6)
    np.testing.assert_array_equal(ids, [[3, 4, SEP, 3, 6, PAD], [5, 4, 0, 0, 0, 0],
                                        [3, 7, 0, 0, 0, 0], [UNK, 3, 0, 0, 0, 0]])
    assert ids.dtype == np.int64
    with pytest.raises(ShapeError, match="text 0 has 5 tokens, more than length=4"):
        encode(texts, vocab, length=4)
    np.testing.assert_array_equal(encode(texts, vocab, length=2, truncate=True)[0], [3, 4])
    chars = build_vocab(["abca"], level="char", min_freq=2)
    assert list(chars) == ["<pad>", "<unk>", "<sep>", "a"]


def test_read_tsv_rejects_non_utf8(tmp_path):
    f = tmp_path / "latin1.tsv"
    f.write_bytes("sentence\tlabel\ncaf\xe9\t1\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.tsv: not UTF-8"):
        read_tsv(f, "sentence")
