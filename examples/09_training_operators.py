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
# # 9. Training an ITNet: an operator at any resolution
#
# An ITNet layer is an integral, $y_i = \sum_j w_j\, K(p_i, p_j, f_i, f_j)\, V f_j$, so a trained
# model is a map between *functions*, not between arrays of a fixed length: the points $p_j$ and
# the quadrature weights $w_j$ are inputs. This notebook trains one on an operator whose answer we
# know exactly, the antiderivative $s(x) = \int_0^x u(t)\,dt$, at 32 points, then asks it for
# answers at 128 points and at 64 unevenly spaced points, without retraining. On uneven points the
# weights decide: give every point the width of its cell and the integral comes out right; give
# them all the same weight and it does not.
#
# Along the way: the library's training pieces (`Trainer`, `DataLoader`, `AdamW`, a warm-up and
# cosine schedule), the relative $L^2$ loss of operator learning, and the two choices that make a
# block pass a function's amplitude through (`source='stream'`, `final_norm=False`).
#
# Prerequisites: notebook 02 (positions, quadrature, normalisation) and 04 (softmax attention).

# %%
import os
FULL_SIZE = os.environ.get("ITNET_FULL_SIZE", "0") == "1"   # more functions and epochs (slower)
import numpy as np
import matplotlib.pyplot as plt
import scipy.integrate
import itnet_np as itn
import itnet_np.nn.functional as F
from itnet_np import models
from itnet_np.autograd.modes import no_grad
from itnet_np.data import DataLoader
from itnet_np.data.operators import fourier_antiderivative, fourier_values, random_fourier
from itnet_np.errors import ShapeError
from itnet_np.train import Trainer, relative_l2

TRAIN, EPOCHS = (2000, 40) if FULL_SIZE else (600, 15)

# %% [markdown]
# ## 1. Functions and their antiderivatives, at any points
#
# A random function is a Fourier series $u(x) = a_0 + \sum_{k=1}^{16} a_k \cos 2\pi k x +
# b_k \sin 2\pi k x$ with coefficients drawn smaller for larger $k$; its antiderivative is exact term
# by term. Because we hold the coefficients, we can sample the same function anywhere: the model
# never sees the coefficients, only values at points.

# %%
def draw(n, x, seed):
    """n functions u and their antiderivatives s at the points x: two (n, len(x)) float32 arrays."""
    a, b = random_fourier(np.random.default_rng(seed), n, 16, 2.0)
    return fourier_values(a, b, x).astype(np.float32), fourier_antiderivative(a, b, x).astype(np.float32)


grid32, grid128 = np.arange(32) / 32, np.arange(128) / 128
u_train, s_train = draw(TRAIN, grid32, seed=0)
u_test, s_test = draw(200, grid128, seed=1)           # test functions at 128 points; every 4th is the 32-grid

fig, ax = plt.subplots(1, 2, figsize=(9, 3))
for i in range(3):
    ax[0].plot(grid128, u_test[i])
    ax[1].plot(grid128, s_test[i])
ax[0].set_title("inputs u"), ax[1].set_title(r"targets $s(x) = \int_0^x u$")
plt.show()

# %% [markdown]
# ## 2. The model and the loss
#
# `itnet_for_functions` puts a pointwise encoder (each point's value and position through one
# linear map) in front of ITNet blocks (softmax-normalised integral transforms with an MLP kernel,
# plus feed-forward layers) and a per-point linear head. Two settings matter for operators:
#
# - `source='stream'`: a pre-norm block integrates $\mathrm{LN}(f_j)$, and layer norm rescales every
#   point, so an amplitude (the mean of $u$, say) cannot pass through linearly. With
#   `source='stream'` the block integrates the residual stream $f_j$ itself (the queries are still
#   normalised): $\sum_j a_{ij} V f_j$ is linear in it.
# - `final_norm=False`: no layer norm before the head, for the same reason.
#
# The loss is the relative $L^2$ error per function, $\|\hat s - s\| / \|s\|$, averaged over the
# batch: it weighs every function alike, whatever its size (the mean squared error lets the large
# ones dominate), and it is the metric we report.

# %%
config = models.ITNetConfig.named("small", source="stream", final_norm=False)
net = models.itnet_for_functions(1, 1, config, rng=0)
print(f"{models.count_parameters(net):,} parameters")

