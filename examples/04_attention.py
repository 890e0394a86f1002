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
# # 4. Attention is an integral transform
#
# Softmax attention is the ITNet operator with a dot-product kernel and softmax normalisation. In
# this notebook you rebuild torch's `nn.MultiheadAttention` from its weights (`in_proj_weight`,
# `in_proj_bias`, `out_proj`) and check it against the formula in torch's documentation. You then see
# attention as Nadaraya–Watson kernel smoothing, and use it to fit a noisy curve. Last, you run
# Cordonnier's construction backwards from notebook 03: a convolution written as multi-head attention
# whose scores sharpen with a parameter $\alpha$, with a derived error bound that you plot against
# $\alpha$ beside the measured error.
#
# Prerequisites: notebook 02 (the operator: kernel, normalisation, support) and notebook 03
# (convolution as an integral transform).

# %%
import os
FULL_SIZE = os.environ.get("ITNET_FULL_SIZE", "0") == "1"   # full-size figures (slower)
import numpy as np
import matplotlib.pyplot as plt
import itnet_np as itn
from itnet_np.proofs.attention import mha_as_itnet, mha_from_itnet, scaled_dot_product_attention
from itnet_np.proofs.cordonnier import (conv_as_attention, cordonnier_bound, cordonnier_value_bound,
                                        theta3_minus_one)
from itnet_np.proofs.nadaraya_watson import attention_as_nadaraya_watson
from itnet_np.proofs.reference import conv2d_ref, mha_ref, sdpa_ref
from itnet_np.transform import grid_positions

try:                     # optional: the comparison with torch itself runs only where torch is installed
    import torch
except ImportError:
    torch = None

E, HEADS, L = (16, 4, 12) if FULL_SIZE else (8, 2, 6)      # embedding width, heads, sequence length
N_DATA = 200 if FULL_SIZE else 60                           # noisy samples for the smoother
IMAGE = 16 if FULL_SIZE else 8                              # image side for Cordonnier's construction
N_ALPHA = 40 if FULL_SIZE else 15                           # sharpness values on the error plot
rng = np.random.default_rng(0)
TOL = 1e-10                                                 # float64: exact reductions up to rounding

# %% [markdown]
# ## 1. Multi-head attention from torch's weights
#
# Scaled dot-product attention over queries $q_i$, keys $k_j$ and values $v_j$ is
# $y_i = \sum_j \mathrm{softmax}_j(q_i \cdot k_j / \sqrt d)\, v_j$. That is the operator with the
# kernel $s_{ij} = q_i \cdot k_j / \sqrt d$, softmax normalisation and uniform weights:
# $A_{ij} = e^{s_{ij}} / \sum_l e^{s_{il}}$.
#
# torch's `nn.MultiheadAttention` packs the three projections into
# `in_proj_weight` $= [W_q; W_k; W_v]$ of shape $(3E, E)$ (and `in_proj_bias` likewise). It splits
# each projection into $H$ heads of width $d = E/H$, scales by $1/\sqrt d$ (the *head* width), runs one
# softmax per head, concatenates the heads and applies `out_proj`. Since each head has its own softmax,
#
# $$y_i = \sum_h W_O^h \sum_j A^h_{ij}\,(W_V^h v_j + b_V^h) + b_O ,$$
#
# a sum of $H$ separately normalised transforms: exactly the operator with an $H$-head kernel and
# $W_O$ = `out_proj.weight`. Keys and values are two arrays, but the operator has one feature vector
# per source, so the source is $f_j = [k_j; v_j]$ and the maps pick their halves:
# $W_k' = [W_k \,|\, 0]$, $W_V = [0 \,|\, W_v]$. The construction is in `proofs/attention.py`
# (imported as `itnet_np.proofs.attention`); the reference, written from torch's documentation, in
# `proofs/reference/attention.py`.

# %%
in_proj_weight = rng.standard_normal((3 * E, E)) / np.sqrt(E)     # torch's layouts, as numpy arrays
in_proj_bias = 0.1 * rng.standard_normal(3 * E)
out_proj_weight = rng.standard_normal((E, E)) / np.sqrt(E)
out_proj_bias = 0.1 * rng.standard_normal(E)

query = rng.standard_normal((2, L, E))                            # (B, L, E), batch_first
key = rng.standard_normal((2, L + 3, E))                          # (B, S, E)
value = rng.standard_normal((2, L + 3, E))

