"""ListOps (Nangia & Bowman 2018; the Long Range Arena generator, Tay et al. 2021) at short length.

An expression is a tree: a leaf is a digit 0-9; an inner node applies one operator to 2..max_args
sub-expressions, written ``[ OP a b ... ]``. Operators: MAX, MIN, MED (median, rounded down to an
integer as int(numpy.median) does) and SM (sum modulo 10). The label is the value, a digit.

Generation (LRA's recipe): a node at depth d < max_depth is a leaf with probability 1 - value_p
(value_p = 0.25), else an operator node with a uniform number of arguments in [2, max_args]
(max_args = 10) and a uniform operator; at max_depth (10) it is a leaf. The root is always an
operator node. Expressions whose token count falls outside [min_length, max_length] are redrawn.
LRA uses lengths 500..2000; here the default is 32..256 so that it trains on a CPU.

Tokens (fixed vocabulary VOCAB): id 0 = padding, then the digits, the operators and the brackets.
x: (N, max_length) int64 token ids, padded with 0 at the end; y: (N,) int64 values;
positions: (max_length, 1) float32 = j / max_length.
"""
import random

import numpy as np

from .base import Dataset, check_float, check_int, grid_1d

OPERATORS = ("MAX", "MIN", "MED", "SM")
VOCAB = ("<pad>",) + tuple(str(d) for d in range(10)) + OPERATORS + ("[", "]")
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
PAD = 0


def _apply(op, values):
    if op == "MAX":
        return max(values)
    if op == "MIN":
        return min(values)
    if op == "MED":  # int(numpy.median(values)), without numpy's per-call overhead
        s, m = sorted(values), len(values) // 2
        return s[m] if len(s) % 2 else (s[m - 1] + s[m]) // 2
    return sum(values) % 10


class _TooLong(Exception):
    pass


def _tree(rng, depth, max_depth, max_args, value_p, tokens, limit, root=False):
    """Append a random expression to ``tokens`` and return its value; raise _TooLong as soon as
    the expression passes ``limit`` tokens (it would be redrawn anyway, and the process is
    supercritical: most unbounded trees are huge)."""
    if not root and (depth >= max_depth or rng.random() > value_p):
        digit = rng.randrange(10)
        tokens.append(str(digit))
        values = None
    else:
        op = rng.choice(OPERATORS)
        tokens += ["[", op]
        values = [_tree(rng, depth + 1, max_depth, max_args, value_p, tokens, limit)
                  for _ in range(rng.randint(2, max_args))]
        tokens.append("]")
    if len(tokens) > limit:
        raise _TooLong
    return digit if values is None else _apply(op, values)


def generate(rng, n, min_length=32, max_length=256, max_depth=10, max_args=10, value_p=0.25):
    """n expressions (rng: a random.Random) with min_length <= len(tokens) <= max_length: (list of token lists, values)."""
    expressions, values = [], []
    while len(expressions) < n:
        tokens = []
        try:
            value = _tree(rng, 1, max_depth, max_args, value_p, tokens, max_length, root=True)
        except _TooLong:
            continue
        if len(tokens) >= min_length:
            expressions.append(tokens)
            values.append(value)
    return expressions, np.asarray(values, dtype=np.int64)


def encode(expressions, length):
    """Token lists -> (N, length) int64 ids, padded with PAD at the end."""
    out = np.full((len(expressions), length), PAD, dtype=np.int64)
    for i, tokens in enumerate(expressions):
        out[i, :len(tokens)] = [TOKEN_ID[t] for t in tokens]
    return out


def make_listops(num_train=2000, num_test=500, min_length=32, max_length=256, max_depth=10,
                 max_args=10, value_p=0.25, seed=0):
    """Generate ListOps (see the module docstring)."""
    num_train = check_int("num_train", num_train, 1)
    num_test = check_int("num_test", num_test, 1)
    max_length = check_int("max_length", max_length, 5)
    min_length = check_int("min_length", min_length, 1, max_length)
    max_depth = check_int("max_depth", max_depth, 2)
    max_args = check_int("max_args", max_args, 2)
    value_p = check_float("value_p", value_p)
    rng = random.Random(check_int("seed", seed, 0))  # scalar draws: Python's generator is ~10x faster
    expr, y = generate(rng, num_train + num_test, min_length, max_length, max_depth, max_args, value_p)
    x = encode(expr, max_length)
    return Dataset(x[:num_train], y[:num_train], x[num_train:], y[num_train:], grid_1d(max_length), 10)
