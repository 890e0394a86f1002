"""Engine invariants: per-op bookkeeping (no input mutation, no aliased gradients, freed graphs),
deep graphs, retain/create_graph, the function transforms, modes, dtype rules, error messages, the
gradient checker's power to fail, and the absence of reference cycles.
"""
import gc
import importlib
import math
import weakref

import numpy as np
import pytest

import itnet_np as itn
from itnet_np.autograd.ops._util import raw
from itnet_np.errors import AnomalyError, DTypeError, GraphError, ShapeError

_rng = np.random.default_rng(0)
A = _rng.standard_normal((2, 3))
B = _rng.standard_normal(3)
C = _rng.standard_normal((3, 4))
P = _rng.uniform(0.5, 2.0, (2, 3))
PB = _rng.uniform(0.5, 2.0, 3)
S = _rng.standard_normal((3, 3))
MASK = A > 0

# (id, function of Tensors, inputs): one case per op, plus a few einsum/reduction variants.
OP_CASES = [(name, getattr(itn, name), [A]) for name in
            ["negative", "exp", "sin", "cos", "tanh", "sign", "abs"]]
OP_CASES += [(name, getattr(itn, name), [P]) for name in ["log", "log1p", "sqrt"]]
OP_CASES += [(name, getattr(itn, name), [A, B]) for name in
             ["add", "subtract", "multiply", "maximum", "minimum"]]
OP_CASES += [
    ("divide", itn.divide, [A, PB]),
    ("power", itn.power, [P, B]),
    ("where", lambda x, y: itn.where(MASK, x, y), [A, B]),
    ("clip", itn.clip, [A, -PB, PB]),
    ("sum_all", itn.sum, [A]),
    ("mean", lambda x: itn.mean(x, axis=1), [A]),
    ("var", lambda x: itn.var(x, axis=0, ddof=1), [A]),
    ("max", lambda x: itn.max(x, axis=-1, keepdims=True), [A]),
    ("min", lambda x: itn.min(x, axis=(0, 1)), [A]),
    ("prod", lambda x: itn.prod(x, axis=1), [A]),
    ("logsumexp", lambda x: itn.logsumexp(x, axis=0), [A]),
    ("cumsum", lambda x: itn.cumsum(x, axis=1), [A]),
    ("matmul", itn.matmul, [A, C]),
    ("einsum_mm", lambda a, b: itn.einsum("ij,jk->ik", a, b), [A, C]),
    ("einsum_diag", lambda a: itn.einsum("ii->i", a), [S]),
    ("einsum_ellipsis", lambda a, b: itn.einsum("...i,i->...", a, b), [A, B]),
    ("einsum_three", lambda a, b, c: itn.einsum("ij,jk,kl->il", a, b, c), [A, C, C.T]),
]


@pytest.mark.parametrize("fn,inputs", [c[1:] for c in OP_CASES], ids=[c[0] for c in OP_CASES])
def test_op_invariants(fn, inputs):
    arrays = [a.copy() for a in inputs]
    before = [a.copy() for a in arrays]
    leaves = [itn.tensor(a, requires_grad=True) for a in arrays]
    out = fn(*leaves)
    node = out.node
    u = np.asarray(np.random.default_rng(1).standard_normal(out.shape))
    u_before = u.copy()
    out.backward(u)
    # Inputs and the upstream gradient are not mutated.
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(u, u_before)
    # Gradients alias nothing: not each other, not the upstream gradient, not the inputs or the output.
    grads = [t.grad.data for t in leaves]
    for i, g in enumerate(grads):
        assert g.shape == arrays[i].shape and g.dtype == np.float64
        for other in grads[i + 1:] + [u, out.data] + arrays:
            assert not np.shares_memory(g, other)
    # The graph is freed: the node dropped its inputs, and a second backward says why it cannot run.
    assert node.inputs is None
    with pytest.raises(GraphError, match="retain_graph=True"):
        out.backward(u)
    # The functional path (itn.vjp) hands out fresh gradients as well, equal to the .grad ones.
    _, pullback = itn.vjp(fn, *arrays)
    vgrads = [g.data for g in pullback(u)]
    for i, g in enumerate(vgrads):
        np.testing.assert_allclose(g, grads[i], rtol=1e-15)
        for other in vgrads[i + 1:] + [u] + arrays:
            assert not np.shares_memory(g, other)


