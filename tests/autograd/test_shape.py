"""Shape ops: forwards against NumPy, VJPs by gradcheck/gradgradcheck and by explicit loops.

The gathers (take, take_along_axis, non-constant pad) are checked against gradients built by
looping over output positions and adding into zeros, so repeated indices must accumulate.
"""
import weakref

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import itnet_np as itn
from tests.strategies import arrays, nonempty_shapes, small_shapes

TOL = {"rtol": 1e-10, "atol": 1e-10}


def check(f, *xs, second=True):
    """First- (and second-) order gradient checks of f at float64 inputs xs."""
    assert itn.gradcheck(f, list(xs))
    if second:
        assert itn.gradgradcheck(f, list(xs))


def loop_gather_grad(x_shape, g, source_of):
    """d/dx of sum(g * x[source_of(p)]) by a loop over output positions p (repeats add up)."""
    grad = np.zeros(x_shape)
    for p in np.ndindex(*g.shape):
        grad[source_of(p)] += g[p]
    return grad


@st.composite
def array_and_axis(draw, shapes=nonempty_shapes, extra=0):
    x = draw(arrays(draw(shapes)))
    nd = x.ndim + extra
    return x, draw(st.integers(-nd, nd - 1))


# ----- reshape, transpose, swapaxes, broadcast_to, expand_dims, squeeze, flip -------------------
@given(st.data())
def test_reshape(data):
    x = data.draw(arrays(data.draw(small_shapes)))
    # a permutation of the sizes (same element count), sometimes with one -1
    new = list(data.draw(st.permutations(list(x.shape) + [1])))
    if new and data.draw(st.booleans()):
        new[data.draw(st.integers(0, len(new) - 1))] = -1
    y = itn.reshape(itn.tensor(x), tuple(new))
    np.testing.assert_array_equal(y.numpy(), x.reshape(new))
    check(lambda t: itn.reshape(t, tuple(new)), x)


@given(st.data())
def test_transpose_and_swapaxes(data):
    x = data.draw(arrays(data.draw(nonempty_shapes)))
    perm = data.draw(st.permutations(range(x.ndim)))
    axes = tuple(a - x.ndim if data.draw(st.booleans()) else a for a in perm)  # negatives too
    np.testing.assert_array_equal(itn.transpose(itn.tensor(x), axes=axes).numpy(), x.transpose(axes))
    check(lambda t: itn.transpose(t, axes=axes), x)
    check(lambda t: t.T, x, second=False)
    a, b = data.draw(st.integers(-x.ndim, x.ndim - 1)), data.draw(st.integers(-x.ndim, x.ndim - 1))
    np.testing.assert_array_equal(itn.swapaxes(itn.tensor(x), a, b).numpy(), x.swapaxes(a, b))
    check(lambda t: itn.swapaxes(t, a, b), x)


@given(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=4), st.data())
def test_broadcast_to(shapes, data):
    x = data.draw(arrays(shapes.input_shapes[0]))
    target = shapes.result_shape
    np.testing.assert_array_equal(itn.broadcast_to(itn.tensor(x), target).numpy(), np.broadcast_to(x, target))
    check(lambda t: itn.broadcast_to(t, target), x)


@given(st.data())
def test_expand_dims_and_squeeze(data):
    x = data.draw(arrays(data.draw(small_shapes)))
    nd = x.ndim + 2
    axis = tuple(data.draw(st.lists(st.integers(-nd, nd - 1), min_size=2, max_size=2,
                                    unique_by=lambda a: a % nd)))
    np.testing.assert_array_equal(itn.expand_dims(itn.tensor(x), axis=axis).numpy(), np.expand_dims(x, axis))
    check(lambda t: itn.expand_dims(t, axis=axis), x)
    a1 = data.draw(st.integers(-x.ndim - 1, x.ndim))
    np.testing.assert_array_equal(itn.expand_dims(x, axis=a1), np.expand_dims(x, a1))
    e = np.expand_dims(x, axis)
    ones = [a for a in range(e.ndim) if e.shape[a] == 1]
    sq = data.draw(st.none() | st.lists(st.sampled_from(ones), min_size=1, unique=True).map(tuple)
                   | st.sampled_from(ones).map(lambda a: a - e.ndim))
    np.testing.assert_array_equal(itn.squeeze(itn.tensor(e), axis=sq).numpy(), np.squeeze(e, axis=sq))
    np.testing.assert_array_equal(itn.tensor(e).squeeze(sq).numpy(), np.squeeze(e, axis=sq))
    check(lambda t: itn.squeeze(t, axis=sq), e)


