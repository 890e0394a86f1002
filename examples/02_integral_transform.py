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
# # 2. The integral transform
#
# One operator runs through this whole course. This notebook takes it apart: points with positions
# and features, a kernel that scores pairs of points, quadrature weights, a normalisation and a
# support. Together they form a matrix $A$. You draw $A$ for every kernel family in the package,
# watch normalisation and support reshape it, and then use the operator as what its name says: a
# quadrature rule for an integral. Evaluated on a coarse and on a fine mesh, the same operator
# approximates the same integral, and the error falls at the rate the quadrature rule predicts.
#
# Prerequisites: notebook 1 (the autograd engine; here it only runs in the background).

# %%
import os
FULL_SIZE = os.environ.get("ITNET_FULL_SIZE", "0") == "1"   # full-size figures (slower)
import numpy as np
import matplotlib.pyplot as plt
import itnet_np as itn
from scipy.integrate import quad
from scipy.special import softmax
from itnet_np.transform import (
    DecayKernel, DotProductKernel, IntegralTransform, LowRankKernel, MLPKernel, SelectiveKernel,
    StencilKernel)

N = 48 if FULL_SIZE else 24                                   # points in the heat maps
MESHES = [5, 9, 17, 33, 65, 129, 257, 513] if FULL_SIZE else [5, 9, 17, 33, 65, 129]
F64 = np.float64                                              # verification runs in float64
rng = np.random.default_rng(0)

# %% [markdown]
# ## The operator
#
# Take $N$ query points $(p_i, f_i)$ and $M$ source points $(p_j, f_j)$: positions $p \in
# \mathbb R^D$ and feature vectors $f \in \mathbb R^C$ (in self mode the two sets are the same).
# One head of the transform computes
#
# $$y_i = W_O \sum_{j \in S(i)} A_{ij}\, V f_j \;+\; W_{\text{skip}} f_i + b,
# \qquad A_{ij} = n\big(w_j,\, K(p_i, p_j, f_i, f_j)\big),$$
#
# with four independent choices, each in its own file under `itnet_np/transform/`:
#
# * the **kernel** $K$ (`kernels/`): a score for every pair of points;
# * the **quadrature** weights $w_j$ (`quadrature.py`): how much source $j$ counts;
# * the **normalisation** $n$ (`normalization.py`): `'none'` $A_{ij} = w_j K_{ij}$, `'sum'`
#   $A_{ij} = w_j K_{ij} / \sum_l w_l K_{il}$ (Nadaraya–Watson), `'softmax'`
#   $A_{ij} = w_j e^{K_{ij}} / \sum_l w_l e^{K_{il}}$ (attention);
# * the **support** $S(i)$ (`support.py`): which sources query $i$ may see.
#
# `IntegralTransform` (`operator.py`) owns $V$ (`W_V`), $W_O$, the optional skip $W_{\text{skip}}$
# and the bias $b$. Features are batch first, $(B, N, C)$; positions are $(N, D)$, or omitted for
# the sequence grid $p_i = i$. The method `kernel_matrix` returns $A$ itself, shape $(B, H, N, M)$,
# with weights, support and normalisation applied. So a forward pass is $A$ times the values,
# which you can confirm in NumPy:

# %%
C = 3
x = rng.standard_normal((1, N, C))
positions = np.sort(rng.uniform(0, 1, N))[:, None]           # (N, 1): irregular points on [0, 1]

layer = IntegralTransform(C, C, MLPKernel(C, hidden=16, rng=rng, dtype=F64), rng=rng, dtype=F64)
y = layer(itn.tensor(x), positions=positions).numpy()
A = layer.kernel_matrix(itn.tensor(x), positions=positions).numpy()
print("y", y.shape, "  A", A.shape)

V, W_O, b = layer.W_V.data, layer.W_O.data, layer.b.data
assert np.allclose(y[0], A[0, 0] @ x[0] @ V.T @ W_O.T + b, rtol=1e-12, atol=1e-12)

# %% [markdown]
# ## The matrix $A$ for every kernel family
#
# The package has six kernel families. Each is the kernel of a familiar layer:
#
# | kernel | $K(p_i, p_j, f_i, f_j)$ | the layer |
# |---|---|---|
# | `MLPKernel` | a small MLP of $(p_i - p_j, f_i, f_j)$ | ITNet's own |
# | `DotProductKernel` | $(W_q f_i)\cdot(W_k f_j)/\sqrt{d}$, with softmax | attention |
# | `StencilKernel` | a table over the offsets $p_j - p_i$ | convolution |
# | `DecayKernel` | $\sum_n c_n \lambda_n^{p_i - p_j}$ for $p_j \le p_i$ | a linear state-space model (S4D) |
# | `SelectiveKernel` | decay over a clock that depends on the features | Mamba's selective scan |
# | `LowRankKernel` | $\phi(W_q f_i)\cdot\psi(W_k f_j)$, with 'sum' | linear attention |
#
# Below, each one runs on the same $N$ points of a sequence (positions $p_i = i$) with its usual
# normalisation, and `kernel_matrix` draws its $A$.