def test_vjp_gradients_do_not_alias_the_cotangent_or_each_other():
    u = np.arange(3.0)
    _, pullback = itn.vjp(lambda x, y: x + y, np.ones(3), np.ones(3))
    gx, gy = pullback(u)
    assert not np.shares_memory(gx.data, u) and not np.shares_memory(gx.data, gy.data)


def test_create_graph_gradients_do_not_alias():
    u = np.arange(3.0)
    x, y = itn.tensor(np.ones(3), requires_grad=True), itn.tensor(np.ones(3), requires_grad=True)
    (x + y).backward(u, create_graph=True)
    assert not np.shares_memory(x.grad.data, u) and not np.shares_memory(x.grad.data, y.grad.data)


def test_zero_dim_results_convert_to_numpy():
    s = itn.sum(itn.tensor(np.ones(3)))
    assert isinstance(np.asarray(s), np.ndarray)


def test_intermediate_nodes_are_freed_after_backward():
    x = itn.tensor(A.copy(), requires_grad=True)
    h = itn.exp(x)
    k = h * x
    y = itn.sum(k)
    nodes = [h.node, k.node, y.node]
    y.backward()
    assert all(n.inputs is None and n.out is None for n in nodes)


# ----- deep graphs, retain_graph, create_graph -----------------------------------------------------
def test_chain_of_100000_ops_needs_no_recursion():
    x = itn.tensor(np.array(1.5), requires_grad=True)
    y = x
    for _ in range(50_000):
        y = y * 1.0
        y = y + 0.0
    y.backward()
    assert x.grad.item() == 1.0
    # An un-backpropagated deep graph is also released without overflowing the C stack.
    z = x
    for _ in range(100_000):
        z = z * 1.0
    del z


def test_retain_graph_allows_a_second_backward_and_accumulates():
    x = itn.tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    y = itn.sum(x * x * x)
    y.backward(retain_graph=True)
    np.testing.assert_allclose(x.grad.data, 3 * x.data**2, rtol=1e-15)
    y.backward()
    np.testing.assert_allclose(x.grad.data, 6 * x.data**2, rtol=1e-15)
    with pytest.raises(GraphError, match="retain_graph=True"):
        y.backward()
    # A fresh graph accumulates too.
    itn.sum(2.0 * x).backward()
    np.testing.assert_allclose(x.grad.data, 6 * x.data**2 + 2, rtol=1e-15)


def test_create_graph_gives_second_and_third_derivatives():
    xv = np.array([0.3, -1.2, 2.0])
    x = itn.tensor(xv, requires_grad=True)
    itn.sum(x**4).backward(create_graph=True)
    g1 = x.grad
    assert g1.requires_grad
    np.testing.assert_allclose(g1.data, 4 * xv**3, rtol=1e-14)
    x.grad = None
    itn.sum(g1).backward(create_graph=True)
    g2 = x.grad
    np.testing.assert_allclose(g2.data, 12 * xv**2, rtol=1e-14)
    x.grad = None
    itn.sum(g2).backward()
    np.testing.assert_allclose(x.grad.data, 24 * xv, rtol=1e-14)


def test_create_graph_mixed_second_derivatives():
    # f = sum(sin(x) exp(y)): grad_x = cos(x) e^y; its directional derivative along v gives
    # d/dx = -sin(x) e^y v and d/dy = cos(x) e^y v.
    xv, yv, v = np.array([0.1, 0.7]), np.array([-0.4, 0.9]), np.array([2.0, -3.0])
    x, y = itn.tensor(xv, requires_grad=True), itn.tensor(yv, requires_grad=True)
    itn.sum(itn.sin(x) * itn.exp(y)).backward(create_graph=True)
    gx = x.grad
    np.testing.assert_allclose(gx.data, np.cos(xv) * np.exp(yv), rtol=1e-14)
    x.grad = y.grad = None
    itn.sum(gx * v).backward()
    np.testing.assert_allclose(x.grad.data, -np.sin(xv) * np.exp(yv) * v, rtol=1e-14)
    np.testing.assert_allclose(y.grad.data, np.cos(xv) * np.exp(yv) * v, rtol=1e-14)