@given(st.data())
def test_flip(data):
    x = data.draw(arrays(data.draw(nonempty_shapes)))
    axis = data.draw(st.none() | st.integers(-x.ndim, x.ndim - 1)
                     | st.lists(st.integers(0, x.ndim - 1), min_size=1, unique=True).map(tuple))
    np.testing.assert_array_equal(itn.flip(itn.tensor(x), axis=axis).numpy(), np.flip(x, axis))
    check(lambda t: itn.flip(t, axis=axis), x)


# ----- concatenate, stack, split ----------------------------------------------------------------
@given(st.data())
def test_concatenate(data):
    base = list(data.draw(nonempty_shapes))
    axis = data.draw(st.integers(-len(base), len(base) - 1))
    sizes = data.draw(st.lists(st.integers(0, 3), min_size=1, max_size=3))
    xs = [data.draw(arrays(tuple(base[:axis % len(base)] + [n] + base[axis % len(base) + 1:]))) for n in sizes]
    np.testing.assert_array_equal(itn.concatenate([itn.tensor(x) for x in xs], axis=axis).numpy(),
                                  np.concatenate(xs, axis=axis))
    np.testing.assert_array_equal(itn.concatenate(xs, axis=None), np.concatenate(xs, axis=None))
    check(lambda *ts: itn.concatenate(ts, axis=axis), *xs)
    check(lambda *ts: itn.concatenate(ts, axis=None), *xs, second=False)


@given(st.data())
def test_stack(data):
    shape = data.draw(small_shapes)
    k = data.draw(st.integers(1, 3))
    xs = [data.draw(arrays(shape)) for _ in range(k)]
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    np.testing.assert_array_equal(itn.stack([itn.tensor(x) for x in xs], axis=axis).numpy(),
                                  np.stack(xs, axis=axis))
    check(lambda *ts: itn.stack(ts, axis=axis), *xs)


def test_stack_and_concatenate_same_tensor_accumulate():
    x = itn.tensor(np.arange(3.0), requires_grad=True)
    u = np.arange(9.0).reshape(3, 3)
    itn.stack([x, x, x], axis=-1).backward(u)  # column j of u is the gradient of copy j
    np.testing.assert_allclose(x.grad.numpy(), u.sum(axis=1), **TOL)


def _joined(pieces):
    return itn.concatenate([itn.reshape(p, (-1,)) for p in pieces], axis=0)


@given(array_and_axis(), st.data())
def test_split_sections(xa, data):
    x, axis = xa
    n = x.shape[axis]
    k = data.draw(st.sampled_from([d for d in range(1, n + 1) if n % d == 0]))
    got, want = itn.split(itn.tensor(x), k, axis=axis), np.split(x, k, axis=axis)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.numpy(), w)
    check(lambda t: _joined(itn.split(t, k, axis=axis)), x)


@given(array_and_axis(), st.lists(st.integers(-6, 6), max_size=4))
def test_split_at_indices(xa, points):
    x, axis = xa
    got, want = itn.split(itn.tensor(x), points, axis=axis), np.split(x, points, axis=axis)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g.numpy(), w)
    check(lambda t: _joined(itn.split(t, points, axis=axis)), x)


def test_split_gradient_only_from_used_pieces():
    x = itn.tensor(np.arange(6.0), requires_grad=True)
    _, b, _ = itn.split(x, [1, 4])
    (b * b).sum().backward()  # pieces a and c are unused: their part of x.grad is 0
    np.testing.assert_array_equal(x.grad.numpy(), [0, 2, 4, 6, 0, 0])


# ----- pad --------------------------------------------------------------------------------------
@st.composite
def pad_widths(draw, ndim):
    """Every NumPy form: int, (w,), (before, after), ((before, after),), per-axis pairs."""
    w = st.integers(0, 3)
    form = draw(st.sampled_from(["int", "single", "pair", "nested_pair", "per_axis", "per_axis_single"]))
    if form == "int":
        return draw(w)
    if form == "single":
        return (draw(w),)
    if form == "pair":
        return (draw(w), draw(w))
    if form == "nested_pair":
        return ((draw(w), draw(w)),)
    if form == "per_axis":
        return tuple((draw(w), draw(w)) for _ in range(ndim))
    return tuple((draw(w),) for _ in range(ndim))


