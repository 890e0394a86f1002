# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 1. An autodiff engine from scratch
#
# Every gradient in this course comes from a reverse-mode automatic differentiation engine. In
# this notebook you first build one for scalars, in one page of code, and check it against
# central differences. Then you open `itnet_np.autograd`, the engine the package runs on, and
# find the same ideas at array scale: primitives that state their vector-Jacobian products,
# un-broadcasting done once in the engine, an iterative backward pass that survives graphs
# thousands of ops deep, gradient checks, and gradients of gradients.
#
# Prerequisites: none beyond Python, NumPy and the chain rule. This is the first notebook.

# %%
import os
FULL_SIZE = os.environ.get("ITNET_FULL_SIZE", "0") == "1"   # full-size figures (slower)
import math
import sys
import time

import numpy as np
import matplotlib.pyplot as plt
import itnet_np as itn

DEPTHS = [250, 500, 1000, 2000, 5000, 10000, 20000] if FULL_SIZE else [250, 500, 1000, 2000, 5000]
WIDTH = 64 if FULL_SIZE else 8            # entries per tensor in the timing experiment
rng = np.random.default_rng(0)

# %% [markdown]
# ## Reverse mode in one paragraph
#
# A program is a graph of small operations. If $v = \phi(u_1, \dots, u_k)$ is one of them, the
# chain rule says that the sensitivity of the final output $L$ to an input, the *adjoint*
# $\bar u_m = \partial L / \partial u_m$, collects one term from every operation that used $u_m$:
#
# $$\bar u_m \mathrel{+}= \bar v \, \frac{\partial \phi}{\partial u_m}.$$
#
# So each operation only has to remember its inputs and its local partial derivatives. Backward
# starts from $\bar L = 1$ and visits the operations in *reverse topological order*: an
# operation runs only after every operation that consumed its output has sent its adjoint.
#
# ## A scalar engine
#
# `Value` holds a number, its adjoint `grad`, its parents and the local derivatives
# $\partial v / \partial u_m$, computed in the forward pass next to the value itself. It stores
# numbers, not closures, so a node never refers back to itself.

# %%
class Value:
    """A scalar that remembers how it was computed: v = phi(parents), with d phi / d parent."""

    __slots__ = ("data", "grad", "parents", "partials")

    def __init__(self, data, parents=(), partials=()):
        self.data = float(data)
        self.grad = 0.0
        self.parents = parents      # the Values this one was computed from
        self.partials = partials    # d self / d parent, one number per parent

    def __repr__(self):
        return f"Value({self.data:.6g}, grad={self.grad:.6g})"

    # --- the operations: value and local derivatives side by side -----------------------
    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data + other.data, (self, other), (1.0, 1.0))

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data * other.data, (self, other), (other.data, self.data))

    def __pow__(self, k):                   # k a constant number: d x^k = k x^(k-1) dx
        return Value(self.data ** k, (self,), (k * self.data ** (k - 1),))

    def tanh(self):                         # d tanh x = (1 - tanh^2 x) dx
        t = math.tanh(self.data)
        return Value(t, (self,), (1.0 - t * t,))

    def exp(self):                          # d e^x = e^x dx
        e = math.exp(self.data)
        return Value(e, (self,), (e,))

    # everything else is written with the operations above
    __radd__ = __add__
    __rmul__ = __mul__

    def __neg__(self):
        return self * -1.0

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return (-self) + other

    def __truediv__(self, other):
        return self * other ** -1.0

    def __rtruediv__(self, other):
        return other * self ** -1.0

    # --- the backward pass -------------------------------------------------------------
    def backward(self):
        """Adjoints of every Value this one depends on: d self / d node in node.grad."""
        order = topological_order(self)
        for node in order:
            node.grad = 0.0
        self.grad = 1.0
        for node in reversed(order):        # consumers before the values they consumed
            for parent, partial in zip(node.parents, node.partials):
                parent.grad += partial * node.grad


def topological_order(root):
    """Every node reachable from root, each after all of its parents: a depth-first post-order,
    with an explicit stack instead of recursion, so the depth of the graph does not matter."""
    order, seen = [], set()
    stack = [(root, False)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))          # comes back here once its parents are placed
        stack.extend((p, False) for p in node.parents if id(p) not in seen)
    return order


# %% [markdown]
# Try it on $f(a, b) = \tanh(a b + b^3)\, e^{-a} + a / b$ and compare every partial derivative with
# a central difference, $\partial f / \partial a \approx (f(a + h, b) - f(a - h, b)) / 2h$, whose
# error is $O(h^2)$ (plus rounding of order $\epsilon / h$).

