"""One VJP for all inputs (Primitive.defvjp_all) and residuals kept by the node (saves_residuals).

The engine calls an all-inputs VJP once per node and backward, with ``needs``; it still does the
per-input bookkeeping (unbroadcast, dtype, accumulation). Checked against central differences
(itn.gradcheck / gradgradcheck) and against the explicit formulas.
"""
import gc
import weakref

import numpy as np
import pytest

import itnet_np as itn
from itnet_np.autograd.primitive import primitive
from itnet_np.errors import GraphError

_rng = np.random.default_rng(8)
X = _rng.standard_normal((2, 3))
Y = _rng.standard_normal(3)        # broadcast against X: the engine unbroadcasts its gradient
Z = _rng.standard_normal((2, 3))


def _counting(fn):
    calls = []

    def vjp(g, out, needs, *args, **params):
        calls.append(needs)
        return fn(g, out, needs, *args, **params)
    return vjp, calls


# f(x, y, z) = x * y + sin(z): df/dx = y, df/dy = x, df/dz = cos(z); the VJP is written with ops,
# so the same code runs under create_graph and is differentiable again.
def _fma_vjp(g, out, needs, x, y, z):
    return (g * y if needs[0] else None, g * x if needs[1] else None, g * itn.cos(z) if needs[2] else None)


def _fma(vjp):
    return primitive(lambda x, y, z: x * y + np.sin(z), "fma_all").defvjp_all(vjp)


FMA = _fma(_fma_vjp)


def test_gradcheck_and_gradgradcheck():
    inputs = [itn.tensor(a, requires_grad=True) for a in (X, Y, Z)]
    assert itn.gradcheck(FMA, inputs)
    assert itn.gradgradcheck(FMA, inputs)


def test_gradients_against_the_formula():
    x, y, z = (itn.tensor(a, requires_grad=True) for a in (X, Y, Z))
    FMA(x, y, z).sum().backward()
    np.testing.assert_allclose(x.grad.data, np.broadcast_to(Y, X.shape), rtol=1e-12)
    np.testing.assert_allclose(y.grad.data, X.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(z.grad.data, np.cos(Z), rtol=1e-12)


def test_called_once_per_node_and_backward_with_retain_graph():
    vjp, calls = _counting(_fma_vjp)
    op = _fma(vjp)
    x, y, z = (itn.tensor(a, requires_grad=True) for a in (X, Y, Z))
    loss = op(x, y, z).sum()
    loss.backward(retain_graph=True)
    assert calls == [(True, True, True)]
    first = [t.grad.data.copy() for t in (x, y, z)]
    for t in (x, y, z):
        t.grad = None
    loss.backward()
    assert len(calls) == 2
    for t, g in zip((x, y, z), first):
        np.testing.assert_array_equal(t.grad.data, g)


def test_needs_names_only_the_inputs_that_require_grad():
    vjp, calls = _counting(_fma_vjp)
    op = _fma(vjp)
    x, z = itn.tensor(X), itn.tensor(Z)
    y = itn.tensor(Y, requires_grad=True)
    op(x, y, z).sum().backward()
    assert calls == [(False, True, False)]
    assert x.grad is None and z.grad is None
    np.testing.assert_allclose(y.grad.data, X.sum(axis=0), rtol=1e-12)


def test_needs_with_a_constant_input():
    vjp, calls = _counting(_fma_vjp)
    op = _fma(vjp)
    x = itn.tensor(X, requires_grad=True)
    itn.grad(lambda x: op(x, 2.0, Z).sum())(x)
    assert calls == [(True, False, False)]


def test_every_input_is_data_for_promotion():
    x = itn.tensor(X.astype(np.float32), requires_grad=True)
    out = FMA(x, np.arange(3), np.zeros((2, 3), dtype=np.int64))
    assert out.dtype == np.float32


def test_wrong_number_of_gradients_or_a_missing_one_raises():
    x = itn.tensor(X, requires_grad=True)
    short = primitive(lambda x, y: x * y, "short").defvjp_all(lambda g, out, needs, x, y: (g * y,))
    with pytest.raises(GraphError, match="short.*1 gradients for 2 inputs"):
        short(x, Y).sum().backward()
    missing = primitive(lambda x, y: x * y, "missing").defvjp_all(lambda g, out, needs, x, y: (None, None))
    with pytest.raises(GraphError, match="missing.*input 0"):
        missing(x, Y).sum().backward()


# ---------------------------------------------------------------------------------- residuals
# f(x, y) = exp(x) * y; the forward keeps e = exp(x) as its residual, the VJP reads it:
# df/dx = e * y, df/dy = e.
def _exp_mul_forward(x, y):
    e = np.exp(x)
    return e * y, e


def _exp_mul_vjp(g, out, needs, x, y, *, residuals):
    return g * residuals * y, g * residuals


EXP_MUL = primitive(_exp_mul_forward, "exp_mul", saves_residuals=True,
                    twice_differentiable=False).defvjp_all(_exp_mul_vjp)


def test_residuals_reach_the_vjp():
    x, y = itn.tensor(X, requires_grad=True), itn.tensor(Z, requires_grad=True)
    assert itn.gradcheck(EXP_MUL, [x, y])
    EXP_MUL(x, y).sum().backward()
    np.testing.assert_allclose(x.grad.data, np.exp(X) * Z, rtol=1e-12)
    np.testing.assert_allclose(y.grad.data, np.exp(X), rtol=1e-12)


def test_callers_see_only_the_output():
    np.testing.assert_allclose(EXP_MUL(X, Z), np.exp(X) * Z, rtol=1e-12)   # raw in, raw out
    out = EXP_MUL(itn.tensor(X), Z)                                          # no graph
    assert isinstance(out, itn.Tensor) and out.node is None
    np.testing.assert_allclose(out.data, np.exp(X) * Z, rtol=1e-12)


def _residual_ref(y):
    return weakref.ref(y.node.residuals)


def test_residuals_are_freed_with_the_node():
    x = itn.tensor(X, requires_grad=True)
    y = EXP_MUL(x, Z)
    ref = _residual_ref(y)
    y.sum().backward()                 # backward without retain_graph frees the node's arrays
    gc.collect()
    assert ref() is None
    y = EXP_MUL(x, Z)
    ref = _residual_ref(y)
    y.sum().backward(retain_graph=True)
    assert ref() is not None           # kept for a second backward
    del y
    gc.collect()
    assert ref() is None               # and freed with the graph


def test_create_graph_through_a_first_order_primitive_raises():
    x = itn.tensor(X, requires_grad=True)
    with pytest.raises(GraphError, match="exp_mul"):
        EXP_MUL(x, Z).sum().backward(create_graph=True)


# ------------------------------------------------------------------------------- a fused kernel

def test_fused_attention_backward_runs_once_per_node(monkeypatch):
    from itnet_np.transform.fused import engine_ops
    calls = []
    real = engine_ops.attention_backward

    def counted(*args, **kwargs):
        calls.append(kwargs["bias_grad"])
        return real(*args, **kwargs)
    monkeypatch.setattr(engine_ops, "attention_backward", counted)
    rng = np.random.default_rng(3)
    q, k, v = (itn.tensor(rng.standard_normal((1, 2, 8, 4)), requires_grad=True) for _ in range(3))
    y = engine_ops.fused_attention(q, k, v, scale=0.5, causal=True)
    y.sum().backward(retain_graph=True)
    assert calls == [False]
    first = [t.grad.data.copy() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    y.sum().backward()
    assert calls == [False, False]
    for t, g in zip((q, k, v), first):
        np.testing.assert_array_equal(t.grad.data, g)