loader = DataLoader((u_train, s_train), 32, shuffle=True, seed=0)
steps = EPOCHS * len(loader)
optimizer = itn.optim.AdamW(net, lr=3e-3, weight_decay=0.01)
schedule = itn.optim.LRScheduler(optimizer, itn.optim.LinearWarmup(steps // 20).then(
    itn.optim.Cosine(steps - steps // 20, eta_min=3e-5)))
trainer = Trainer(net, optimizer, lambda pred, target: F.relative_l2_loss(pred, itn.tensor(target)),
                  seed=0, scheduler=schedule)
points32 = grid32[None, :, None].astype(np.float32)    # (1, N, 1): shared by the batch

losses = []
for epoch in range(EPOCHS):
    loader.set_epoch(epoch)
    losses.append(np.mean([trainer.train_step((u[..., None], points32), s[..., None]) for u, s in loader]))
print(f"training loss: {losses[0]:.3f} after epoch 1, {losses[-1]:.3f} after epoch {EPOCHS}")

fig, ax = plt.subplots(figsize=(5, 3))
ax.semilogy(np.arange(1, EPOCHS + 1), losses)
ax.set_xlabel("epoch"), ax.set_ylabel("relative L2 (training)")
plt.show()

# %% [markdown]
# ## 3. The same model at 4x the resolution
#
# The positions are an input, so we evaluate at 128 points by passing 128 positions. A
# convolutional network trained on the 32-point grid has no such reading: its stencil is measured in
# grid steps, and the library's grid CNN refuses another grid outright.

# %%
def predict(u, x, weights=None):
    """The model's antiderivative of the functions u (n, len(x)) sampled at the points x."""
    with no_grad():
        return net(u[..., None], x[None, :, None].astype(np.float32), weights=weights).numpy()[..., 0]


error32 = relative_l2(predict(u_test[:, ::4], grid32), s_test[:, ::4])
error128 = relative_l2(predict(u_test, grid128), s_test)
print(f"relative L2 error: {error32:.3f} at the training resolution, {error128:.3f} at 4x")

cnn = models.GridCNN(1, 1, 32, width=16, rng=0)
try:
    cnn(u_test[:, :, None])
except ShapeError as exc:
    print("grid CNN at 128 points:", exc)

fig, ax = plt.subplots(figsize=(6, 3))
ax.plot(grid128, s_test[0], "k", label="exact")
ax.plot(grid32, predict(u_test[:1, ::4], grid32)[0], "o", label="ITNet, 32 points")
ax.plot(grid128, predict(u_test[:1], grid128)[0], ".", ms=3, label="ITNet, 128 points")
ax.legend()
plt.show()

# %% [markdown]
# ## 4. Uneven points: the measure decides
#
# Now 64 points drawn at random in $[0, 1)$. Each point stands for the part of the interval closest
# to it, its *cell*: its quadrature weight should be the cell's width, $w_i = (x_{i+1} - x_{i-1})/2$
# (with the ends mirrored at 0 and 1, so that the widths add up to 1). With equal weights instead,
# a cluster of points counts as much more of the interval than it covers. `net(..., weights=w)`
# passes the weights to every block (and only their ratios matter under softmax normalisation).

# %%
def cell_widths(x):
    """Widths of the cells of sorted points x in [0, 1): midpoints between neighbours, ends at 0 and 1."""
    padded = np.concatenate([[-x[0]], x, [2 - x[-1]]])
    return (padded[2:] - padded[:-2]) / 2


uneven = np.sort(np.random.default_rng(5).random(64))
u_uneven, s_uneven = draw(200, uneven, seed=1)
equal = relative_l2(predict(u_uneven, uneven), s_uneven)
cells = relative_l2(predict(u_uneven, uneven, weights=cell_widths(uneven).astype(np.float32)), s_uneven)
print(f"64 uneven points: relative L2 {equal:.3f} with equal weights, {cells:.3f} with cell widths "
      f"(on the uniform grid: {error128:.3f})")
assert cells < equal

fig, ax = plt.subplots(figsize=(5, 3))
ax.bar(["uniform grid\n(128 points)", "uneven,\nequal weights", "uneven,\ncell widths"], [error128, equal, cells])
ax.set_ylabel("relative L2 error")
plt.show()

# %% [markdown]
# ### Exercise 1: cell widths as a quadrature rule
#
# The cell widths are a quadrature rule of their own: $\int_0^1 f \approx \sum_i w_i f(x_i)$. Check
# it on $f(x) = \sin 2\pi x + x^2$ at the 64 uneven points against SciPy's adaptive quadrature, and
# derive the bound to assert: on cell $C_i$ (which contains $x_i$),
# $|\int_{C_i} f - w_i f(x_i)| \le \max|f'| \int_{C_i} |t - x_i|\,dt \le \max|f'|\, w_i^2 / 2$, so the
# error is at most $\max|f'| \sum_i w_i^2 / 2$.

# %%
f = lambda t: np.sin(2 * np.pi * t) + t ** 2          # noqa: E731
weights = cell_widths(uneven)
rule = np.sum(weights * f(uneven))                     # your answer: the rule's value
exact = scipy.integrate.quad(f, 0, 1)[0]
bound = (2 * np.pi + 2) * np.sum(weights ** 2) / 2      # max |f'| <= 2 pi + 2 on [0, 1]

# %%
# Check: the widths tile [0, 1) and the rule's error is within the derived bound.
assert abs(weights.sum() - 1) < 1e-12 and np.all(weights > 0)
print(f"rule {rule:.5f}, scipy {exact:.5f}, error {abs(rule - exact):.1e} <= bound {bound:.1e}")
assert abs(rule - exact) <= bound

# %% [markdown]
# ### Exercise 2: a weight of 2 is a point given twice
#
# Weights are a measure: giving point $j$ the weight 2 must be the same as listing it twice (same
# position, same value). Take five of the uneven points, give the third one weight 2, and compare
# with the unweighted model on the six points where it appears twice, at the five original points.

# %%
x5 = uneven[:5]
u5, _ = draw(3, x5, seed=2)
w5 = np.array([1, 1, 2, 1, 1], np.float32)
weighted = predict(u5, x5, weights=w5)                 # your answer
twice = predict(u5[:, [0, 1, 2, 2, 3, 4]], x5[[0, 1, 2, 2, 3, 4]])[:, [0, 1, 2, 4, 5]]

# %%
# Check: the same outputs at the five points (float32 rounding only), and not the unweighted ones.
print("largest difference:", np.abs(weighted - twice).max())
assert np.allclose(weighted, twice, rtol=1e-4, atol=1e-5)
assert not np.allclose(weighted, predict(u5, x5), rtol=1e-4, atol=1e-5)

# %% [markdown]
# ## What to take away
#
# - A trained ITNet is an operator: positions and quadrature weights are inputs, so one set of
#   parameters answers at 32, 128 or 64 uneven points.
# - The weights are the measure of the integral. On a uniform grid they are equal and drop out of
#   a softmax; on uneven points they must be the cells' widths.
# - For operators, integrate the residual stream (`source='stream'`, no final norm) and train on
#   the relative error. `EXPERIMENTS.md` has the same model on Burgers' equation, against a CNN.