# %%
def f_scalar(a, b):
    return (a * b + b ** 3).tanh() * (-a).exp() + a / b


a, b = Value(0.7), Value(-1.3)
out = f_scalar(a, b)
out.backward()


def central_difference(f, args, k, h=1e-6):
    """(f(.., x_k + h, ..) - f(.., x_k - h, ..)) / 2h on plain floats."""
    up, down = list(args), list(args)
    up[k] += h
    down[k] -= h
    return (f(*up) - f(*down)) / (2 * h)


def f_float(a, b):                          # the same function on floats, for the differences
    return math.tanh(a * b + b ** 3) * math.exp(-a) + a / b


for k, v in enumerate((a, b)):
    numeric = central_difference(f_float, (a.data, b.data), k)
    print(f"df/d{'ab'[k]}: engine {v.grad:+.12f}   central difference {numeric:+.12f}")
    assert abs(v.grad - numeric) < 1e-8

# %% [markdown]
# ### Why the sort must not recurse
#
# The textbook topological sort is a recursive function: visit the parents, then append the node.
# Python stops recursion at about a thousand frames, so that version fails on a chain of a few
# thousand operations, the size of an unrolled recurrence over a long sequence.

# %%
def recursive_order(root, order=None, seen=None):
    order, seen = ([], set()) if order is None else (order, seen)
    if id(root) not in seen:
        seen.add(id(root))
        for p in root.parents:
            recursive_order(p, order, seen)
        order.append(root)
    return order


leaf = Value(0.5)
deep = leaf
for _ in range(5000):
    deep = (deep * 0.999).tanh()             # 3 nodes per step: the constant, the product, tanh

try:
    recursive_order(deep)
    overflowed = False
except RecursionError:
    overflowed = True
print(f"recursive sort: RecursionError = {overflowed} (Python's limit: {sys.getrecursionlimit()} frames)")
assert overflowed

deep.backward()                            # the iterative one is fine
expected, h = 1.0, 0.5                     # the chain rule written out: prod 0.999 (1 - tanh^2)
for _ in range(5000):
    h = math.tanh(0.999 * h)
    expected *= 0.999 * (1.0 - h * h)
print(f"iterative backward over {len(topological_order(deep))} nodes: d out / d leaf = {leaf.grad:.6g}")
assert math.isclose(leaf.grad, expected, rel_tol=1e-10)

# %% [markdown]
# ### Exercise 1: add `sigmoid` to the scalar engine
#
# Write `sigmoid(v)` for a `Value` v: $\sigma(x) = 1 / (1 + e^{-x})$, with local derivative
# $\sigma'(x) = \sigma(x)(1 - \sigma(x))$. Build it as one new node (not from `exp` and `/`), then
# check the gradient of $g(x) = \sigma(x^2 - 1)\,x$ at a few points against central differences.

# %%
def sigmoid(v):
    s = 1.0 / (1.0 + math.exp(-v.data))
    return Value(s, (v,), (s * (1.0 - s),))


def g_value(x):
    return sigmoid(x * x - 1.0) * x


# %%
# Check: engine gradient against central differences of the same function on plain floats.
def g_float(x):
    return x / (1.0 + math.exp(-(x * x - 1.0)))


for x0 in (-2.0, -0.3, 0.0, 0.9, 3.0):
    x = Value(x0)
    g_value(x).backward()
    numeric = central_difference(g_float, (x0,), 0)
    assert abs(x.grad - numeric) < 1e-8, (x0, x.grad, numeric)
    assert math.isclose(g_value(Value(x0)).data, g_float(x0), rel_tol=1e-14, abs_tol=1e-300)
print("sigmoid: gradients agree with central differences")

# %% [markdown]
# ## The same ideas at array scale: `itnet_np.autograd`
#
# The package's engine works on whole arrays, but its parts are the ones above.
#
# * A **primitive** (`itnet_np/autograd/primitive.py`) is a forward on raw arrays plus one
#   vector-Jacobian product (VJP) per input: given the upstream adjoint $g = \partial L / \partial
#   \text{out}$ it returns $g\,\partial \text{out} / \partial x$, the array version of
#   `partial * node.grad`. The ops live in `itnet_np/autograd/ops/`, one family per file; for
#   example `elementwise.py` declares `tanh` with the VJP $g (1 - \text{out}^2)$.
# * A **node** (`itnet_np/autograd/engine.py`) records one call: the primitive, its inputs and,
#   only when the primitive asks (`save_output=True`), its output.
# * **Backward** (`run_backward` in `engine.py`) visits nodes in reverse topological order without
#   recursion.

