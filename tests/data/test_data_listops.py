"""ListOps: labels checked by a stack evaluator written separately from the recursive generator."""
import numpy as np
import pytest

from itnet_np.data.listops import PAD, VOCAB, make_listops


def evaluate(token_ids):
    """Value of a tokenised expression: a stack machine over the token strings (no recursion)."""
    stack = []
    for tok in (VOCAB[i] for i in token_ids if i != PAD):
        if tok == "]":
            args = []
            while not isinstance(stack[-1], str):
                args.append(stack.pop())
            op = stack.pop()
            assert stack.pop() == "[", "operator not preceded by '['"
            value = {"MAX": max(args), "MIN": min(args), "MED": int(np.median(args)),
                     "SM": sum(args) % 10}[op]
            stack.append(value)
        elif tok.isdigit():
            stack.append(int(tok))
        else:
            stack.append(tok)  # '[' or an operator name
    assert len(stack) == 1 and isinstance(stack[0], int), "unbalanced expression"
    return stack[0]


@pytest.fixture(scope="module")
def data():
    return make_listops(num_train=150, num_test=50, min_length=10, max_length=96, seed=4)


def test_labels_match_an_independent_evaluator(data):
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        got = np.array([evaluate(row) for row in x])
        np.testing.assert_array_equal(got, y)


def test_all_operators_and_mid_list_medians_occur(data):
    tokens = {VOCAB[i] for i in np.unique(data.x_train)}
    assert {"MAX", "MIN", "MED", "SM", "[", "]", "<pad>"} <= tokens
    assert len(np.unique(data.y_train)) == 10


def test_shapes_lengths_and_padding(data):
    assert data.x_train.shape == (150, 96) and data.x_train.dtype == np.int64
    assert data.y_train.dtype == np.int64 and data.positions.shape == (96, 1)
    x = np.concatenate([data.x_train, data.x_test])
    lengths = (x != PAD).sum(axis=1)
    assert lengths.min() >= 10 and lengths.max() <= 96
    # padding only at the end: after the first PAD everything is PAD
    for row, n in zip(x, lengths):
        assert (row[:n] != PAD).all() and (row[n:] == PAD).all()
    assert x.max() < len(VOCAB) and len(VOCAB) == 17


def test_deterministic_from_seed():
    a = make_listops(20, 5, max_length=64, seed=1)
    b = make_listops(20, 5, max_length=64, seed=1)
    c = make_listops(20, 5, max_length=64, seed=2)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
