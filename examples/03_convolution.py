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
# # 3. Convolution is an integral transform
#
# A convolution layer is the ITNet operator with a kernel that is non-zero only on a few lattice
# offsets. In this notebook you build torch's `conv1d` and `conv2d` as ITNet layers in two ways: with a
# table over the offsets (a *stencil*), and with a small ReLU network of the offset whose "hat"
# functions interpolate the weights. You then run the map backwards, reading the weights of a layer
# off its impulse responses, and filter an image both ways, with SciPy as the independent judge.
#
# Prerequisites: notebook 02 (positions, quadrature, normalisation and support of the operator).

# %%
import os
FULL_SIZE = os.environ.get("ITNET_FULL_SIZE", "0") == "1"   # full-size figures (slower)
import numpy as np
import matplotlib.pyplot as plt
import itnet_np as itn
import scipy.ndimage
import scipy.signal
from itnet_np.proofs.conv import conv1d_as_itnet, conv2d_as_itnet, extract_conv_weights
from itnet_np.proofs.reference import conv1d_ref
from itnet_np.transform import IntegralTransform, StencilKernel

IMAGE = 40 if FULL_SIZE else 28          # side of the synthetic image (the dense path forms N^2 pairs)
SIGNAL = 32 if FULL_SIZE else 16         # length of the 1-D signals
rng = np.random.default_rng(0)
TOL = 1e-10                              # float64: every reduction below is exact up to rounding

# %% [markdown]
# ## 1. The stencil construction
#
# torch's `conv1d` is a cross-correlation (no flip). With input $x$ of shape $(B, C_{in}, L)$, weight
# $W$ of shape $(C_{out}, C_{in}, K)$, stride $s$, dilation $d$ and left padding $P$:
#
# $$\mathrm{out}[o, i] = b_o + \sum_{c} \sum_{a=0}^{K-1} W[o, c, a]\, x[c,\; s i + d a - P],$$
#
# with $x = 0$ outside $[0, L)$. Read it as an integral transform. The sources sit on the grid
# $p_j = j$ with features $f_j = x[:, j]$. The queries sit at the *anchors* $q_i = s i - P$. One head
# per tap $a$ has the hard kernel
#
# $$K^a(q_i, p_j) = \mathbf 1[p_j - q_i = d a],$$
#
# uniform weights, no normalisation, value map $W_V^a = I$ and output map $W_O^a = W[:, :, a]$. Head
# $a$ picks exactly one source, $x[:, q_i + d a]$, and the output maps add them up. For one channel the
# heads collapse into a single kernel that depends only on the offset:
# $K(q_i, p_j) = W[p_j - q_i]$ on the lattice offsets, and $0$ elsewhere.
#
# Zero padding costs nothing: a tap that lands outside $[0, L)$ finds no source, so its term is absent.
# The code is in `proofs/conv.py` (imported as `itnet_np.proofs.conv`; read its docstring), the
# kernel in `itnet_np/transform/kernels/stencil.py`.

# %%
w = np.array([[[1.0, -2.0, 0.5]]])                 # (C_out, C_in, K) = (1, 1, 3), torch's layout
x = rng.standard_normal((1, 1, SIGNAL))
stencil = conv1d_as_itnet(w, padding=1)            # kernel="stencil" is the default
y = stencil(x).numpy()

# Independent checks: the doc-formula loop, and numpy's correlate on a zero-padded copy.
xpad = np.pad(x[0, 0], 1)
print("vs conv1d_ref:    ", np.abs(y - conv1d_ref(x, w, padding=1)).max())
print("vs np.correlate:  ", np.abs(y[0, 0] - np.correlate(xpad, w[0, 0], mode="valid")).max())
assert np.allclose(y, conv1d_ref(x, w, padding=1), rtol=0, atol=TOL)
assert np.allclose(y[0, 0], np.correlate(xpad, w[0, 0], mode="valid"), rtol=0, atol=TOL)
print(stencil)

# %% [markdown]
# The layer can show its kernel matrix: `kernel_matrix(x)` returns $A^a_{ij}$, shape
# $(B, T, N_{out}, M)$, one 0/1 matrix per tap. Weighted by the taps, they give the single-channel
# kernel $K(q_i, p_j) = \sum_a W_a A^a_{ij}$: a banded Toeplitz matrix. Row $0$ has anchor $q_0 = -1$,
# so its first tap falls off the left edge; that missing corner entry is the zero padding.

