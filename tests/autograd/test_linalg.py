"""matmul and einsum: forwards against NumPy, gradients against closed forms (u @ y^T, diagonals,
traces), the dot-product gradient checks of first and second order, and (when torch is installed)
torch's einsum gradients as a cross-check.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import itnet_np as itn
from itnet_np.errors import ShapeError


def _close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-11, atol=1e-12)


# ----- matmul ---------------------------------------------------------------------------------------
@st.composite
def matmul_shapes(draw):
    """Shapes (a, b) for a @ b: each side 1-D, 2-D or batched, with broadcastable batch dims."""
    n, k, m = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3)).input_shapes
    kind_a, kind_b = draw(st.sampled_from(["vec", "mat"])), draw(st.sampled_from(["vec", "mat"]))
    a = (k,) if kind_a == "vec" else batch[0] + (n, k)
    b = (k,) if kind_b == "vec" else batch[1] + (k, m)
    return a, b


def _matmul_oracle(a, b):
    """a @ b by broadcasting a product and summing over k (1-D sides promoted, then dropped)."""
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    out = (a2[..., :, :, None] * b2[..., None, :, :]).sum(axis=-2)
    if a.ndim == 1:
        out = out[..., 0, :]
    return out[..., 0] if b.ndim == 1 else out


@given(shapes=matmul_shapes(), seed=st.integers(0, 2**32 - 1))
def test_matmul(shapes, seed):
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal(s) for s in shapes)
    out = itn.tensor(a) @ itn.tensor(b)
    expect = _matmul_oracle(a, b)
    assert out.shape == expect.shape
    _close(out.data, expect)
    assert itn.gradcheck(itn.matmul, [a, b], seed=seed % 1000)
    assert itn.gradgradcheck(itn.matmul, [a, b], seed=seed % 1000)


def test_matmul_gradient_closed_form():
    rng = np.random.default_rng(3)
    a, b, u = rng.standard_normal((3, 4)), rng.standard_normal((4, 2)), rng.standard_normal((3, 2))
    ta, tb = itn.tensor(a, requires_grad=True), itn.tensor(b, requires_grad=True)
    (ta @ tb).backward(u)
    _close(ta.grad.data, u @ b.T)
    _close(tb.grad.data, a.T @ u)


# ----- einsum ---------------------------------------------------------------------------------------
# (subscripts, operand templates): a template lists the operand's labels; '...' takes a drawn batch
# shape, and all '...' batch shapes are mutually broadcastable (some axes are length 1).
EINSUM_CASES = [
    ("ij,jk->ik", ["ij", "jk"]),
    ("ij,jk", ["ij", "jk"]),
    ("i,i->", ["i", "i"]),
    ("i,j->ij", ["i", "j"]),
    ("ij->ji", ["ij"]),
    ("ij->", ["ij"]),
    ("ij->i", ["ij"]),
    ("ii->i", ["ii"]),
    ("ii->", ["ii"]),
    ("ii", ["ii"]),
    ("iij,jk->ik", ["iij", "jk"]),
    ("ii,ij->j", ["ii", "ij"]),
    ("bij,bjk->bik", ["bij", "bjk"]),
    ("ij,jk,kl->il", ["ij", "jk", "kl"]),
    ("ijk,ikl,jl->i", ["ijk", "ikl", "jl"]),
    ("...ij,...jk->...ik", ["...ij", "...jk"]),
    ("...i,...i", ["...i", "...i"]),
    ("i...,i->...", ["i...", "i"]),
    ("i...j,j->i...", ["i...j", "j"]),
    ("...,...->...", ["...", "..."]),
    ("...ii->...i", ["...ii"]),
    (" ij , jk -> ki ", ["ij", "jk"]),
    (",ij->ij", ["", "ij"]),
]
CASE_IDS = [c[0].replace(" ", "_") or "scalar" for c in EINSUM_CASES]


@st.composite
def einsum_operands(draw, templates):
    sizes = {c: draw(st.integers(1, 3)) for c in "ijklb"}
    n_ell = sum("..." in t for t in templates)
    batch = iter(draw(hnp.mutually_broadcastable_shapes(num_shapes=max(n_ell, 1), max_dims=2, max_side=3))
                 .input_shapes)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shapes = []
    for t in templates:
        head, dots, tail = t.partition("...")
        mid = next(batch) if dots else ()
        shapes.append(tuple(sizes[c] for c in head) + tuple(mid) + tuple(sizes[c] for c in tail))
    return [rng.standard_normal(s) for s in shapes], seed


@pytest.mark.parametrize("subscripts,templates", EINSUM_CASES, ids=CASE_IDS)
@given(data=st.data())
def test_einsum(subscripts, templates, data):
    operands, seed = data.draw(einsum_operands(templates))
    before = [o.copy() for o in operands]
    out = itn.einsum(subscripts, *[itn.tensor(o) for o in operands])
    _close(out.data, np.einsum(subscripts, *operands))
    f = lambda *ops: itn.einsum(subscripts, *ops)
    assert itn.gradcheck(f, operands, seed=seed % 1000)
    assert itn.gradgradcheck(f, operands, seed=seed % 1000)
    for b, o in zip(before, operands):
        np.testing.assert_array_equal(b, o)


@pytest.mark.parametrize("subscripts,templates", EINSUM_CASES, ids=CASE_IDS)
def test_einsum_gradients_match_torch(subscripts, templates):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    sizes = {"i": 3, "j": 2, "k": 4, "l": 2, "b": 2}
    batches = iter([(2, 1), (3,), (1, 3)])
    shapes = []
    for t in templates:
        head, dots, tail = t.partition("...")
        shapes.append(tuple(sizes[c] for c in head) + (next(batches) if dots else ()) + tuple(sizes[c] for c in tail))
    operands = [rng.standard_normal(s) for s in shapes]
    ts = [itn.tensor(o, requires_grad=True) for o in operands]
    out = itn.einsum(subscripts, *ts)
    u = rng.standard_normal(out.shape)
    out.backward(u)
    tt = [torch.tensor(o, requires_grad=True) for o in operands]
    torch.einsum(subscripts.replace(" ", ""), *tt).backward(torch.tensor(u))
    for mine, theirs in zip(ts, tt):
        _close(mine.grad.data, theirs.grad.numpy())


def test_einsum_repeated_index_gradients_closed_form():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 4))
    t = itn.tensor(x, requires_grad=True)
    itn.einsum("ii->", t).backward(np.array(2.5))
    _close(t.grad.data, 2.5 * np.eye(4))            # d trace = identity
    t.grad = None
    u = rng.standard_normal(4)
    itn.einsum("ii->i", t).backward(u)
    _close(t.grad.data, np.diag(u))                  # d diag = u on the diagonal
    # Broadcasting: a (1, 3) operand against (2, 3) receives the sum over the stretched axis.
    a, b = rng.standard_normal((1, 3)), rng.standard_normal((2, 3))
    ta, tb = itn.tensor(a, requires_grad=True), itn.tensor(b, requires_grad=True)
    u = rng.standard_normal((2, 3))
    itn.einsum("...j,...j->...j", ta, tb).backward(u)
    _close(ta.grad.data, (u * b).sum(axis=0, keepdims=True))
    _close(tb.grad.data, u * a)


def test_einsum_three_operands_uses_optimized_path(monkeypatch):
    calls = []
    real = np.einsum

    def spy(*args, **kwargs):
        calls.append(kwargs.get("optimize", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(np, "einsum", spy)
    rng = np.random.default_rng(0)
    ops = [rng.standard_normal(s) for s in [(2, 3), (3, 4), (4, 2)]]
    itn.einsum("ij,jk,kl->il", *[itn.tensor(o) for o in ops])
    itn.einsum("ij,jk->ik", *[itn.tensor(o) for o in ops[:2]])
    assert calls == [True, False]


def test_einsum_shape_errors_name_the_problem():
    a = itn.tensor(np.ones((2, 3)))
    with pytest.raises(ShapeError, match="2 operands, got 1"):
        itn.einsum("ij,jk->ik", a)
    with pytest.raises(ShapeError, match="'ijk'"):
        itn.einsum("ijk->i", a)


def test_einsum_float32_stays_float32():
    ts = [itn.tensor(np.ones(s, dtype=np.float32), requires_grad=True) for s in [(2, 3), (3, 3)]]
    out = itn.einsum("ij,jj->ij", *ts)
    assert out.dtype == np.float32
    itn.sum(out).backward()
    assert all(t.grad.dtype == np.float32 for t in ts)


# ----- issue 7, defect 5: a length-1 label broadcast against a longer one and summed away ------------
def test_einsum_broadcast_length_one_label_reproducer():
    # sum_i x_i y_i with x = [2] broadcast to length 3: 2 (1 + 2 + 3) = 12; d/dx = sum(y) = 6, d/dy = 2.
    x = itn.tensor([2.0], requires_grad=True)
    y = itn.tensor([1.0, 2.0, 3.0], requires_grad=True)
    z = itn.einsum("i,i->", x, y)
    z.backward()
    assert z.item() == 12.0
    np.testing.assert_array_equal(x.grad.data, [6.0])
    np.testing.assert_array_equal(y.grad.data, [2.0, 2.0, 2.0])


BROADCAST_CASES = ["i,i->", "ij,ij->i", "ij,jk->ik", "ij,j->i", "bij,bjk->bik", "ij,ij->"]


@st.composite
def operands_with_length_one_labels(draw, subscripts):
    """Operands whose axes each have their label's length or (at random) length 1."""
    terms = subscripts.split("->")[0].split(",")
    sizes = {c: draw(st.integers(2, 3)) for c in set("".join(terms))}
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shapes = [tuple(1 if draw(st.booleans()) else sizes[c] for c in t) for t in terms]
    # A label's length is its longest occurrence (1 when every occurrence was drawn as 1).
    sizes = {c: max(n for s, t in zip(shapes, terms) for n, d in zip(s, t) if d == c) for c in sizes}
    return [rng.standard_normal(s) for s in shapes], sizes