@given(st.data(), st.sampled_from(["constant", "edge", "reflect", "symmetric", "wrap"]))
def test_pad(data, mode):
    x = data.draw(arrays(data.draw(nonempty_shapes)))
    width = data.draw(pad_widths(x.ndim))
    kw = {"constant_values": data.draw(st.floats(-2, 2))} if mode == "constant" else {}
    y = itn.pad(itn.tensor(x), width, mode=mode, **kw)
    np.testing.assert_array_equal(y.numpy(), np.pad(x, width, mode=mode, **kw))
    check(lambda t: itn.pad(t, width, mode=mode, **kw), x)


@pytest.mark.parametrize("mode", ["edge", "reflect", "symmetric", "wrap"])
def test_pad_gather_modes_accumulate(mode):
    # Each output element is a copy of x[src]: the gradient of x adds g over all copies.
    x = np.random.default_rng(1).standard_normal((3, 2))
    width = ((2, 3), (1, 2))
    src = [np.pad(np.arange(n), w, mode=mode) for n, w in zip(x.shape, width)]
    g = np.random.default_rng(2).standard_normal(np.pad(x, width).shape)
    want = loop_gather_grad(x.shape, g, lambda p: (src[0][p[0]], src[1][p[1]]))
    t = itn.tensor(x, requires_grad=True)
    itn.pad(t, width, mode=mode).backward(g)
    np.testing.assert_allclose(t.grad.numpy(), want, **TOL)


# ----- take, take_along_axis --------------------------------------------------------------------
@given(array_and_axis(), st.data(), st.booleans())
def test_take(xa, data, flat):
    x, axis = xa
    axis = None if flat else axis
    n = x.size if flat else x.shape[axis]
    idx_shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=5))
    idx = data.draw(hnp.arrays(np.intp, idx_shape, elements=st.integers(-n, n - 1)))
    np.testing.assert_array_equal(itn.take(itn.tensor(x), idx, axis=axis).numpy(), np.take(x, idx, axis=axis))
    check(lambda t: itn.take(t, idx, axis=axis), x)
    g = np.random.default_rng(0).standard_normal(np.take(x, idx, axis=axis).shape)
    t = itn.tensor(x, requires_grad=True)
    itn.take(t, idx, axis=axis).backward(g)
    if flat:
        want = loop_gather_grad((x.size,), g, lambda p: idx[p] % n).reshape(x.shape)
    else:
        a, k = axis % x.ndim, idx.ndim
        want = loop_gather_grad(x.shape, g, lambda p: p[:a] + (idx[p[a:a + k]] % n,) + p[a + k:])
    np.testing.assert_allclose(t.grad.numpy(), want, **TOL)


def test_take_repeats_accumulate():
    t = itn.tensor(np.arange(4.0), requires_grad=True)
    itn.take(t, [2, 2, 2, -1, 0]).backward(np.array([1.0, 10.0, 100.0, 5.0, 7.0]))
    np.testing.assert_array_equal(t.grad.numpy(), [7.0, 0.0, 111.0, 5.0])


@given(array_and_axis(), st.data())
def test_take_along_axis(xa, data):
    x, axis = xa
    a, n = axis % x.ndim, x.shape[axis]
    # along the axis any length (repeats likely); elsewhere x's length or 1 (broadcast)
    shape = tuple(data.draw(st.integers(0, 5)) if d == a else data.draw(st.sampled_from([1, s]))
                  for d, s in enumerate(x.shape))
    idx = data.draw(hnp.arrays(np.intp, shape, elements=st.integers(-n, n - 1)))
    want_y = np.take_along_axis(x, idx, axis=axis)
    np.testing.assert_array_equal(itn.take_along_axis(itn.tensor(x), idx, axis=axis).numpy(), want_y)
    check(lambda t: itn.take_along_axis(t, idx, axis=axis), x)
    g = np.random.default_rng(0).standard_normal(want_y.shape)

    def source(p):
        q = tuple(0 if s == 1 else pi for pi, s in zip(p, idx.shape))  # broadcast position in idx
        return p[:a] + (idx[q] % n,) + p[a + 1:]

    t = itn.tensor(x, requires_grad=True)
    itn.take_along_axis(t, idx, axis=axis).backward(g)
    np.testing.assert_allclose(t.grad.numpy(), loop_gather_grad(x.shape, g, source), **TOL)