mha = mha_as_itnet(in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, num_heads=HEADS)
y = mha(query, key, value).numpy()
ref = mha_ref(query, key, value, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, HEADS)
print("max |ITNet - reference formula| =", np.abs(y - ref).max())
assert np.allclose(y, ref, rtol=0, atol=TOL)

# %%
if torch is None:
    print("torch is not installed: the comparison with torch.nn.MultiheadAttention is skipped")
else:
    layer = torch.nn.MultiheadAttention(E, HEADS, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        layer.in_proj_weight.copy_(torch.from_numpy(in_proj_weight))
        layer.in_proj_bias.copy_(torch.from_numpy(in_proj_bias))
        layer.out_proj.weight.copy_(torch.from_numpy(out_proj_weight))
        layer.out_proj.bias.copy_(torch.from_numpy(out_proj_bias))
        y_torch, _ = layer(torch.from_numpy(query), torch.from_numpy(key), torch.from_numpy(value),
                           need_weights=False)
    print("max |ITNet - torch| =", np.abs(y - y_torch.numpy()).max())
    assert np.allclose(y, y_torch.numpy(), rtol=0, atol=TOL)

# %% [markdown]
# The layer keeps torch's weights and derives the operator's maps from them at every call, so
# backward reaches `in_proj_weight`. Check one directional derivative against a central difference
# of the *reference* formula: for a random unit direction $D$ and a random cotangent $U$,
# $\langle \nabla_W \langle U, y \rangle, D\rangle \approx
#  (\langle U, y(W + \epsilon D)\rangle - \langle U, y(W - \epsilon D)\rangle) / 2\epsilon$.
# With $\epsilon = 10^{-5}$ the central difference is off by $O(\epsilon^2)$ from truncation plus
# about $10^{-16} |\langle U, y\rangle| / \epsilon$ from rounding: near $10^{-10}$ each here. The
# check allows $10^{-8}$.

# %%
W_in = itn.tensor(in_proj_weight, requires_grad=True)
U = rng.standard_normal(ref.shape)
out = mha_as_itnet(W_in, in_proj_bias, out_proj_weight, out_proj_bias, num_heads=HEADS)(query, key, value)
(out * U).sum().backward()

D = rng.standard_normal(in_proj_weight.shape)
D, eps = D / np.linalg.norm(D), 1e-5


def loss_ref(W):
    return np.sum(U * mha_ref(query, key, value, W, in_proj_bias, out_proj_weight, out_proj_bias, HEADS))


central = (loss_ref(in_proj_weight + eps * D) - loss_ref(in_proj_weight - eps * D)) / (2 * eps)
engine = np.sum(W_in.grad.numpy() * D)
print(f"engine {engine:.12f}  central difference {central:.12f}")
assert abs(engine - central) <= 1e-8

# %% [markdown]
# `mha.itnet()` exports the bound operator as a standalone `IntegralTransform`. Its key map is
# $[W_k \,|\, 0]$ and its value map $[0 \,|\, W_v]$, and `mha_from_itnet` reads torch's weights back
# from it, bit for bit.

# %%
transform = mha.itnet()
print(transform)
W_k, W_V = transform.kernel.W_k.numpy(), transform.W_V.numpy()
print("W_k' shape", W_k.shape, "  W_V shape", W_V.shape)
assert not W_k[:, E:].any() and not W_V[:, :E].any()            # the exact zero halves

back = mha_from_itnet(transform)
for name, got, given in zip(("in_proj_weight", "in_proj_bias", "out_proj_weight", "out_proj_bias"),
                            back[:4], (in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias)):
    assert np.array_equal(got, given), name
assert back[4] == HEADS
print("round trip torch weights -> ITNet -> torch weights: exact")

# %% [markdown]
# The operator's kernel matrix $A^h_{ij}$ is the attention matrix of head $h$. For self-attention
# the sources are $[x; x]$.

# %%
x = rng.standard_normal((1, L, E))
A = transform.kernel_matrix(x, source=np.concatenate([x, x], axis=-1)).numpy()[0]   # (H, L, L)
assert np.allclose(A.sum(axis=-1), 1.0, rtol=0, atol=1e-12)      # softmax rows sum to one

fig, axes = plt.subplots(1, HEADS, figsize=(3.2 * HEADS, 3.2))
for h, ax in enumerate(np.atleast_1d(axes)):
    im = ax.imshow(A[h], cmap="viridis", vmin=0, vmax=1)
    ax.set_title(f"head {h}: A^h_ij")
    ax.set_xlabel("key j")
    ax.set_ylabel("query i")
fig.colorbar(im, ax=axes, shrink=0.8)
plt.show()

# %% [markdown]
# ## 2. Attention is a Nadaraya–Watson smoother
#
# A Nadaraya–Watson estimator averages values $v_j$ seen at sites $k_j$, weighted by a kernel of the
# distance to the evaluation point $q$: $\hat m(q) = \sum_j w_j G(q - k_j) v_j / \sum_j w_j G(q - k_j)$.
# Complete the square, with $G_\tau(u) = e^{-\tau |u|^2/2}$:
#
# $$e^{\tau\, q \cdot k} = G_\tau(q - k)\; e^{\tau |q|^2/2}\; e^{\tau |k|^2/2}.$$
#
# The factor in $q$ is the same in the numerator and the denominator of the softmax, so it cancels:
#
# $$\mathrm{softmax}_j(\tau\, q_i \cdot k_j)\, v_j
#   = \frac{\sum_j w_j G_\tau(q_i - k_j)\, v_j}{\sum_j w_j G_\tau(q_i - k_j)},
#   \qquad w_j = e^{\tau |k_j|^2/2}.$$
#
# Softmax attention is a Gaussian smoother: keys are the data sites, queries the evaluation points,
# and the key norms become quadrature weights. In the operator: positions $p_i = q_i$, $p_j = k_j$, a
# kernel of the squared distance, normalisation `sum` and weights $w_j$
# (`proofs/nadaraya_watson.py`). First, the identity, in two dimensions:

# %%
tau = 1.5
q2, k2, v2 = rng.standard_normal((1, 5, 2)), rng.standard_normal((1, 9, 2)), rng.standard_normal((1, 9, 3))
nw = attention_as_nadaraya_watson(dim=2, value_dim=3, tau=tau)
err = np.abs(nw(q2, k2, v2).numpy() - sdpa_ref(q2, k2, v2, scale=tau)).max()
print(f"softmax(tau q.k) v as a Gaussian smoother: max error {err:.1e}")
assert err <= TOL

# %% [markdown]
# Now fit a noisy curve. The bandwidth of $G_\tau$ is $h = 1/\sqrt\tau$. The plain smoother, with
# uniform weights $w_j = 1$, is the layer's operator `nw.itnet()` called with the data sites as source
# positions. In attention terms, uniform weights mean adding the key bias $-\tau |k_j|^2/2$ to the
# scores, which cancels the key norms.
#
# Plain 1-D dot-product attention, without that bias, is no local smoother: its weights
# $e^{\tau k_j^2/2}$ favour the keys far from $0$. For $q > 0$ the score $\tau q k$ grows with $k$, so
# every estimate is pulled toward the largest keys (right panel).

# %%
def truth(t):
    return np.sin(3.0 * t) + 0.5 * t


sites = np.sort(rng.uniform(-1.0, 1.0, N_DATA))
noisy = truth(sites) + 0.25 * rng.standard_normal(N_DATA)
where = np.linspace(-1.0, 1.0, 300)
bandwidths = (0.03, 0.1, 0.3)

Q = where[None, :, None]                                          # (B, n, 1) evaluation points
K, V = sites[None, :, None], noisy[None, :, None]                 # (B, N, 1) sites and values
smooth, raw_attention = {}, {}
for h in bandwidths:
    layer = attention_as_nadaraya_watson(dim=1, value_dim=1, tau=1.0 / h**2)
    smoother = layer.itnet()                                      # uniform weights: plain NW
    fitted = smoother(Q, positions=where[:, None], source=V, source_positions=sites[:, None])
    smooth[h] = fitted.numpy()[0, :, 0]
    raw_attention[h] = layer(Q, K, V).numpy()[0, :, 0]            # softmax(tau q k) v

# Independent checks, per bandwidth: the textbook smoother in numpy, and attention with the key bias.
for h in bandwidths:
    tau_h = 1.0 / h**2
    G = np.exp(-0.5 * tau_h * (where[:, None] - sites[None, :]) ** 2)
    assert np.allclose(smooth[h], G @ noisy / G.sum(axis=1), rtol=0, atol=TOL)
    key_bias = np.broadcast_to(-0.5 * tau_h * sites**2, (where.size, N_DATA))
    with_bias = sdpa_ref(Q, K, V, attn_mask=key_bias, scale=tau_h)[0, :, 0]
    assert np.allclose(smooth[h], with_bias, rtol=0, atol=1e-9)
    mse = np.mean((smooth[h] - truth(where)) ** 2)
    print(f"h = {h:4}: tau = {tau_h:7.1f}, mean squared error to the truth {mse:.4f}")

# %%
fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
for ax in (left, right):
    ax.plot(sites, noisy, ".", color="grey", ms=4, label="noisy samples")
    ax.plot(where, truth(where), "k:", lw=1.5, label="truth")
    ax.set_xlabel("position")
for h in bandwidths:
    left.plot(where, smooth[h], lw=1.8, label=f"h = {h} (tau = {1 / h**2:.0f})")
    right.plot(where, raw_attention[h], lw=1.8, label=f"tau = {1 / h**2:.0f}")
left.set_ylabel("value")
left.set_title("Nadaraya-Watson: softmax(tau q k - tau k^2/2)")
right.set_title("plain 1-D attention: softmax(tau q k)")
left.legend(fontsize=8)
right.legend(fontsize=8)
plt.show()

# %% [markdown]
# Small $h$ follows the noise, large $h$ flattens the curve: the bias–variance trade-off of a kernel
# smoother, with $\tau$ as the knob. As $\tau \to 0$ every query gets the plain mean of the values; as
# $\tau \to \infty$ each query copies its best-scoring key. That hard limit is what the next section
# uses.
#
# ## 3. Cordonnier's construction: a convolution as multi-head attention
#
# Cordonnier, Loukas and Jaggi (ICLR 2020) show that self-attention with $K^2$ heads can express any
# $K \times K$ convolution. Give head $h$ one tap $a_h$ of the conv, with shift
# $\Delta_h = d\, a_h - P$, and a content-free score of the relative position $\delta = k - q$:
#
# $$s^h(q, k) = -\alpha\, |\delta - \Delta_h|^2 + \alpha |\Delta_h|^2,$$
#
# value map $W_V^h = I$ and output map $W_O^h = W[:, :, a_h]$. As the sharpness $\alpha \to \infty$,
# the softmax of head $h$ concentrates on the pixel $k^* = q + \Delta_h$, and the sum of the heads is
# the convolution. The zero padding must be among the keys, or the border rows would renormalise over
# fewer pixels.
#
# *The bound at finite $\alpha$.* For one head and one query, with $u_k = W^h x_k$ and the head's
# softmax $p_k$, the error is $\sum_{k \ne k^*} p_k (u_k - u_{k^*})$, at most $2M(1 - p_{k^*})$ with
# $M = \max_{h,k} |W^h x_k|_\infty$. The scores relative to the winner are
# $p_k / p_{k^*} = e^{-\alpha |k - k^*|^2}$, so $1 - p_{k^*}$ is at most the lattice sum
# $\sum_{n \in \mathbb Z^2 \setminus 0} e^{-\alpha |n|^2} = \theta_3(e^{-\alpha})^2 - 1$. Summing the
# $N_h$ heads:
#
# $$\| \mathrm{MHSA}_\alpha(X) - \mathrm{Conv}(X) \|_\infty
#   \le 2 N_h M \left(\theta_3(e^{-\alpha})^2 - 1\right) \approx 8 N_h M e^{-\alpha}.$$
#
# The construction is in `proofs/cordonnier.py`, the derivation in `docs/theory.md` §6.

# %%
image = rng.standard_normal((1, 2, IMAGE, IMAGE))                 # (B, C_in, H, W)
w_conv = rng.standard_normal((3, 2, 3, 3))                        # (C_out, C_in, 3, 3)
b_conv = rng.standard_normal(3)
conv = conv2d_ref(image, w_conv, b_conv, padding="same")          # the doc-formula reference
as_attention = conv_as_attention(w_conv, b_conv, padding="same")
n_heads = 9
M = cordonnier_value_bound(image, w_conv)

alphas = np.linspace(0.25, 32.0, N_ALPHA)
measured = np.array([np.abs(as_attention(image, alpha=a).numpy() - conv).max() for a in alphas])
bound = cordonnier_bound(alphas, n_heads, M)
for a, e, b in zip(alphas, measured, bound):
    assert e <= b, (a, e, b)
ratio = measured / bound
print(f"M = {M:.2f}; measured error / bound lies in [{ratio.min():.3f}, {ratio.max():.3f}]")

# %%
fig, ax = plt.subplots(figsize=(7, 4.5))
fine = np.linspace(alphas[0], alphas[-1], 200)
ax.semilogy(fine, cordonnier_bound(fine, n_heads, M), "-", lw=2,
            label="bound 2 N_h M (theta_3(e^-alpha)^2 - 1)")
ax.semilogy(fine, 8 * n_heads * M * np.exp(-fine), ":", color="grey", label="8 N_h M e^-alpha (large alpha)")
ax.semilogy(alphas, measured, "o", color="crimson", label="measured max |MHSA - conv|")
ax.set_xlabel("sharpness alpha")
ax.set_ylabel("error (max abs, float64)")
ax.set_title("Conv as attention: measured error under the bound")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# The measured error falls with slope $-1$ in $\alpha$ on this log scale, as the bound says, and
# stays under it: by a factor of about ten at large $\alpha$, by more at small $\alpha$. The bound
# takes the worst case at every step ($|u_k - u_{k^*}| = 2M$ for every key, and
# $1 - p_{k^*} \le R$, which is loose when $R$ is large), so only its slope is tight. Past
# $\alpha \approx 35$ the bound falls below float64 rounding ($\sim 10^{-15}$ here): there the
# comparison measures rounding, not the construction, so the plot stops at $\alpha = 32$.
#
# What a head does: at small $\alpha$ its softmax spreads over the image, at large $\alpha$ it sits on
# one pixel. The picture below shows one head (tap $a = (0, 0)$, shift $\Delta = (-1, -1)$) for a
# query in the middle of the zero-padded image, read from the operator with `kernel_matrix`.

# %%
pad_side = IMAGE + 2                                  # 'same' padding of a 3x3 kernel: 1 on each side
key_positions = grid_positions((pad_side, pad_side), origin=(-1, -1), dtype=np.float64)
centre = np.array([[IMAGE // 2, IMAGE // 2]], dtype=np.float64)
keys = np.zeros((1, pad_side**2, 2))                  # content-free scores: the features do not matter
shown = (0.3, 1.0, 4.0)
target = centre[0] + np.array([-1.0, -1.0])                       # k* = q + Delta
fig, axes = plt.subplots(1, len(shown), figsize=(12, 3.6))
for ax, a in zip(axes, shown):
    heads = as_attention.itnet(a).kernel_matrix(np.zeros((1, 1, 1)), positions=centre, source=keys,
                                                source_positions=key_positions).numpy()[0, :, 0]
    p = heads[0]                                                  # head of tap (0, 0)
    # Independent check: softmax over all keys of -alpha |k - q - Delta|^2.
    s = -a * ((key_positions - centre - np.array([-1.0, -1.0])) ** 2).sum(axis=1)
    assert np.allclose(p, np.exp(s - s.max()) / np.exp(s - s.max()).sum(), rtol=0, atol=1e-12)
    im = ax.imshow(p.reshape(pad_side, pad_side), cmap="magma", vmin=0,
                   extent=(-1.5, IMAGE + 0.5, IMAGE + 0.5, -1.5))
    ax.plot(centre[0, 1], centre[0, 0], "c+", ms=12, mew=2, label="query q")
    ax.plot(target[1], target[0], "o", mfc="none", mec="lime", ms=14, mew=1.5, label="k* = q + Delta")
    ax.set_title(f"alpha = {a}")
    ax.set_xlabel("key column")
    ax.set_ylabel("key row")
    fig.colorbar(im, ax=ax, shrink=0.8)
axes[0].legend(fontsize=7, loc="lower left")
fig.suptitle("Softmax of the head of tap (0, 0) over the zero-padded image")
plt.show()

# %% [markdown]
# ### Exercise 1: attention as a loop
#
# Write single-head softmax attention $y_i = \sum_j \mathrm{softmax}_j(q_i \cdot k_j / \sqrt d)\, v_j$
# as an explicit loop over $i$ and $j$ (subtract the row maximum before `exp`). The check compares it
# with the ITNet construction of torch's `scaled_dot_product_attention`.

# %%
q1, k1, v1 = rng.standard_normal((L, 4)), rng.standard_normal((L + 2, 4)), rng.standard_normal((L + 2, 3))
loop = np.zeros((L, 3))
for i in range(L):
    scores = [q1[i] @ k1[j] / np.sqrt(4) for j in range(len(k1))]
    top = max(scores)
    total = sum(np.exp(s - top) for s in scores)
    for j in range(len(k1)):
        loop[i] += np.exp(scores[j] - top) / total * v1[j]

# %%
# Check: the ITNet layer for torch's SDPA, on (B, H, L, E) = (1, 1, L, 4).
by_itnet = scaled_dot_product_attention(q1[None, None], k1[None, None], v1[None, None]).numpy()[0, 0]
assert np.allclose(loop, by_itnet, rtol=0, atol=TOL)
print("the loop equals the ITNet construction; max difference", np.abs(loop - by_itnet).max())

# %% [markdown]
# ### Exercise 2: the causal mask is a support
#
# With `is_causal=True`, query $i$ may see only keys $j \le i$. In the operator this is the support,
# not a $-\infty$ score: pairs outside it have no term at all. Compute the causal attention matrices of
# `mha` for self-attention on `x` (call `transform.kernel_matrix` with a boolean `mask`, where for the
# operator True means *keep*), and the causal output `mha(x, x, x, is_causal=True)`.

# %%
keep = np.tril(np.ones((L, L), dtype=bool))
A_causal = transform.kernel_matrix(x, source=np.concatenate([x, x], axis=-1), mask=keep).numpy()[0]
y_causal = mha(x, x, x, is_causal=True).numpy()

# %%
# Check: lower triangular, rows sum to one; the output rebuilt from A by torch's recipe
# (values, heads side by side, out_proj); the reference formula; and causality itself.
assert not np.triu(A_causal, k=1).any()
assert np.allclose(A_causal.sum(axis=-1), 1.0, rtol=0, atol=1e-12)
values = x @ in_proj_weight[2 * E:].T + in_proj_bias[2 * E:]                       # (1, L, E)
heads_v = values[0].reshape(L, HEADS, E // HEADS).transpose(1, 0, 2)              # (H, L, d)
rebuilt = np.concatenate(list(A_causal @ heads_v), axis=-1) @ out_proj_weight.T + out_proj_bias
assert np.allclose(y_causal[0], rebuilt, rtol=0, atol=TOL)
assert np.allclose(y_causal, mha_ref(x, x, x, in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias,
                                     HEADS, is_causal=True), rtol=0, atol=TOL)
future = x.copy()
future[:, L // 2:] = rng.standard_normal((1, L - L // 2, E))                      # change the future
y_future = mha(future, future, future, is_causal=True).numpy()
assert np.array_equal(y_future[:, :L // 2], y_causal[:, :L // 2])
print("causal attention matrix is lower triangular; the past does not see the future")

# %% [markdown]
# ### Exercise 3: the bound at a new alpha
#
# Take a $5 \times 5$ convolution (one input channel, two outputs) on a new image, build it as
# attention at $\alpha = 13.7$, and measure its error against the reference conv. The check rebuilds
# the bound from scratch: $M$ by a loop over the taps, and $\theta_3(e^{-\alpha})^2 - 1$ as a lattice
# sum over $n \in [-20, 20]^2$.

# %%
alpha_new = 13.7
image5 = rng.standard_normal((1, 1, IMAGE + 2, IMAGE + 2))
w5 = rng.standard_normal((2, 1, 5, 5))
layer5 = conv_as_attention(w5, padding="same")
error5 = np.abs(layer5(image5, alpha=alpha_new).numpy() - conv2d_ref(image5, w5, padding="same")).max()
bound5 = cordonnier_bound(alpha_new, 25, cordonnier_value_bound(image5, w5))
print(f"alpha = {alpha_new}: error {error5:.2e}, bound {float(bound5):.2e}")

# %%
# Check: M and the lattice sum written out, then the bound.
M5 = max(np.abs(np.einsum("oc,chw->ohw", w5[:, :, a1, a2], image5[0])).max()
         for a1 in range(5) for a2 in range(5))
n = np.arange(-20, 21)
r2 = n[:, None] ** 2 + n[None, :] ** 2                                            # |n|^2 on the lattice
lattice = np.exp(-alpha_new * r2[r2 > 0]).sum()                                   # n != 0: no cancellation
my_bound = 2 * 25 * M5 * lattice
assert np.isclose(my_bound, bound5, rtol=1e-12, atol=0)
t = theta3_minus_one(alpha_new)                                                   # the sum factorises:
assert np.isclose(lattice, t * (2 + t), rtol=1e-12, atol=0)                       # theta_3^2 - 1 = t (2 + t)
assert error5 <= my_bound
print(f"error {error5:.2e} <= bound {my_bound:.2e}")