@pytest.mark.parametrize("subscripts", BROADCAST_CASES)
@given(data=st.data())
def test_einsum_gradients_with_broadcast_labels(subscripts, data):
    """Oracle: broadcast every operand to full length, differentiate the full einsum with NumPy
    (dA = einsum(g, B) onto A's labels), then sum over the axes A broadcast (keeping them)."""
    (a, b), sizes = data.draw(operands_with_length_one_labels(subscripts))
    terms, out = subscripts.split("->")
    ta_, tb_ = terms.split(",")
    full = [np.broadcast_to(o, tuple(sizes[c] for c in t)) for o, t in zip((a, b), (ta_, tb_))]
    _close(itn.einsum(subscripts, a, b).data, np.einsum(subscripts, *full))
    ta, tb = itn.tensor(a, requires_grad=True), itn.tensor(b, requires_grad=True)
    y = itn.einsum(subscripts, ta, tb)
    u = np.random.default_rng(3).standard_normal(y.shape)
    y.backward(u)
    for mine, op, own, other, other_full in ((ta, a, ta_, tb_, full[1]), (tb, b, tb_, ta_, full[0])):
        g_full = np.einsum(f"{out},{other}->{own}", u, other_full)
        stretched = tuple(k for k, n in enumerate(op.shape) if n == 1 and g_full.shape[k] != 1)
        _close(mine.grad.data, g_full.sum(axis=stretched, keepdims=True))
    assert itn.gradcheck(lambda p, q: itn.einsum(subscripts, p, q), [a, b])
    assert itn.gradgradcheck(lambda p, q: itn.einsum(subscripts, p, q), [a, b])