# ----- function transforms ---------------------------------------------------------------------------
def test_grad_value_and_grad_vjp():
    xv, yv = np.array([0.5, -1.0, 2.0]), np.array([1.5, 0.25, -0.5])

    def f(x, y):
        return itn.sum(x * x * y)

    np.testing.assert_allclose(itn.grad(f)(xv, yv).data, 2 * xv * yv, rtol=1e-15)
    np.testing.assert_allclose(itn.grad(f, argnums=1)(xv, yv).data, xv**2, rtol=1e-15)
    value, (gx, gy) = itn.value_and_grad(f, argnums=(0, 1))(xv, yv)
    assert value.item() == pytest.approx(float(np.sum(xv**2 * yv)), rel=1e-15)
    np.testing.assert_allclose(gx.data, 2 * xv * yv, rtol=1e-15)
    np.testing.assert_allclose(gy.data, xv**2, rtol=1e-15)
    out, pullback = itn.vjp(lambda x: itn.sin(x) * x, xv)
    u = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(out.data, np.sin(xv) * xv, rtol=1e-15)
    (g,) = pullback(u)
    np.testing.assert_allclose(g.data, u * (np.cos(xv) * xv + np.sin(xv)), rtol=1e-14)
    with pytest.raises(ShapeError, match="scalar"):
        itn.grad(lambda x: x * 2.0)(xv)


def test_transforms_leave_grad_untouched():
    x = itn.tensor(np.array([1.0, 2.0]), requires_grad=True)
    itn.grad(lambda z: itn.sum(z * z))(x)
    assert x.grad is None


def test_nested_grad():
    # f = x^3 sin x:  f' = 3x^2 sin x + x^3 cos x,  f'' = 6x sin x + 6x^2 cos x - x^3 sin x,
    # f''' = 6 sin x + 18 x cos x - 9 x^2 sin x - x^3 cos x.
    def f(x):
        return x * x * x * itn.sin(x)

    x0 = 0.7
    s, c = math.sin(x0), math.cos(x0)
    d2 = itn.grad(itn.grad(f))(np.array(x0))
    assert d2.item() == pytest.approx(6 * x0 * s + 6 * x0**2 * c - x0**3 * s, rel=1e-13)
    d3 = itn.grad(itn.grad(itn.grad(f)))(np.array(x0))
    assert d3.item() == pytest.approx(6 * s + 18 * x0 * c - 9 * x0**2 * s - x0**3 * c, rel=1e-13)
    # Mixed partials of x^2 y^3: d/dx = 2 x y^3, then d/dx = 2 y^3 and d/dy = 6 x y^2.
    dx = itn.grad(lambda a, b: a * a * b * b * b)
    hx, hy = itn.grad(lambda x, y: dx(x, y), argnums=(0, 1))(np.array(1.5), np.array(-2.0))
    assert hx.item() == pytest.approx(2 * -8.0, rel=1e-14)
    assert hy.item() == pytest.approx(6 * 1.5 * 4.0, rel=1e-14)


def test_nested_grad_through_a_non_differentiated_argument():
    # d/dy (d/dx (x^2 y^3)) = 6 x y^2, with the inner grad taken only with respect to x.
    mixed = itn.grad(lambda x, y: itn.grad(lambda a, b: a * a * b * b * b)(x, y), argnums=1)
    assert mixed(np.array(1.5), np.array(-2.0)).item() == pytest.approx(6 * 1.5 * 4.0, rel=1e-14)


# ----- modes -----------------------------------------------------------------------------------------
def test_no_grad_context_and_decorator():
    x = itn.tensor(np.array([1.0, 2.0]), requires_grad=True)
    with itn.no_grad():
        y = x * 2.0
        with itn.enable_grad():
            z = x * 3.0
    assert not y.requires_grad and y.node is None
    assert z.requires_grad and z.node is not None
    assert (x * 2.0).requires_grad

    @itn.no_grad()
    def double(t):
        return t * 2.0

    assert not double(x).requires_grad
    assert (x * 2.0).requires_grad
    with pytest.raises(RuntimeError), itn.no_grad():
        raise RuntimeError("boom")
    assert (x * 2.0).requires_grad  # the mode is restored after an exception


def test_detect_anomaly_names_the_op_in_forward():
    x = itn.tensor(np.array([0.5, 1.0]), requires_grad=True)
    with itn.detect_anomaly(), np.errstate(invalid="ignore"):
        shifted = x - 2.0
        with pytest.raises(AnomalyError, match=r"op 'log' produced NaN or Inf in its forward output") as err:
            itn.log(shifted)
    # The message also says where the offending input was created.
    assert "op 'subtract' at" in str(err.value) and "test_engine.py" in str(err.value)