# %%
print(itn.tanh, "save_output =", itn.tanh.save_output, " VJPs:", len(itn.tanh.vjps))
print(itn.multiply, "save_output =", itn.multiply.save_output, " VJPs:", len(itn.multiply.vjps))

# A VJP is an ordinary function; called on raw arrays it returns a raw array.
x = rng.standard_normal(5)
out = np.tanh(x)
g = rng.standard_normal(5)
vjp_tanh = itn.tanh.vjps[0](g, out, x)
print("tanh VJP on raw arrays:", type(vjp_tanh).__name__, np.allclose(vjp_tanh, g * (1 - out ** 2)))

# %% [markdown]
# ### Un-broadcasting, once, in the engine
#
# NumPy broadcasting stretches a $(3, 1)$ array and a $(4,)$ array to $(3, 4)$ before adding. The
# VJP of `add` simply passes $g$ through, with shape $(3, 4)$. A gradient must have its input's
# shape, so something has to sum $g$ over the stretched axes: $\bar a_{i0} = \sum_j g_{ij}$ and
# $\bar b_j = \sum_i g_{ij}$. No op does that itself. The engine calls `unbroadcast` (in
# `engine.py`) on every gradient whose shape differs from its input's, so every op, present and
# future, gets it right.

# %%
a = itn.tensor(rng.standard_normal((3, 1)), requires_grad=True)
b = itn.tensor(rng.standard_normal(4), requires_grad=True)
y = a + b
G = rng.standard_normal((3, 4))            # an arbitrary upstream gradient dL/dy
y.backward(G)

print("add's VJP returns shape", itn.add.vjps[0](G, None, a.data, b.data).shape)
print("a.grad shape", a.grad.shape, "   b.grad shape", b.grad.shape)
assert np.allclose(a.grad.numpy(), G.sum(axis=1, keepdims=True))
assert np.allclose(b.grad.numpy(), G.sum(axis=0))

from itnet_np.autograd.engine import unbroadcast   # the one place it happens
assert np.allclose(unbroadcast(G, (3, 1)), G.sum(axis=1, keepdims=True))

# %% [markdown]
# ### An iterative backward on a deep graph
#
# `run_backward` first counts, for each node, how many consumers will send it a gradient (a
# depth-first walk with an explicit stack). Then it keeps a list of nodes whose consumers have all
# reported (Kahn's algorithm) and processes them one at a time. Neither step recurses, so a chain
# of 5000 ops, five times deeper than Python's recursion limit, is no problem. The cost is one VJP
# per node, so the time should grow linearly with the depth.