# %%
x = rng.standard_normal((1, N, C))
families = {
    "MLP, 'none'": (MLPKernel(C, hidden=16, rng=rng, dtype=F64), "none"),
    "dot product, 'softmax'": (DotProductKernel(C, rng=rng, dtype=F64), "softmax"),
    "stencil (5 taps), 'none'": (StencilKernel([-2, -1, 0, 1, 2], heads=1, rng=rng, dtype=F64), "none"),
    "decay (S4D), 'none'": (DecayKernel(heads=1, real_modes=1, complex_modes=1, rng=rng, dtype=F64), "none"),
    "selective (Mamba), 'none'": (SelectiveKernel(C, heads=1, state_dim=4, rng=rng, dtype=F64), "none"),
    "low rank, 'sum'": (LowRankKernel(C, rng=rng, dtype=F64), "sum"),
}
matrices = {}
for name, (kernel, normalization) in families.items():
    op = IntegralTransform(C, C, kernel, normalization=normalization, rng=rng, dtype=F64)
    matrices[name] = op.kernel_matrix(itn.tensor(x)).numpy()[0, 0]

fig, axes = plt.subplots(2, 3, figsize=(12, 7.5))
for ax, (name, A) in zip(axes.flat, matrices.items()):
    lim = np.abs(A).max()
    im = ax.imshow(A, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_title(name)
    ax.set_xlabel("source j")
    ax.set_ylabel("query i")
    fig.colorbar(im, ax=ax, shrink=0.8)
fig.suptitle("The matrix A of one head, for each kernel family")
fig.tight_layout()
plt.show()

# %% [markdown]
# The selective kernel looks speckled because it contributes its own quadrature weights, the step
# sizes $\Delta_j$ of Mamba, and they depend on the input.
#
# Two of these kernels ignore the features: the stencil and the decay kernel depend on
# $p_j - p_i$ alone. Then the layer is linear in $f$, and $A$ can also be read off by feeding
# impulses: with $V = W_O = 1$, no bias and one channel, the input $f = e_j$ (one at source $j$,
# zero elsewhere) returns column $j$ of $A$. For the feature-dependent kernels (MLP, dot product,
# selective, low rank) this fails, because $A$ changes with the input; `kernel_matrix` gives
# $A$ at the given input.

# %%
def impulse_response(kernel, normalization="none"):
    """A by impulses: a batch of N one-channel inputs, the b-th one a one at position b."""
    op = IntegralTransform(1, 1, kernel, normalization=normalization, bias=False, rng=rng, dtype=F64)
    op.W_V.data[...] = 1.0
    op.W_O.data[...] = 1.0
    impulses = np.eye(N)[:, :, None]                  # (B = N, N, 1)
    y = op(itn.tensor(impulses)).numpy()[:, :, 0]     # y[b, i] = A[i, b]
    return y.T


for name in ("stencil (5 taps), 'none'", "decay (S4D), 'none'"):
    assert np.allclose(impulse_response(families[name][0]), matrices[name], rtol=1e-12, atol=1e-14)
print("stencil and decay: impulse responses equal kernel_matrix")

# %% [markdown]
# ## Quadrature weights
#
# Under `'none'`, $A_{ij} = w_j K_{ij}$: the weights scale the columns. The choices are
#
# * `quadrature='uniform'`: $w_j = 1$, the convention of convolution, attention and SSM layers;
# * `quadrature='mean'`: $w_j = 1/M$, a Monte Carlo mean over the sources;
# * weights given at call time, `layer(x, weights=w)`: they multiply the configured ones (cell
#   volumes, a trapezoid rule, ...);
# * `quadrature='learned'`: $w_j = \mathrm{softplus}(a \cdot f_j + c)$, a learned density
#   (`LearnedQuadrature` in `quadrature.py`), which starts at $w_j = 1$.

# %%
x1 = itn.tensor(rng.standard_normal((1, N, C)))
kernel = MLPKernel(C, hidden=16, rng=rng, dtype=F64)


def matrix(quadrature="uniform", weights=None):
    op = IntegralTransform(C, C, kernel, quadrature=quadrature, rng=0, dtype=F64)
    return op, op.kernel_matrix(x1, weights=weights).numpy()[0, 0]


_, A_uniform = matrix()
_, A_mean = matrix("mean")
w_given = rng.uniform(0.5, 2.0, N)
_, A_given = matrix(weights=w_given)
learned, A_learned = matrix("learned")

assert np.allclose(A_mean, A_uniform / N, rtol=1e-12)
assert np.allclose(A_given, A_uniform * w_given, rtol=1e-12)     # column j scaled by w_j
assert np.allclose(A_learned, A_uniform, rtol=1e-12)             # softplus(c) = 1 at the start
print("learned quadrature:", learned.quadrature_net)

# %% [markdown]
# ## Normalisation and support
#
# The same dot-product kernel under the three normalisations (top row) and, with softmax, under
# three supports (bottom row):
#
# * `support='causal'`: $p_j \le p_i$, the past only (a lower triangle on a sequence);
# * `window=w`: $|p_i - p_j| \le w$, a band;
# * `radius=r`: $\|p_i - p_j\|_2 \le r$, a ball, here around irregular points on $[0, 1]$.
#
# An explicit boolean `mask=` can be passed to the forward as well; all of them are ANDed.
#
# Look at `'sum'`: it divides by $\sum_l w_l K_{il}$, which is meant for a kernel that is never
# negative (Nadaraya–Watson smoothing). Dot-product scores have both signs, so a row whose sum
# comes close to zero blows up. Softmax exponentiates first, so its rows are always weighted
# averages.

# %%
dot = DotProductKernel(C, rng=rng, dtype=F64)
x2 = itn.tensor(rng.standard_normal((1, N, C)))
cloud = np.sort(rng.uniform(0, 1, N))[:, None]
settings = {
    "'none'": dict(normalization="none"),
    "'sum'": dict(normalization="sum"),
    "'softmax'": dict(normalization="softmax"),
    "softmax, causal": dict(normalization="softmax", support="causal"),
    "softmax, window=3": dict(normalization="softmax", window=3),
    "softmax, radius=0.15 (points on [0, 1])": dict(normalization="softmax", radius=0.15),
}
fig, axes = plt.subplots(2, 3, figsize=(12, 7.5))
for ax, (name, options) in zip(axes.flat, settings.items()):
    op = IntegralTransform(C, C, dot, rng=0, dtype=F64, **options)
    pos = cloud if "radius" in options else None
    A = op.kernel_matrix(x2, positions=pos).numpy()[0, 0]
    lim = np.abs(A).max()
    im = ax.imshow(A, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_title(f"{name}\nrow sums in [{A.sum(1).min():.2f}, {A.sum(1).max():.2f}]", fontsize=10)
    ax.set_xlabel("source j")
    ax.set_ylabel("query i")
    fig.colorbar(im, ax=ax, shrink=0.8)
fig.suptitle("One dot-product kernel: normalisation (top) and support (bottom)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Discretisation: the same operator on two meshes
#
# With positions in $[0, 1]$ and a kernel of the offset alone, $K(p_i, p_j) = k(p_i - p_j)$, the
# sum is a quadrature rule for an integral operator:
#
# $$y_i = \sum_j w_j\, k(p_i - p_j)\, u(p_j) \;\approx\; (Tu)(p_i) = \int_0^1 k(p_i - s)\, u(s)\, ds.$$
#
# The layer's parameters do not depend on the mesh; only the points and the weights do. On $n$
# equally spaced points with spacing $h = 1/(n-1)$, the trapezoid weights $w = h\,(\tfrac12, 1,
# \dots, 1, \tfrac12)$ give an error $O(h^2)$ for a smooth integrand (Euler–Maclaurin: the
# leading term is $\tfrac{h^2}{12}\,[g']_0^1$, so halving $h$ divides the error by 4). The mean
# $w_j = 1/n$ is only $O(h)$, and the uniform $w_j = 1$ has no limit at all: its sum grows with $n$.
#
# The kernel here is an `MLPKernel` of $p_i - p_j$ only (`inputs=('dp',)`), so
# $k(d) = W_2 \tanh(W_1 d + b_1) + b_2$. The reference integral comes from `scipy.integrate.quad`,
# with $k$ written out in NumPy from the layer's parameters.

# %%
kernel = MLPKernel(1, hidden=16, inputs=("dp",), activation="tanh", rng=1, dtype=F64)
kernel.W1.data[...] *= 4.0                             # a kernel with some curvature on [-1, 1]
smooth = IntegralTransform(1, 1, kernel, bias=False, rng=1, dtype=F64)
smooth.W_V.data[...] = 1.0                              # V = W_O = 1: y is the integral itself
smooth.W_O.data[...] = 1.0

W1, b1, W2, b2 = (p.data for p in (kernel.W1, kernel.b1, kernel.W2, kernel.b2))


def k_numpy(d):
    return float(W2[0] @ np.tanh(W1[:, 0] * d + b1) + b2[0])


def u(s):
    return np.sin(2 * np.pi * s) + s ** 2


def reference(points):
    return np.array([quad(lambda s: k_numpy(p - s) * u(s), 0.0, 1.0, epsabs=1e-13, epsrel=1e-13)[0]
                     for p in points])


def on_mesh(n, rule):
    """The operator on n equally spaced points of [0, 1] with the given quadrature rule."""
    s = np.linspace(0.0, 1.0, n)
    h = s[1] - s[0]
    w = {"trapezoid": np.r_[h / 2, np.full(n - 2, h), h / 2], "mean": np.full(n, 1.0 / n),
         "uniform": np.ones(n)}[rule]
    y = smooth(itn.tensor(u(s)[None, :, None]), positions=s[:, None], weights=w)
    return s, y.numpy()[0, :, 0]


errors = {"trapezoid": [], "mean": []}
for n in MESHES:
    for rule in errors:
        s, y = on_mesh(n, rule)
        errors[rule].append(np.max(np.abs(y - reference(s))))
steps = 1.0 / (np.array(MESHES) - 1)

fine = np.linspace(0, 1, 201)
coarse_s, coarse_y = on_mesh(MESHES[1], "trapezoid")
fine_s, fine_y = on_mesh(MESHES[-1], "trapezoid")
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
axes[0].plot(fine, reference(fine), "k-", lw=1, label="integral (scipy quad)")
axes[0].plot(coarse_s, coarse_y, "o--", label=f"operator, n = {MESHES[1]}")
axes[0].plot(fine_s, fine_y, ".", ms=4, label=f"operator, n = {MESHES[-1]}")
axes[0].set_xlabel("x")
axes[0].set_ylabel("(Tu)(x)")
axes[0].set_title("One operator, two meshes (trapezoid weights)")
axes[0].legend()
for rule, marker in (("trapezoid", "o-"), ("mean", "s-")):
    axes[1].loglog(steps, errors[rule], marker, label=f"{rule} weights")
axes[1].loglog(steps, errors["trapezoid"][0] * (steps / steps[0]) ** 2, "k:", label="slope 2")
axes[1].loglog(steps, errors["mean"][0] * (steps / steps[0]), "k--", label="slope 1")
axes[1].set_xlabel("mesh spacing h")
axes[1].set_ylabel("max |y_i - (Tu)(p_i)|")
axes[1].set_title("The error falls at the rule's rate")
axes[1].legend()
plt.show()

ratios = np.array(errors["trapezoid"][:-1]) / np.array(errors["trapezoid"][1:])
print("trapezoid: error ratio per halving of h:", np.round(ratios, 3))
assert np.all(np.abs(ratios[2:] - 4.0) < 0.2)           # O(h^2), as Euler-Maclaurin predicts
print("uniform weights w = 1 on the two meshes, max |y|:",
      [round(float(np.abs(on_mesh(n, "uniform")[1]).max()), 2) for n in (MESHES[1], MESHES[-1])])

# %% [markdown]
# ### Exercise 1: the forward pass from the formula
#
# Reproduce $y$ for a small case with an explicit loop over queries, heads and sources, using
# only the layer's parameters: a `DotProductKernel` with two heads, softmax normalisation, given
# weights $w_j$, a skip connection and a bias. For head $h$ (rows $h d \dots (h+1) d - 1$ of $W_q$,
# $W_k$, $W_V$; the same columns of $W_O$):
#
# $$s^h_{ij} = \tfrac{1}{\sqrt d}\,(W_q^h f_i)\cdot(W_k^h f_j),\qquad
# y_i = \sum_h W_O^h \sum_j \frac{w_j e^{s^h_{ij}}}{\sum_l w_l e^{s^h_{il}}}\, W_V^h f_j
# + W_{\text{skip}} f_i + b.$$

# %%
H, Cx, n_small = 2, 4, 5
attention = IntegralTransform(Cx, Cx, DotProductKernel(Cx, heads=H, rng=rng, dtype=F64),
                              normalization="softmax", skip=True, rng=rng, dtype=F64)
f_small = rng.standard_normal((1, n_small, Cx))
w_small = rng.uniform(0.5, 2.0, n_small)
y_small = attention(itn.tensor(f_small), weights=w_small).numpy()[0]


def by_loops(op, f, w):
    k = op.kernel
    d = k.head_dim
    Wq, Wk, WV, WO = k.W_q.data, k.W_k.data, op.W_V.data, op.W_O.data
    out = np.zeros((len(f), WO.shape[0]))
    for i in range(len(f)):
        out[i] = op.W_skip.data @ f[i] + op.b.data
        for h in range(k.heads):
            rows = slice(h * d, (h + 1) * d)
            q = Wq[rows] @ f[i]
            s = [q @ (Wk[rows] @ f[j]) / np.sqrt(d) for j in range(len(f))]
            z = sum(w[l] * np.exp(s[l]) for l in range(len(f)))
            mixed = sum(w[j] * np.exp(s[j]) / z * (WV[rows] @ f[j]) for j in range(len(f)))
            out[i] += WO[:, rows] @ mixed
    return out


# %%
# Check: the loop, written from the formula, against the layer.
gap = np.max(np.abs(by_loops(attention, f_small[0], w_small) - y_small))
assert gap < 1e-12
print(f"the explicit loop reproduces the layer to {gap:.1e}")

# %% [markdown]
# ### Exercise 2: softmax rows sum to one
#
# Show that under `'softmax'` every row of $A$ is a probability vector: $A_{ij} \ge 0$ and
# $\sum_j A_{ij} = 1$, whatever the (non-negative) weights. Check $A$ itself against SciPy's
# softmax of $s_{ij} + \log w_j$, with the scores computed in NumPy from $W_q$ and $W_k$.

# %%
A_soft = attention.kernel_matrix(itn.tensor(f_small), weights=w_small).numpy()[0]   # (H, N, N)
row_sums = A_soft.sum(axis=-1)

# %%
# Check: rows are probability vectors, and A equals scipy's softmax of the log-weighted scores.
assert np.all(A_soft >= 0) and np.allclose(row_sums, 1.0, rtol=0, atol=1e-14)
k = attention.kernel
d = k.head_dim
q = (f_small[0] @ k.W_q.data.T).reshape(n_small, H, d)
keys = (f_small[0] @ k.W_k.data.T).reshape(n_small, H, d)
scores = np.einsum("ihd,jhd->hij", q, keys) / np.sqrt(d)
assert np.allclose(A_soft, softmax(scores + np.log(w_small), axis=-1), rtol=1e-12, atol=1e-15)
# the 'none' normalisation gives no such guarantee
A_none = IntegralTransform(Cx, Cx, k, rng=0, dtype=F64).kernel_matrix(itn.tensor(f_small)).numpy()
assert not np.allclose(A_none.sum(axis=-1), 1.0)
print("row sums under softmax:", np.round(row_sums, 15))

# %% [markdown]
# ### Exercise 3: a causal support
#
# Build a layer with `support='causal'` on a sequence and show that $A$ is lower triangular
# ($A_{ij} = 0$ for $j > i$). Then show what that means for the output: changing the features
# after position $i$ leaves $y_0, \dots, y_i$ unchanged.

# %%
causal = IntegralTransform(C, C, MLPKernel(C, hidden=8, rng=rng, dtype=F64), normalization="softmax",
                           support="causal", rng=rng, dtype=F64)
f_seq = rng.standard_normal((1, N, C))
A_causal = causal.kernel_matrix(itn.tensor(f_seq)).numpy()[0, 0]

# %%
# Check: the strict upper triangle is exactly zero, and the past does not see the future.
assert np.all(np.triu(A_causal, k=1) == 0) and np.all(np.diag(A_causal) > 0)
cut = N // 2
changed = f_seq.copy()
changed[:, cut + 1:] += rng.standard_normal((1, N - cut - 1, C))
y_before = causal(itn.tensor(f_seq)).numpy()
y_after = causal(itn.tensor(changed)).numpy()
assert np.array_equal(y_before[:, :cut + 1], y_after[:, :cut + 1])
assert not np.allclose(y_before[:, cut + 1:], y_after[:, cut + 1:])
print("causal: A is lower triangular and y[:i+1] ignores f[i+1:]")

# %% [markdown]
# ## What to remember
#
# * One layer is $A\,(V f)$ with $A_{ij} = n(w_j, K_{ij})$ restricted to a support; `kernel_matrix`
#   shows $A$ for any kernel, normalisation and support.
# * Convolution, attention, state-space models and linear attention differ only in the kernel
#   and the normalisation: the pictures above are their matrices.
# * Quadrature weights turn the sum into an integral: with a proper rule, the same operator gives
#   the same answer on any mesh, up to the rule's error.
#
# Next: notebook 3 builds convolution exactly as an integral transform.