def test_detect_anomaly_names_the_op_in_backward():
    x = itn.tensor(np.array([0.0, 1.0]), requires_grad=True)
    with itn.detect_anomaly(), np.errstate(divide="ignore"):
        y = itn.sum(itn.sqrt(x))
        with pytest.raises(AnomalyError, match=r"op 'sqrt' produced NaN or Inf in its gradient for input 0"):
            y.backward()


def test_detect_anomaly_costs_nothing_when_off(monkeypatch):
    prim_module = importlib.import_module("itnet_np.autograd.primitive")
    calls = []
    real_check, real_site = prim_module._check_finite, prim_module._creation_site
    monkeypatch.setattr(prim_module, "_check_finite", lambda *a: calls.append("check") or real_check(*a))
    monkeypatch.setattr(prim_module, "_creation_site", lambda: calls.append("site") or real_site())
    x = itn.tensor(np.array([-1.0, 0.0]), requires_grad=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        y = itn.sum(itn.sqrt(x))  # NaN and a zero: silent when off
        assert y.node.site is None
        y.backward()
    assert calls == []
    with itn.detect_anomaly():
        itn.sum(itn.exp(x)).backward()
    assert "check" in calls and "site" in calls


# ----- dtypes and errors -------------------------------------------------------------------------------
def test_comparisons_give_bool_tensors_without_grad():
    x = itn.tensor(np.array([-1.0, 0.0, 2.0]), requires_grad=True)
    for c in (x > 0, x >= 0, x < 0, x <= 0, x == 0, x != 0, x > x.detach()):
        assert c.dtype == np.bool_ and not c.requires_grad and c.node is None
    np.testing.assert_array_equal((x > 0).data, [False, False, True])
    with pytest.raises(GraphError):
        (x > 0).backward()


@pytest.mark.parametrize("data", [[1, 2], [True, False], np.arange(3, dtype=np.int32)])
def test_integer_and_bool_tensors_cannot_require_grad(data):
    with pytest.raises(DTypeError, match="floating"):
        itn.tensor(data, requires_grad=True)
    with pytest.raises(DTypeError, match="floating"):
        itn.tensor(data).requires_grad_()


@pytest.mark.parametrize("name,op", [("add", lambda a, b: a + b), ("multiply", lambda a, b: a * b),
                                     ("matmul", lambda a, b: a @ b),
                                     ("einsum", lambda a, b: itn.einsum("ij,jk->ik", a, b))])
def test_mixing_float32_and_float64_raises(name, op):
    a = itn.tensor(np.ones((2, 2), dtype=np.float32))
    b = itn.tensor(np.ones((2, 2), dtype=np.float64))
    with pytest.raises(DTypeError, match=rf"{name}: cannot mix float32 and float64"):
        op(a, b)
    with pytest.raises(DTypeError, match=rf"{name}: cannot mix float64 and float32"):
        op(b, a)


def test_backward_on_non_scalar_needs_gradient():
    y = itn.tensor(np.ones((2, 3)), requires_grad=True) * 2.0
    with pytest.raises(GraphError, match=r"shape \(2, 3\) needs `gradient`.*y.sum\(\).backward\(\)"):
        y.backward()
    with pytest.raises(ShapeError, match=r"expected the output's shape \(2, 3\)"):
        y.backward(np.ones(3))


def test_python_scalars_keep_float32():
    x = itn.tensor(np.array([0.5, 1.0, 2.0], dtype=np.float32), requires_grad=True)
    x0 = itn.tensor(np.float32(1.5), requires_grad=True)
    results = [x * 2.0, 2.0 * x, x + 1, 1 - x, x / 3.0, 3.0 / x, x**2.0, 2**x, x**2,
               itn.maximum(x, 0.0), itn.where(x > 1.0, x, 0.0), itn.clip(x, 0.0, 1.0), x0 * 2.0, 2.0 - x0]
    for r in results:
        assert r.dtype == np.float32
    itn.sum(sum(itn.sum(r) for r in results[:-2])).backward()
    (results[-2] + results[-1]).backward()
    assert x.grad.dtype == np.float32 and x0.grad.dtype == np.float32


# ----- the gradient checker can fail ----------------------------------------------------------------------
def test_gradcheck_fails_on_a_wrong_vjp():
    x = np.linspace(-1.0, 1.0, 5)
    bad_sin = itn.primitive(np.sin, "bad_sin").defvjp(lambda g, out, x: g * itn.sin(x))  # should be cos
    with pytest.raises(AssertionError, match="gradcheck failed"):
        itn.gradcheck(bad_sin, [x])
    assert itn.gradcheck(bad_sin, [x], raise_exception=False) is False
    # A missing transpose on square matrices keeps every shape right: random directions catch it.
    bad_mm = itn.primitive(np.matmul, "bad_matmul").defvjp(lambda g, out, a, b: itn.matmul(g, b),
                                                           lambda g, out, a, b: itn.matmul(a, g))
    rng = np.random.default_rng(0)
    with pytest.raises(AssertionError, match="gradcheck failed"):
        itn.gradcheck(bad_mm, [rng.standard_normal((3, 3)), rng.standard_normal((3, 3))])


def test_gradgradcheck_fails_on_a_vjp_that_is_not_differentiable():
    # Right first derivative, but np.cos on raw data is a constant to the second-order graph.
    raw_sin = itn.primitive(np.sin, "raw_sin").defvjp(lambda g, out, x: g * np.cos(raw(x)))
    x = np.linspace(-1.0, 1.0, 5)
    assert itn.gradcheck(raw_sin, [x])
    with pytest.raises(AssertionError, match="gradcheck failed"):
        itn.gradgradcheck(raw_sin, [x])


def test_once_differentiable_primitive_refuses_create_graph():
    fused = itn.primitive(np.sin, "fused_sin", twice_differentiable=False).defvjp(
        lambda g, out, x: g * np.cos(raw(x)))
    xv = np.array([0.2, 0.4])
    x = itn.tensor(xv, requires_grad=True)
    itn.sum(fused(x)).backward()
    np.testing.assert_allclose(x.grad.data, np.cos(xv), rtol=1e-15)
    with pytest.raises(GraphError, match="op 'fused_sin'.*create_graph=True"):
        itn.sum(fused(x) * 2.0).backward(create_graph=True)
    with pytest.raises(GraphError, match="fused_sin"):
        itn.grad(lambda z: itn.sum(itn.grad(lambda w: itn.sum(fused(w)))(z)))(xv)


# ----- no reference cycles ----------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["backward", "retain_graph", "create_graph", "no_backward"])
def test_graphs_are_freed_by_refcounting(mode):
    """No Tensor/Node cycle: with the cyclic collector off, dropping the output frees everything."""
    gc.collect()
    gc.disable()
    try:
        x = itn.tensor(np.linspace(0.1, 1.0, 4), requires_grad=True)
        h = itn.exp(x)  # an intermediate whose output array the exp node saves
        y = itn.sum(h * itn.sin(h))
        h_ref, array_ref = weakref.ref(h), weakref.ref(h.data)
        del h
        assert h_ref() is not None  # held by y's graph: the test can fail
        if mode != "no_backward":
            y.backward(retain_graph=mode == "retain_graph", create_graph=mode == "create_graph")
        x.grad = None  # a create_graph gradient holds a graph of its own
        del y
        assert h_ref() is None and array_ref() is None
    finally:
        gc.enable()
    gc.collect()
    assert h_ref() is None and array_ref() is None


def test_grad_through_first_order_only_op_closing_over_parameters():
    """itn.grad of a function that closes over a parameter and uses a first-order-only op gives the
    right first-order gradient; differentiating that gradient again raises instead of being wrong."""
    from itnet_np.errors import GraphError as _GraphError
    square_p = itn.primitive(lambda x: x * x, "square_first_order_only", twice_differentiable=False)
    square_p.defvjp(lambda g, out, x: g * 2 * x)
    w = itn.tensor(np.array([0.5, -1.5]), requires_grad=True)
    x0 = np.array([2.0, 3.0])
    g = itn.grad(lambda x: (square_p(x) * w).sum())(x0)
    np.testing.assert_allclose(g.numpy(), 2 * x0 * w.data, rtol=0, atol=1e-15)
    with pytest.raises(_GraphError, match="cannot be differentiated again"):
        g.sum().backward()