# %%
A = stencil.kernel_matrix(x).numpy()[0]            # (T, N_out, M): 0/1 per tap
K = np.einsum("a,aij->ij", w[0, 0], A)             # sum_a W_a A^a

anchors = np.arange(K.shape[0]) - 1                # q_i = s i - P with s = 1, P = 1
expected = np.zeros_like(K)
for i, q in enumerate(anchors):                    # K[i, j] = W[j - q_i] where 0 <= j - q_i < 3
    for j in range(K.shape[1]):
        if 0 <= j - q < 3:
            expected[i, j] = w[0, 0, j - q]
assert np.array_equal(K, expected)

fig, ax = plt.subplots(figsize=(5.5, 4.5))
lim = np.abs(K).max()
im = ax.imshow(K, cmap="RdBu_r", vmin=-lim, vmax=lim)
ax.set_xlabel("source j (position p_j = j)")
ax.set_ylabel("query i (anchor q_i = i - 1)")
ax.set_title("Conv kernel matrix K(q_i, p_j) = W[p_j - q_i]")
fig.colorbar(im, ax=ax, shrink=0.8)
plt.show()

# %% [markdown]
# Stride spaces the anchors, padding sets their origin, dilation spaces the taps, and groups make
# each $W_O^a$ block-diagonal. Nothing else changes, so a general layer is one line too:

# %%
w3 = rng.standard_normal((4, 3, 3))                # 4 outputs, 6 inputs in 2 groups of 3
b3 = rng.standard_normal(4)
x3 = rng.standard_normal((2, 6, SIGNAL))
options = {"stride": 2, "padding": 2, "dilation": 2, "groups": 2}
general = conv1d_as_itnet(w3, b3, **options)
error = np.abs(general(x3).numpy() - conv1d_ref(x3, w3, b3, **options)).max()
print(f"stride 2, dilation 2, padding 2, 2 groups: max |ITNet - reference| = {error:.1e}")
assert error <= TOL

# %% [markdown]
# The layer keeps torch's weight as its own parameter and rebuilds the operator's maps from it at
# every call, so backward reaches the conv weights and the input: it is a trainable ITNet layer that
# *starts* as the convolution. For the single-channel layer above, with $\tilde x$ the zero-padded
# input, $\partial \sum_i \mathrm{out}_i / \partial W_a = \sum_i \tilde x_{i + a}$ and
# $\partial \sum_i \mathrm{out}_i / \partial x_j = \sum_a W_a\, \mathbf 1[0 \le j + 1 - a < L]$.

# %%
wt = itn.tensor(w, requires_grad=True)
xt = itn.tensor(x, requires_grad=True)
conv1d_as_itnet(wt, padding=1)(xt).sum().backward()
grad_w = [xpad[a:a + SIGNAL].sum() for a in range(3)]
grad_x = [sum(w[0, 0, a] for a in range(3) if 0 <= j + 1 - a < SIGNAL) for j in range(SIGNAL)]
assert np.allclose(wt.grad.numpy()[0, 0], grad_w, rtol=0, atol=TOL)
assert np.allclose(xt.grad.numpy()[0, 0], grad_x, rtol=0, atol=TOL)
print("d(sum out)/dW:", wt.grad.numpy().ravel())

# %% [markdown]
# ## 2. The hat-function MLP construction
#
# The indicator $\mathbf 1[u = c]$ on the integers can also come out of a neural network. One ReLU
# layer builds the *hat*
#
# $$\mathrm{hat}_c(u) = \mathrm{relu}(u - c + 1) - 2\,\mathrm{relu}(u - c) + \mathrm{relu}(u - c - 1)
#   = \max(0,\, 1 - |u - c|),$$
#
# which is $1$ at $u = c$ and $0$ at every other integer. `kernel="mlp"` gives the layer an `MLPKernel`
# on the offset with three hidden units and one output head per tap (built by `hat_kernel` in
# `proofs/conv.py`). On the integer grid it is the stencil exactly. Between the integers it
# is a continuous function: weighted by the taps, $K(o) = \sum_a W_a\, \mathrm{hat}_{a}(o)$ is the
# piecewise-linear interpolation of the weights, and zero one step beyond the outer taps.
#
# Note the MLP's input convention: it sees `dp` $= q_i - p_j$, so the offset is $o = -$`dp`.