# %%
def chain(x, depth):
    """``depth`` ops: h <- sin(tanh(h)), two nodes per step."""
    h = x
    for _ in range(depth // 2):
        h = itn.sin(itn.tanh(h))
    return h


forward_s, backward_s = [], []
for depth in DEPTHS:
    best = [np.inf, np.inf]                  # best of 3 runs: the machine may be busy
    for _ in range(3):
        x = itn.tensor(rng.standard_normal(WIDTH), requires_grad=True)
        t0 = time.perf_counter()
        y = chain(x, depth).sum()
        t1 = time.perf_counter()
        y.backward()
        t2 = time.perf_counter()
        best = [min(best[0], t1 - t0), min(best[1], t2 - t1)]
    forward_s.append(best[0])
    backward_s.append(best[1])

# the derivative of the deepest chain, by the chain rule written out in NumPy
h, expected = x.data.copy(), np.ones(WIDTH)
for _ in range(DEPTHS[-1] // 2):
    t = np.tanh(h)
    expected *= np.cos(t) * (1 - t ** 2)
    h = np.sin(t)
assert np.all(expected != 0) and np.allclose(x.grad.numpy(), expected, rtol=1e-10, atol=0)

fig, ax = plt.subplots(figsize=(5.5, 3.8))
ax.plot(DEPTHS, np.array(forward_s) * 1e3, "o-", label="forward (builds the graph)")
ax.plot(DEPTHS, np.array(backward_s) * 1e3, "s-", label="backward")
ax.axvline(sys.getrecursionlimit(), color="grey", ls=":", label="Python's recursion limit")
ax.set_xlabel("graph depth (ops in a chain)")
ax.set_ylabel("time (ms)")
ax.set_title("Time against graph depth (best of 3)")
ax.legend()
plt.show()

# %% [markdown]
# ### Gradient checks
#
# `itn.gradcheck(f, inputs)` (in `itnet_np/autograd/gradcheck.py`) tests every VJP of `f` at once.
# It draws a random cotangent $u$ and random directions $v_k$, and compares
#
# $$\sum_k \langle \mathrm{vjp}_k(u), v_k \rangle \quad\text{with}\quad
# \frac{\langle u, f(x + \varepsilon v) \rangle - \langle u, f(x - \varepsilon v)\rangle}{2\varepsilon}.$$
#
# Random vectors on both sides catch transposed or mis-summed gradients that an all-ones
# cotangent would hide. It needs float64: with float32 rounding, the difference quotient is
# too noisy to be a test. `itn.gradgradcheck` applies the same test to the map
# $(x, u) \mapsto \mathrm{vjp}(u)$, that is, to the second derivatives.

# %%
A = rng.standard_normal((4, 3))
B = rng.standard_normal((3,))
f_array = lambda A, B: itn.tanh(A @ A.T) * itn.exp(-(A * B).sum())
print("gradcheck:", itn.gradcheck(f_array, [A, B]))
print("gradgradcheck:", itn.gradgradcheck(f_array, [A, B]))

# A check that cannot fail is no check: a primitive with a wrong VJP (sin' taken as +sin) fails.
wrong_sin = itn.primitive(np.sin, "wrong_sin").defvjp(lambda g, out, x: g * itn.sin(x))
assert not itn.gradcheck(lambda x: wrong_sin(x), [rng.standard_normal(6)], raise_exception=False)

try:
    itn.gradcheck(f_array, [A.astype(np.float32), B.astype(np.float32)])
except itn.DTypeError as err:
    print("float32 is refused:", err)

# %% [markdown]
# ### Gradients of gradients
#
# Each VJP is written with the package's own ops, never with `np.` calls. Given raw arrays they
# return raw arrays (the fast path above). Given Tensors, they record a graph like any other
# code. So `backward(create_graph=True)`, or `itn.grad` nested in `itn.grad`, differentiates the
# backward pass itself. For $t = \tanh x$:
#
# $$\tanh' = 1 - t^2,\qquad \tanh'' = -2t(1 - t^2),\qquad \tanh''' = -2(1 - t^2)(1 - 3t^2).$$
#
# Because tanh acts elementwise, the gradient of $\sum_i \tanh^{(k)}(x_i)$ is the vector of
# $\tanh^{(k+1)}(x_i)$, so three nested `itn.grad` calls give all three derivatives on a grid.

# %%
xs = np.linspace(-3, 3, 241)
d1 = itn.grad(lambda x: itn.tanh(x).sum())
d2 = itn.grad(lambda x: d1(x).sum())
d3 = itn.grad(lambda x: d2(x).sum())
engine = [np.tanh(xs)] + [d(itn.tensor(xs)).numpy() for d in (d1, d2, d3)]

t = np.tanh(xs)
closed = [t, 1 - t ** 2, -2 * t * (1 - t ** 2), -2 * (1 - t ** 2) * (1 - 3 * t ** 2)]
for k in range(4):
    assert np.max(np.abs(engine[k] - closed[k])) < 1e-12

# the same second derivative through backward(create_graph=True): .grad is itself differentiable
x = itn.tensor(xs, requires_grad=True)
itn.tanh(x).sum().backward(create_graph=True)
first = x.grad
x.grad = None
first.sum().backward()
assert np.max(np.abs(x.grad.numpy() - closed[2])) < 1e-12

# For comparison: the third derivative by central differences with step h; its error is
# O(h^2) from truncation plus O(eps / h^3) from rounding, so no step h makes it accurate.
hs = 1e-3
by_differences = (np.tanh(xs + 2 * hs) - 2 * np.tanh(xs + hs) + 2 * np.tanh(xs - hs)
                  - np.tanh(xs - 2 * hs)) / (2 * hs ** 3)

fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
names = ["tanh", "tanh'", "tanh''", "tanh'''"]
for k in range(4):
    line, = axes[0].plot(xs, engine[k], label=names[k])
    axes[0].plot(xs[::12], closed[k][::12], "o", ms=3, color=line.get_color())
axes[0].set_title("engine (lines) and closed forms (dots)")
axes[0].set_xlabel("x")
axes[0].set_ylabel("value")
axes[0].legend()
axes[1].semilogy(xs, np.abs(engine[3] - closed[3]) + 1e-18, label="engine: three nested itn.grad")
axes[1].semilogy(xs, np.abs(by_differences - closed[3]), label=f"central differences, h = {hs:g}")
axes[1].set_title("error of the third derivative (+1e-18 for the log scale)")
axes[1].set_xlabel("x")
axes[1].set_ylabel("|computed - closed form|")
axes[1].legend()
plt.show()

# %% [markdown]
# ### Exercise 2: a new primitive and its VJP
#
# Declare `hypot(x, y)` $= \sqrt{x^2 + y^2}$ as one primitive with `itn.primitive` (read the
# docstring of `itnet_np/autograd/primitive.py`). Its VJPs are
# $\bar x = g\,x / \text{out}$ and $\bar y = g\,y / \text{out}$. Save the output, write the VJPs
# with ordinary operators so they also work on Tensors, and let the engine do the broadcasting.
# Then pass `gradcheck` and `gradgradcheck` with inputs of shapes $(3, 1)$ and $(4,)$.

# %%
hypot = itn.primitive(np.hypot, "hypot", save_output=True).defvjp(
    lambda g, out, x, y: g * x / out,
    lambda g, out, x, y: g * y / out)

# %%
# Check: central differences (gradcheck, gradgradcheck), and the gradient of sum(hypot) against
# its closed form summed over the broadcast axes by hand.
xh = rng.standard_normal((3, 1)) + 2.0
yh = rng.standard_normal(4)
assert itn.gradcheck(hypot, [xh, yh])
assert itn.gradgradcheck(hypot, [xh, yh])
gx, gy = itn.grad(lambda x, y: hypot(x, y).sum(), argnums=(0, 1))(xh, yh)
r = np.sqrt(xh ** 2 + yh ** 2)
assert np.allclose(gx.numpy(), (xh / r).sum(axis=1, keepdims=True), rtol=1e-12)
assert np.allclose(gy.numpy(), (yh / r).sum(axis=0), rtol=1e-12)
print("hypot: first and second derivatives check out")

# %% [markdown]
# ### Exercise 3: a Hessian-vector product
#
# For $f(x) = \sum_i \tanh(a_i \cdot x)$, compute $H v$, the Hessian of $f$ at $x$ applied to a
# vector $v$, without forming $H$: it is the gradient of $x \mapsto \langle \nabla f(x), v\rangle$.
# Check it against a central difference of the gradient,
# $(\nabla f(x + \varepsilon v) - \nabla f(x - \varepsilon v)) / 2\varepsilon$, and against the
# closed form $H = \sum_i \tanh''(a_i \cdot x)\, a_i a_i^{\mathsf T}$.

# %%
Amat = rng.standard_normal((6, 4))
f_hvp = lambda x: itn.tanh(itn.tensor(Amat) @ x).sum()
grad_f = itn.grad(f_hvp)


def hvp(x, v):
    return itn.grad(lambda z: (grad_f(z) * v).sum())(x).numpy()


x0, v0 = rng.standard_normal(4), rng.standard_normal(4)
Hv = hvp(x0, v0)

# %%
# Check: central difference of the gradient (error O(eps^2)), and the closed-form Hessian.
eps = 1e-5
numeric = (grad_f(x0 + eps * v0).numpy() - grad_f(x0 - eps * v0).numpy()) / (2 * eps)
assert np.allclose(Hv, numeric, rtol=1e-7, atol=1e-8)
t = np.tanh(Amat @ x0)
H = (Amat.T * (-2 * t * (1 - t ** 2))) @ Amat
assert np.allclose(Hv, H @ v0, rtol=1e-12, atol=1e-12)
print("Hv:", np.round(Hv, 6))

# %% [markdown]
# ## What to remember
#
# * Reverse mode is one rule, $\bar u \mathrel{+}= \bar v\,\partial v / \partial u$, applied in
#   reverse topological order; an explicit stack keeps the order free of recursion.
# * A primitive states its forward and its VJPs side by side; the engine does the rest once
#   (un-broadcasting, accumulation, dtype checks, freeing the graph).
# * VJPs written with the engine's own ops give higher derivatives for free.
# * Trust a gradient only after a check that can fail: `itn.gradcheck` in float64.
#
# Next: notebook 2 puts the engine to work on the integral transform.