def test_take_along_axis_flat_and_repeats():
    x = np.arange(6.0).reshape(2, 3)
    idx = np.array([5, 5, 0, 5])
    np.testing.assert_array_equal(itn.take_along_axis(x, idx, axis=None), np.take_along_axis(x, idx, axis=None))
    t = itn.tensor(x, requires_grad=True)
    itn.take_along_axis(t, idx, axis=None).backward(np.array([1.0, 2.0, 3.0, 4.0]))
    np.testing.assert_array_equal(t.grad.numpy(), [[3.0, 0, 0], [0, 0, 7.0]])


# ----- invariants: inputs untouched, no aliasing, graph freed -----------------------------------
_x23 = np.arange(6.0).reshape(2, 3) - 2.5
_y23 = np.arange(6.0).reshape(2, 3) * 0.5
CASES = {
    "reshape": (lambda x: itn.reshape(x, (3, 2)), [_x23]),
    "transpose": (lambda x: itn.transpose(x), [_x23]),
    "swapaxes": (lambda x: itn.swapaxes(x, 0, -1), [_x23]),
    "broadcast_to": (lambda x: itn.broadcast_to(x, (2, 3)), [_x23]),
    "expand_dims": (lambda x: itn.expand_dims(x, -1), [_x23]),
    "squeeze": (lambda x: itn.squeeze(itn.reshape(x, (1, 2, 3))), [_x23]),
    "flip": (lambda x: itn.flip(x), [_x23]),
    "concatenate": (lambda x, y: itn.concatenate([x, y], axis=1), [_x23, _y23]),
    "stack": (lambda x, y: itn.stack([x, y], axis=-1), [_x23, _y23]),
    "split": (lambda x: itn.split(x, 3, axis=1)[1], [_x23]),
    "pad": (lambda x: itn.pad(x, 1), [_x23]),
    "pad_reflect": (lambda x: itn.pad(x, (1, 2), mode="reflect"), [_x23]),
    "take": (lambda x: itn.take(x, [0, 0, 2], axis=1), [_x23]),
    "take_along_axis": (lambda x: itn.take_along_axis(x, np.array([[0, 0, 1], [1, 1, 1], [0, 0, 0]]), axis=0), [_x23]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_invariants(name):
    f, xs = CASES[name]
    before = [x.copy() for x in xs]
    ts = [itn.tensor(x.copy(), requires_grad=True) for x in xs]
    data_before = [t.data.copy() for t in ts]
    out = f(*ts)
    u = np.random.default_rng(0).standard_normal(out.shape)
    u_before = u.copy()
    out.backward(u)
    for t, d in zip(ts, data_before):
        np.testing.assert_array_equal(t.data, d)
        assert not np.shares_memory(t.grad.data, u)
        assert not np.shares_memory(t.grad.data, t.data)
    if len(ts) == 2:
        assert not np.shares_memory(ts[0].grad.data, ts[1].grad.data)
    np.testing.assert_array_equal(u, u_before)
    for x, b in zip(xs, before):
        np.testing.assert_array_equal(x, b)
    # The graph is freed: an intermediate tensor dies once backward is done with it.
    ts = [itn.tensor(x, requires_grad=True) for x in xs]
    mids = [t * 2.0 for t in ts]
    refs = [weakref.ref(m) for m in mids]
    out = f(*mids)
    node = out.node
    del mids
    out.backward(u)
    assert node.inputs is None
    assert all(r() is None for r in refs)


# ----- errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize("call, words", [
    (lambda: itn.reshape(itn.tensor(np.zeros((2, 3))), (4, 2)), ["reshape", "(2, 3)", "(4, 2)"]),
    (lambda: itn.stack([np.zeros((2, 3)), np.zeros((3, 2))]), ["stack", "(2, 3)", "(3, 2)"]),
    (lambda: itn.concatenate([np.zeros((2, 3)), np.zeros((3, 2))], axis=0), ["concatenate", "(2, 3)", "(3, 2)"]),
    (lambda: itn.concatenate([np.zeros((2, 3)), np.zeros((2, 3))], axis=2), ["concatenate", "axis"]),
    (lambda: itn.broadcast_to(np.zeros((2, 3)), (3, 3)), ["broadcast_to", "(2, 3)", "(3, 3)"]),
    (lambda: itn.transpose(np.zeros((2, 3)), axes=(0, 0)), ["transpose", "(2, 3)"]),
    (lambda: itn.swapaxes(np.zeros((2, 3)), 0, 2), ["swapaxes", "axis 2"]),
    (lambda: itn.squeeze(np.zeros((2, 1)), axis=0), ["squeeze", "(2, 1)"]),
    (lambda: itn.expand_dims(np.zeros(2), (0, -3)), ["expand_dims", "repeated"]),
    (lambda: itn.flip(np.zeros(2), axis=1), ["flip", "axis 1"]),
    (lambda: itn.split(np.zeros(5), 2), ["split", "5", "2 equal"]),
    (lambda: itn.pad(np.zeros((2, 3)), ((1, 1), (1, 1), (1, 1))), ["pad", "(3, 2)", "2 dimensions"]),
    (lambda: itn.take_along_axis(np.zeros((2, 3)), np.zeros(2, int), axis=0), ["take_along_axis", "(2,)"]),
    (lambda: itn.take_along_axis(np.zeros((2, 3)), np.zeros((1, 2), int), axis=0), ["take_along_axis", "(1, 2)"]),
])
def test_shape_errors(call, words):
    with pytest.raises(itn.ShapeError) as info:
        call()
    for w in words:
        assert w in str(info.value)