# %%
hat = conv1d_as_itnet(w, padding=1, kernel="mlp")
print(hat.transform.kernel)
# Three hidden units per tap a, all reading u = dp, with biases 1 - c, -c, -1 - c at the centre
# c = -o_a; W2 combines them with (1, -2, 1) into head a.
print("W1 (hidden, 1):", hat.transform.kernel.W1.numpy().ravel())
print("b1:            ", hat.transform.kernel.b1.numpy())
print("W2 (heads, hidden):\n", hat.transform.kernel.W2.numpy() + 0.0)      # + 0.0 prints -0 as 0
assert np.abs(hat(x).numpy() - conv1d_ref(x, w, padding=1)).max() <= TOL

# %% [markdown]
# Evaluate the learned kernel at continuous offsets: put one source at $p = 0$ and queries at
# $q = -o$, so that $p - q = o$, and ask the layer's transform for its kernel matrix.

# %%
offsets = np.linspace(-2.0, 4.0, 601)                # o = p_j - q_i
heads = hat.transform.kernel_matrix(
    np.zeros((1, offsets.size, 1)), positions=-offsets[:, None],     # queries (features unused)
    source=np.zeros((1, 1, 1)), source_positions=np.zeros((1, 1)),   # one source at p = 0
).numpy()[0, :, :, 0]                                                # (T, n): head a at each offset
K_cont = w[0, 0] @ heads                                             # sum_a W_a hat_a(o)

# Independent check: numpy's linear interpolation through (o, W[o]), zero at o = -1 and o = 3.
taps = np.arange(3)
assert np.allclose(K_cont, np.interp(offsets, [-1, 0, 1, 2, 3], [0, *w[0, 0], 0]), rtol=0, atol=1e-12)

fig, ax = plt.subplots(figsize=(7, 3.8))
for a in taps:
    ax.plot(offsets, w[0, 0, a] * heads[a], "--", lw=1, label=f"W[{a}] hat_{a}(o)")
ax.plot(offsets, K_cont, "k", lw=2, label="K(o) = sum_a W[a] hat_a(o)")
ax.plot(taps, w[0, 0], "o", color="crimson", ms=8, label="conv taps W[a]")
ax.axhline(0, color="grey", lw=0.5)
ax.set_xlabel("offset o = p_j - q_i")
ax.set_ylabel("kernel value")
ax.set_title("The hat-MLP kernel interpolates the conv weights")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# In 2-D the network needs one integer code of the offset, $u = (2w+1)\,o_1 + o_2$. That code is
# injective only on the box $|o|_\infty \le w$ (no integer code is injective on all of
# $\mathbb Z^2$), so the 2-D hat layer restricts its support to that window. The window holds every
# tap, and nothing the convolution needs is cut.
#
# ## 3. Weights back from a layer: the impulse response
#
# A conv layer is affine in its input, so probes read it exactly. A zero input returns the bias $b$
# at every anchor. A unit impulse in channel $c$, placed where tap $a$ of some anchor looks, returns
# $W[o, c, a] + b_o$ at that anchor. `extract_conv_weights` sends one zero probe plus one impulse per
# (channel, tap), all as one batch, and subtracts. It only calls the layer, so it works on any
# conv-like callable, trained or not.

# %%
w4 = rng.standard_normal((5, 3, 3, 2))             # conv2d weight (C_out, C_in, kh, kw)
b4 = rng.standard_normal(5)
layer4 = conv2d_as_itnet(w4, b4, stride=(2, 1), padding=1, dilation=(1, 2), kernel="mlp")
w_back, b_back = extract_conv_weights(layer4, in_channels=3, kernel_size=(3, 2))
print("max |W - extracted|:", np.abs(w_back - w4).max(), "  max |b - extracted|:", np.abs(b_back - b4).max())
assert w_back.shape == w4.shape and np.allclose(w_back, w4, rtol=0, atol=1e-12)
assert np.allclose(b_back, b4, rtol=0, atol=1e-12)

# %% [markdown]
# ## 4. An image filtered both ways
#
# A synthetic image (a smooth ramp, a disc and a square) goes through three classic $3 \times 3$
# filters at once, stacked as the output channels of one `conv2d` weight: Sobel in $x$, Sobel in $y$,
# and a binomial blur (the $3 \times 3$ Gaussian). Both ITNet constructions compute it. SciPy's
# `signal.correlate2d` and `ndimage.correlate` with zero boundaries are the independent check.

