"""GLUE-style TSV files and a simple deterministic vocabulary.

``read_tsv(path, text_columns, label_column)``: a header row, then one example per line, fields
separated by tabs, no quoting (GLUE's convention). Returns ``(texts, labels, label_map)``:
texts a list of tuples of str (one entry per text column), labels (N,) int64, label_map
{label string: int}. Without a given ``label_map`` the labels found are numbered in sorted order
(numerically when every label is an integer). Errors name the file and line: a missing column,
a line with the wrong number of fields, an empty or unknown label.

Vocabulary: ``build_vocab(texts, level)`` splits each text on whitespace (``level="word"``) or
into characters (``level="char"``), counts tokens, and numbers them by decreasing count, ties in
sorted order, after the reserved ids PAD = 0, UNK = 1, SEP = 2 (between the texts of a pair).
``encode(texts, vocab, length, level)`` -> (N, length) int64 ids, padded with PAD; a text longer
than ``length`` is an error unless ``truncate=True``.
"""
import collections
import csv

import numpy as np

from ..errors import ConfigError, DataError, ShapeError
from .base import check_int

PAD, UNK, SEP = 0, 1, 2
SPECIALS = ("<pad>", "<unk>", "<sep>")


def read_tsv(path, text_columns, label_column="label", label_map=None):
    """Read a GLUE-style TSV file (see the module docstring)."""
    if isinstance(text_columns, str):
        text_columns = (text_columns,)
    try:
        return _read_tsv(path, tuple(text_columns), label_column, label_map)
    except UnicodeDecodeError as e:
        raise DataError(f"read_tsv: {path}: not UTF-8 text ({e})") from None


def _read_tsv(path, text_columns, label_column, label_map):
    with open(path, newline="", encoding="utf-8") as f:
        rows = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None)
        if header is None:
            raise DataError(f"read_tsv: {path}: the file is empty (expected a header row)")
        for column in (*text_columns, label_column):
            if column not in header:
                raise DataError(f"read_tsv: {path}, line 1: no column {column!r} in the header {header}")
        text_at = [header.index(c) for c in text_columns]
        label_at = header.index(label_column)
        texts, raw = [], []
        for line, row in enumerate(rows, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"read_tsv: {path}, line {line}: {len(row)} fields, the header has {len(header)}")
            if not row[label_at].strip():
                raise DataError(f"read_tsv: {path}, line {line}: empty label in column {label_column!r}")
            texts.append(tuple(row[i] for i in text_at))
            raw.append((line, row[label_at].strip()))
    if label_map is None:
        found = {label for _, label in raw}
        numeric = all(s.lstrip("-").isdigit() for s in found)
        label_map = {s: i for i, s in enumerate(sorted(found, key=int if numeric else None))}
    labels = np.empty(len(raw), dtype=np.int64)
    for i, (line, label) in enumerate(raw):
        if label not in label_map:
            raise DataError(f"read_tsv: {path}, line {line}: label {label!r} is not one of {sorted(label_map)}")
        labels[i] = label_map[label]
    return texts, labels, dict(label_map)


def _tokens(text, level):
    if level == "word":
        return text.split()
    if level == "char":
        return list(text)
    raise ConfigError(f"level must be 'word' or 'char', got {level!r}")


def _pieces(example, level):
    """Tokens of one example (a str or a tuple of str joined by <sep>)."""
    if isinstance(example, str):
        example = (example,)
    out = []
    for j, text in enumerate(example):
        if j:
            out.append(SPECIALS[SEP])
        out += _tokens(text, level)
    return out


def build_vocab(texts, level="word", min_freq=1, max_size=None):
    """{token: id}: the specials, then tokens seen >= min_freq times by decreasing count, ties sorted."""
    min_freq = check_int("min_freq", min_freq, 1)
    counts = collections.Counter(t for example in texts for t in _pieces(example, level)
                                 if t not in SPECIALS)
    ranked = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
    if max_size is not None:
        ranked = ranked[:check_int("max_size", max_size, 0)]
    return {t: i for i, t in enumerate(SPECIALS + tuple(ranked))}


def encode(texts, vocab, length, level="word", truncate=False):
    """(N, length) int64 token ids (UNK for unknown tokens), padded with PAD at the end."""
    length = check_int("length", length, 1)
    out = np.full((len(texts), length), PAD, dtype=np.int64)
    for i, example in enumerate(texts):
        ids = [vocab.get(t, UNK) for t in _pieces(example, level)]
        if len(ids) > length and not truncate:
            raise ShapeError(f"encode: text {i} has {len(ids)} tokens, more than length={length}; "
                             "raise length or pass truncate=True")
        ids = ids[:length]
        out[i, :len(ids)] = ids
    return out