def test_config_errors():
    with pytest.raises(itn.ConfigError, match="mode 'mean'"):
        itn.pad(np.zeros(3), 1, mode="mean")
    with pytest.raises(itn.ConfigError, match="non-negative"):
        itn.pad(np.zeros(3), -1)
    with pytest.raises(itn.ConfigError, match="integers"):
        itn.pad(np.zeros(3), 1.5)
    with pytest.raises(itn.ConfigError, match="positive"):
        itn.split(np.zeros(3), 0)


def test_float32_stays_float32():
    x = itn.tensor(np.ones((2, 3), np.float32), requires_grad=True)
    y = itn.pad(itn.stack([itn.flip(x), x]), 1)
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32


# ----- tril / triu -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["tril", "triu"])
@given(shape=hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=4), k=st.integers(-5, 5),
       seed=st.integers(0, 2**16))
def test_tril_triu_match_numpy_and_loops(name, shape, k, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    t = itn.tensor(x, requires_grad=True)
    out = getattr(itn, name)(t, k=k)
    np.testing.assert_array_equal(out.data, getattr(np, name)(x, k))
    # out[..., i, j] = x[..., i, j] where j <= i + k (tril) / j >= i + k (triu), else 0.
    i, j = np.indices(shape[-2:])
    keep = (j <= i + k) if name == "tril" else (j >= i + k)
    np.testing.assert_array_equal(out.data, np.where(keep, x, 0.0))
    u = rng.standard_normal(shape)
    out.backward(u)
    np.testing.assert_array_equal(t.grad.data, np.where(keep, u, 0.0))
    f = lambda a: getattr(itn, name)(a, k=k)
    assert itn.gradcheck(f, [x]) and itn.gradgradcheck(f, [x])


def test_tril_triu_errors_and_float32():
    with pytest.raises(itn.ShapeError, match="tril: needs an array with at least 2 dimensions"):
        itn.tril(np.ones(3))
    with pytest.raises(itn.ConfigError, match="triu: k .* must be an int"):
        itn.triu(np.ones((2, 2)), k=0.5)
    t = itn.tensor(np.ones((3, 3), np.float32), requires_grad=True)
    out = itn.triu(itn.tril(t, 1), -1)
    assert out.dtype == np.float32
    itn.sum(out).backward()
    assert t.grad.dtype == np.float32
    np.testing.assert_array_equal(t.grad.data, np.tri(3, k=1) * np.tri(3, k=1).T)