# %%
yy, xx = np.mgrid[0:IMAGE, 0:IMAGE] / IMAGE
image = 0.3 * xx                                                     # a ramp
image += ((xx - 0.32) ** 2 + (yy - 0.35) ** 2 < 0.18 ** 2) * 1.0      # a disc
image += ((abs(xx - 0.7) < 0.14) & (abs(yy - 0.68) < 0.14)) * 0.6    # a square

sobel_x = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
gauss = np.outer([1.0, 2.0, 1.0], [1.0, 2.0, 1.0]) / 16.0
filters = {"Sobel x": sobel_x, "Sobel y": sobel_x.T, "Gaussian blur": gauss}
weight = np.stack(list(filters.values()))[:, None]                  # (3, 1, 3, 3)

batch = image[None, None]                                           # (B, C_in, H, W) = (1, 1, H, W)
by_stencil = conv2d_as_itnet(weight, padding=1)(batch).numpy()[0]    # (3, H, W)
by_hat = conv2d_as_itnet(weight, padding=1, kernel="mlp")(batch).numpy()[0]
by_scipy = np.stack([scipy.signal.correlate2d(image, k, mode="same", boundary="fill")
                     for k in filters.values()])
by_ndimage = np.stack([scipy.ndimage.correlate(image, k, mode="constant", cval=0.0)
                       for k in filters.values()])

for name, out in (("stencil", by_stencil), ("hat MLP", by_hat)):
    for ref_name, ref in (("signal.correlate2d", by_scipy), ("ndimage.correlate", by_ndimage)):
        err = np.abs(out - ref).max()
        print(f"ITNet {name:8s} vs scipy {ref_name:19s}: {err:.1e}")
        assert err <= TOL

# %%
fig, ax = plt.subplots(figsize=(3.5, 3.5))
ax.imshow(image, cmap="gray")
ax.set_title("The input image")
ax.set_xlabel("column")
ax.set_ylabel("row")
plt.show()

fig, axes = plt.subplots(len(filters), 4, figsize=(11, 8.5))
for row, (name, k) in enumerate(filters.items()):
    ax = axes[row, 0]
    ax.imshow(k, cmap="RdBu_r", vmin=-np.abs(k).max(), vmax=np.abs(k).max())
    for (r, c), v in np.ndenumerate(k):
        ax.text(c, r, f"{v:g}", ha="center", va="center", fontsize=9)
    ax.set_title(f"{name}: the 3x3 taps")
    columns = (("ITNet, stencil kernel", by_stencil), ("ITNet, hat-MLP kernel", by_hat),
               ("scipy.signal.correlate2d", by_scipy))
    for col, (title, out) in enumerate(columns, start=1):
        axes[row, col].imshow(out[row], cmap="gray")
        axes[row, col].set_title(title, fontsize=10)
for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
for row, name in enumerate(filters):
    axes[row, 0].set_ylabel(name)
fig.suptitle(f"One {IMAGE}x{IMAGE} image, three filters, computed three ways")
fig.tight_layout()
plt.show()

# %% [markdown]
# A word on cost: these layers run the operator's dense reference path, which forms every
# (query, source) pair, $N M = (28 \cdot 28)^2 \approx 6 \cdot 10^5$ per tap here, and then keeps only
# nine of each row. That is the price of a general evaluator; notebook 07 shows the fused paths that
# use the support instead of forming it.
#
# ### Exercise 1: a dilated 1-D convolution
#
# Build a 1-D conv with 2 input channels, 3 output channels, kernel size 3, dilation 3, stride 1,
# padding 2 and a bias as an ITNet layer, and run it on a random signal. The check writes the
# published formula as an explicit loop.

# %%
wd = rng.standard_normal((3, 2, 3))
bd = rng.standard_normal(3)
xd = rng.standard_normal((1, 2, SIGNAL))
dilated = conv1d_as_itnet(wd, bd, padding=2, dilation=3)
yd = dilated(xd).numpy()

# %%
# Check: out[o, i] = b[o] + sum_c sum_a W[o, c, a] x[c, i + 3 a - 2], zero outside [0, L).
L = xd.shape[-1]
L_out = L + 2 * 2 - 3 * (3 - 1)
loop = np.zeros((3, L_out))
for o in range(3):
    for i in range(L_out):
        loop[o, i] = bd[o]
        for c in range(2):
            for a in range(3):
                t = i + 3 * a - 2
                if 0 <= t < L:
                    loop[o, i] += wd[o, c, a] * xd[0, c, t]
