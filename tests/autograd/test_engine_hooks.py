"""Tensor hooks and retained gradients (issue 7): ``register_hook`` and ``retain_grad``, on leaves
and intermediates, with and without create_graph. Expected values are computed by hand.
"""
import gc
import weakref

import numpy as np
import pytest

import itnet_np as itn
from itnet_np.errors import DTypeError, GraphError, ShapeError

XV = np.array([1.0, -2.0, 0.5])


def test_a_hook_on_an_intermediate_rescales_what_flows_upstream():
    # L = sum(h^2), h = 3x: dL/dh = 2h = 6x; the hook doubles it, so dL/dx = 3 * 12x = 36x.
    x = itn.tensor(XV, requires_grad=True)
    h = x * 3
    seen = []
    h.register_hook(lambda g: seen.append(g.data.copy()))  # returns None: observes only
    h.register_hook(lambda g: g * 2)
    (h * h).sum().backward()
    np.testing.assert_allclose(seen[0], 6 * XV, rtol=1e-15)
    np.testing.assert_allclose(x.grad.data, 36 * XV, rtol=1e-15)
    assert h.grad is None  # not retained


def test_a_hook_sees_the_complete_gradient_once():
    # h feeds two consumers: L = sum(h) + sum(2h); the hook sees 1 + 2 = 3, once.
    x = itn.tensor(XV, requires_grad=True)
    h = x * 1.0
    calls = []
    h.register_hook(lambda g: calls.append(g.data.copy()))
    (h.sum() + (2 * h).sum()).backward()
    assert len(calls) == 1
    np.testing.assert_allclose(calls[0], np.full(3, 3.0), rtol=1e-15)


def test_a_hook_on_a_leaf_changes_what_accumulates_and_handles_remove():
    x = itn.tensor(XV, requires_grad=True)
    handle = x.register_hook(lambda g: g + 1)
    (x * x).sum().backward()  # 2x, then + 1
    np.testing.assert_allclose(x.grad.data, 2 * XV + 1, rtol=1e-15)
    handle.remove()
    x.grad = None
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.data, 2 * XV, rtol=1e-15)
    handle.remove()  # a second remove is harmless


def test_retain_grad_keeps_an_intermediate_gradient_and_accumulates():
    x = itn.tensor(XV, requires_grad=True)
    h = itn.sin(x)
    h.retain_grad()
    y = (h * h).sum()  # dL/dh = 2 sin x
    y.backward(retain_graph=True)
    np.testing.assert_allclose(h.grad.data, 2 * np.sin(XV), rtol=1e-15)
    np.testing.assert_allclose(x.grad.data, 2 * np.sin(XV) * np.cos(XV), rtol=1e-15)
    y.backward()
    np.testing.assert_allclose(h.grad.data, 4 * np.sin(XV), rtol=1e-15)
    assert not np.shares_memory(h.grad.data, x.grad.data)


def test_retain_grad_shows_the_gradient_after_the_hooks():
    x = itn.tensor(XV, requires_grad=True)
    h = x * 1.0
    h.retain_grad()
    h.register_hook(lambda g: g * 10)
    h.sum().backward()
    np.testing.assert_allclose(h.grad.data, np.full(3, 10.0))
    np.testing.assert_allclose(x.grad.data, np.full(3, 10.0))


def test_hooks_and_retain_grad_under_create_graph():
    # h = x^2, L = sum(h^3): dL/dh = 3h^2, hook doubles it: g1 = dL/dx = 2 (3h^2) 2x = 12 h^2 x = 12 x^5.
    x = itn.tensor(XV, requires_grad=True)
    h = x * x
    h.retain_grad()
    handle = h.register_hook(lambda g: g * 2)
    (h * h * h).sum().backward(create_graph=True)
    np.testing.assert_allclose(x.grad.data, 12 * XV ** 5, rtol=1e-14)
    assert x.grad.requires_grad and h.grad.requires_grad
    np.testing.assert_allclose(h.grad.data, 6 * XV ** 4, rtol=1e-14)
    g1 = x.grad
    # g1 = 12 h^2 x is a graph through h. Differentiating it: d/dx (direct) 12 h^2 = 12 x^4, and via h:
    # 24 h x * dh/dx = 48 x^4; 60 x^4 in all. The doubling is in g1's graph (without it: 30 x^4).
    handle.remove()
    x.grad = None
    g1.sum().backward(retain_graph=True)
    np.testing.assert_allclose(x.grad.data, 60 * XV ** 4, rtol=1e-14)
    # With the hook still registered it doubles the gradient reaching h in this pass too (as torch's
    # hooks fire on every backward through the tensor): 12 x^4 + 2 * 48 x^4 = 108 x^4.
    h.register_hook(lambda g: g * 2)
    x.grad = None
    g1.sum().backward()
    np.testing.assert_allclose(x.grad.data, 108 * XV ** 4, rtol=1e-14)


def test_hook_errors():
    x = itn.tensor(XV, requires_grad=True)
    with pytest.raises(GraphError, match="register_hook.*does not require grad"):
        itn.tensor(XV).register_hook(lambda g: g)
    with pytest.raises(GraphError, match="retain_grad.*does not require grad"):
        itn.tensor(XV).retain_grad()
    with pytest.raises(TypeError, match="callable"):
        x.register_hook(3)

    def bad_shape(g):
        return np.zeros(2)

    h = x * 2
    h.register_hook(bad_shape)
    with pytest.raises(ShapeError, match=r"hook 'bad_shape' returned shape \(2,\) float64.*shape \(3,\) float64"):
        h.sum().backward()
    k = x * 2
    k.register_hook(lambda g: g.data.astype(np.float32))
    with pytest.raises(DTypeError, match="returned shape"):
        k.sum().backward()


def test_retain_grad_makes_no_reference_cycle():
    gc.collect()
    gc.disable()
    try:
        x = itn.tensor(XV, requires_grad=True)
        h = x * 2
        h.retain_grad()
        ref = weakref.ref(h)
        del h
        assert ref() is None
    finally:
        gc.enable()