assert yd.shape == (1, 3, L_out)
assert np.allclose(yd[0], loop, rtol=0, atol=TOL)
print("dilated conv matches the explicit loop; max error", np.abs(yd[0] - loop).max())

# %% [markdown]
# ### Exercise 2: extract the weights of a given layer
#
# Two stacked 3-tap layers (no padding) are again one convolution, now with 5 taps. Recover its 5
# weights and its bias from `two_layers` by impulse response. The check derives them by hand:
# correlating with $w_1$ and then with $w_2$ is correlating with the full convolution
# $c = w_1 * w_2$ (`np.convolve`), and the bias is $b_2 + b_1 \sum_a w_2[a]$.

# %%
w1, b1 = rng.standard_normal((1, 1, 3)), rng.standard_normal(1)
w2, b2 = rng.standard_normal((1, 1, 3)), rng.standard_normal(1)
first, second = conv1d_as_itnet(w1, b1), conv1d_as_itnet(w2, b2)


def two_layers(x):
    """The given layer: second(first(x))."""
    return second(first(x))


w_found, b_found = extract_conv_weights(two_layers, in_channels=1, kernel_size=5, padding=0)
print("5 taps:", w_found.ravel(), " bias:", b_found)

# %%
# Check: against the convolution of the two kernels, and the composed output against scipy.
assert np.allclose(w_found.ravel(), np.convolve(w1.ravel(), w2.ravel()), rtol=0, atol=1e-12)
assert np.allclose(b_found, b2 + b1 * w2.sum(), rtol=0, atol=1e-12)
xs = rng.standard_normal((1, 1, SIGNAL))
direct = scipy.signal.correlate(xs[0, 0], w_found.ravel(), mode="valid") + b_found
assert np.allclose(two_layers(xs).numpy()[0, 0], direct, rtol=0, atol=TOL)
print("two stacked 3-tap layers = one 5-tap layer")

# %% [markdown]
# ### Exercise 3: shift the grid, shift the output
#
# A stencil kernel sees only the offset $p_j - p_i$. So (a) moving every position by the same
# amount, queries and sources alike, changes nothing; and (b) shifting the signal by $m$ samples
# shifts the output by $m$ (translation equivariance). Build a bare `IntegralTransform` with a
# `StencilKernel` over the offsets $\{-1, 0, 1\}$ and the table $(1/4, 1/2, 1/4)$, with identity value
# and output maps and no bias. Evaluate it on the grid $p = 0, 1, \dots$ and on the grid moved by
# $7.5$, and on the signal shifted by $m = 3$.

# %%
blur = IntegralTransform(1, 1, StencilKernel([-1, 0, 1], table=[[0.25, 0.5, 0.25]], dtype=np.float64),
                         bias=False, dtype=np.float64)
blur.W_V.data[...] = 1.0
blur.W_O.data[...] = 1.0

signal = rng.standard_normal((1, SIGNAL, 1))                   # (B, N, C): features on the grid
grid = np.arange(SIGNAL, dtype=np.float64)[:, None]             # p_j = j, shape (N, 1)
on_grid = blur(signal, positions=grid).numpy()[0, :, 0]
on_moved = blur(signal, positions=grid + 7.5).numpy()[0, :, 0]

m = 3
shifted = np.concatenate([np.zeros((1, m, 1)), signal[:, :-m]], axis=1)   # x'[j] = x[j - m]
on_shifted = blur(shifted, positions=grid).numpy()[0, :, 0]

# %%
# Check: (a) the same output on the moved grid; (b) the output shifted by m, away from the edges
# (where the zero fill and the end of the signal differ); and the operator itself against scipy.
assert np.allclose(on_moved, on_grid, rtol=0, atol=TOL)
assert np.allclose(on_shifted[m + 1:-1], on_grid[1:-m - 1], rtol=0, atol=TOL)   # away from both edges
reference = scipy.ndimage.correlate1d(signal[0, :, 0], [0.25, 0.5, 0.25], mode="constant")
assert np.allclose(on_grid, reference, rtol=0, atol=TOL)
print("translation invariance of the kernel and equivariance of the layer hold")
