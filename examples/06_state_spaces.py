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
# # 6. State spaces and selectivity
#
# A linear state-space model (SSM) is a recurrence whose state update is linear, so it unrolls into
# an explicit causal integral: no fixed point to solve, just a kernel. In this notebook you see that
# S4D's kernel is a sum of decaying exponentials of the lag $t - s$, that Mamba's selective scan is the
# same exponential read on a *data-dependent clock* $\tau_t = \sum_{r \le t} \Delta_r$, and that the
# matrix of any SSM (Mamba-2's SSD in particular) is *semiseparable*: every block below the diagonal
# has rank at most the state size. Prerequisites: notebook 02 (the integral transform) and notebook 05
# (recurrences as integral equations).

# %%
import os
FULL_SIZE = os.environ.get("ITNET_FULL_SIZE", "0") == "1"   # full-size figures (slower)
import numpy as np
import matplotlib.pyplot as plt
import itnet_np as itn
from itnet_np.proofs import mamba, ssm
from itnet_np.proofs import reference as R

L = 256 if FULL_SIZE else 64        # sequence length
rng = np.random.default_rng(0)      # float64 throughout: we compare with references to ~1e-10

# %% [markdown]
# ## S4D: a decay kernel of the lag
#
# A continuous SSM $x'(t) = A x(t) + B u(t)$, $y = C x + D u$ with diagonal $A$ is discretised with a
# step $\Delta$ by the zero-order hold (ZOH: the input is held constant over each step):
#
# $$ \bar A = e^{\Delta A}, \qquad \bar B = \frac{e^{\Delta A} - 1}{A} B \;(= \Delta B \text{ at } A = 0),
#    \qquad x_t = \bar A x_{t-1} + \bar B u_t . $$
#
# Started from $x_{-1} = 0$, the recurrence unrolls to a causal convolution:
#
# $$ y_t = \sum_{s \le t} K(t - s)\, u_s + D u_t, \qquad
#    K(k) = C \bar A^k \bar B = C\, e^{A \Delta k}\, \bar B . $$
#
# This is the ITNet operator with a kernel of the lag $k = p_t - p_s$ on the grid, causal support,
# uniform weights, no normalisation and the skip map $\mathrm{diag}(D)$. The kernel is a
# `DecayKernel` (`itnet_np/transform/kernels/decay.py`): one decaying exponential per real
# eigenvalue, and $2\,\mathrm{Re}(g \mu^k)$, a damped cosine, per complex eigenvalue $\mu$ and its
# conjugate (S4D keeps one of each pair and doubles the real part: `conj_pairs=True`).
#
# Below, four channels with one eigenvalue each. `s4d_as_itnet` (`proofs/ssm.py`) builds the layer
# from S4D's weights; `kernel_matrix(L)` returns the $L \times L$ matrix of each channel, whose first
# column is $K(0), \dots, K(L-1)$.

# %%
eigenvalues = np.array([-0.1, -0.5, -0.1 + 0.8j, -0.05 + 1.5j])   # continuous-time A, one per channel
A4 = eigenvalues[:, None].astype(complex)                          # (H, N) = (4, 1)
B4, C4 = np.ones((4, 1), complex), np.full((4, 1), 0.5 + 0j)      # 2 Re(0.5 ...) = Re(...)
D4, dt = rng.standard_normal(4), 0.5
s4d = ssm.s4d_as_itnet(A4, B4, C4, D4, dt=dt, conj_pairs=True)
M4 = s4d.kernel_matrix(L).numpy()                                  # (H, L, L)
K4 = M4[:, :, 0]                                                   # K(k), k = 0 .. L-1

fig, ax = plt.subplots(figsize=(7, 4))
for h, a in enumerate(eigenvalues):
    ax.plot(np.arange(L), K4[h], marker=".", ms=3, label=f"A = {a:g}")
ax.axhline(0, color="grey", lw=0.5)
ax.set_xlabel("lag k = t - s")
ax.set_ylabel(r"$K(k) = \mathrm{Re}(e^{A \Delta k} \bar B)$")
ax.set_title(f"S4D kernels (ZOH, $\\Delta$ = {dt})")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# Three independent checks: the matrix is Toeplitz (it depends on $t - s$ only) and causal; its first
# column is the kernel computed by a loop over powers $\bar A^k$ (`s4d_kernel_ref`); and the layer's
# output equals the recurrence run step by step (`s4d_recurrent_ref`) and an FFT convolution
# (`fft_causal_conv_ref`), all in `proofs/reference/ssm.py`.

# %%
t_idx, s_idx = np.indices((L, L))
lag = np.where(t_idx >= s_idx, t_idx - s_idx, 0)
assert np.array_equal(M4[:, t_idx >= s_idx], K4[:, lag][:, t_idx >= s_idx])    # Toeplitz below the diagonal
assert np.all(M4[:, t_idx < s_idx] == 0)                                        # causal
K_ref = R.s4d_kernel_ref(A4, B4, C4, dt, L, conj_pairs=True)
print("kernel vs loop over powers:", np.abs(K4 - K_ref).max())
assert np.allclose(K4, K_ref, rtol=0, atol=1e-12)

u4 = rng.standard_normal((2, 4, L))                                # (batch, channels, length)
y4 = s4d(u4).numpy()
y_rec = R.s4d_recurrent_ref(u4, A4, B4, C4, D4, dt, conj_pairs=True)
y_fft = R.fft_causal_conv_ref(u4, K_ref, D4)
print("ITNet vs recurrence:", np.abs(y4 - y_rec).max(), " vs FFT convolution:", np.abs(y4 - y_fft).max())
assert np.allclose(y4, y_rec, rtol=0, atol=1e-10) and np.allclose(y4, y_fft, rtol=0, atol=1e-10)

# %% [markdown]
# ## Mamba: the same decay on a data-dependent clock
#
# Mamba's selective scan (S6) lets the step depend on the input: per time $t$ and channel a step
# $\Delta_t = \mathrm{softplus}(\cdot)$ computed from the input, and input and output vectors $B_t$,
# $C_t$. Its recursion (ZOH for $A$, Euler for $B$, as in Mamba's code):
#
# $$ x_t = e^{\Delta_t A} x_{t-1} + \Delta_t B_t u_t, \qquad y_t = C_t \cdot x_t . $$
#
# Define the clock $\tau_t = \sum_{r \le t} \Delta_r$. The product of the decays from $s+1$ to $t$ is
# $e^{A(\tau_t - \tau_s)}$, so
#
# $$ y_t = \sum_{s \le t} \Big[\sum_n C_{tn} B_{sn}\, e^{A_n (\tau_t - \tau_s)}\Big]\, \Delta_s\, u_s . $$
#
# It is S4D's exponential kernel read in the warped time $\tau$, and $\Delta_s$ is exactly a
# quadrature weight $w_s$: the scan is a Riemann sum of $\int C(t) e^{A(\tau(t) - \tau(s))} B(s) u(s)\,
# d\tau(s)$. When $\Delta$ is large the clock jumps: the state forgets and the current input gets a
# large weight. When $\Delta \approx 0$ the clock stops: the state is held and the input is ignored.
# That is selectivity. The kernel is `SelectiveKernel` (`itnet_np/transform/kernels/selective.py`);
# `selective_scan_as_itnet` and `selective_scan_matrix` are in `proofs/mamba.py`.
#
# First a scalar example ($N = 1$, $B = C = 1$, $A = -1$) where the step grows with the input.

# %%
t_axis = np.arange(L)
u1 = np.sin(2 * np.pi * t_axis / 40) + 0.3 * rng.standard_normal(L)     # one channel
delta_raw = 3.0 * u1 - 1.0                                               # the step before softplus
delta1 = R.softplus_torch(delta_raw)                                     # Delta_t > 0
tau = np.cumsum(delta1)                                                  # the clock
A1, ones = np.array([[-1.0]]), np.ones((1, 1, L))
M1 = mamba.selective_scan_matrix(delta_raw[None, None], A1, ones, ones, delta_softplus=True).numpy()[0, 0]

t_row = L - 1                                                            # one output position
s_cols = np.arange(t_row + 1)
fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
axes[0, 0].plot(t_axis, u1, label="input $u_t$")
axes[0, 0].plot(t_axis, delta1, label=r"step $\Delta_t$ = softplus(3u - 1)")
axes[0, 0].set_xlabel("position t")
axes[0, 0].set_title("input and step")
axes[0, 0].legend()
axes[0, 1].plot(t_axis, tau, label=r"$\tau_t = \sum_{r \leq t} \Delta_r$")
axes[0, 1].plot(t_axis, t_axis * delta1.mean(), "--", label="uniform clock, same mean step")
axes[0, 1].set_xlabel("position t")
axes[0, 1].set_ylabel(r"clock $\tau_t$")
axes[0, 1].set_title("the data-dependent clock")
axes[0, 1].legend()
with np.errstate(divide="ignore"):
    im = axes[1, 0].imshow(np.log10(M1), cmap="viridis", vmin=-12, vmax=0.5)
axes[1, 0].set_xlabel("source position s")
axes[1, 0].set_ylabel("query position t")
axes[1, 0].set_title(r"$\log_{10} M_{ts}$, $M$ = selective_scan_matrix")
fig.colorbar(im, ax=axes[1, 0])
gap = tau[t_row] - tau[s_cols]
axes[1, 1].semilogy(t_row - s_cols, M1[t_row, s_cols] / delta1[s_cols], ".", label=r"against the lag $t - s$")
axes[1, 1].semilogy(gap, M1[t_row, s_cols] / delta1[s_cols], "o", mfc="none",
                    label=r"against $\tau_t - \tau_s$")
axes[1, 1].semilogy(np.sort(gap), np.exp(-np.sort(gap)), "k-", lw=0.8, label=r"$e^{A(\tau_t - \tau_s)}$")
axes[1, 1].set_xlabel("distance into the past")
axes[1, 1].set_ylabel(r"$M_{ts} / \Delta_s$")
axes[1, 1].set_title(f"row t = {t_row}: ragged in positions, exponential in clock time")
axes[1, 1].set_xlim(0, 20)
axes[1, 1].set_ylim(1e-9, 2)
axes[1, 1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# The bands in the heat map are the bursts of the input: across a burst the clock runs fast and the
# memory is wiped. Read in positions, a row of $M$ decays irregularly; read in clock time, every point
# falls on one exponential. With a *constant* step the clock is uniform and $M$ is Toeplitz again:
# S4D is the selective scan with a constant $\Delta$ (with Euler's $\bar B = \Delta B$ instead of ZOH's).
#
# Now the general case against Mamba's reference (`selective_scan_ref`, a loop over time transcribed
# from Mamba's code): several channels, state size $N = 4$, input-dependent $B_t$, $C_t$, a bias on
# the step, the skip $D$ and the gate $z$.

# %%
def toeplitz(M):
    """Is M constant along each diagonal?"""
    diagonals = (np.diagonal(M, -k) for k in range(len(M)))
    return all(np.allclose(d, d[0], rtol=1e-12, atol=0) for d in diagonals)


M_const = mamba.selective_scan_matrix(np.full((1, 1, L), 0.3), A1, ones, ones).numpy()[0, 0]
assert toeplitz(M_const) and not toeplitz(M1)

n_batch, dim, N = 2, 3, 4
scan = {"u": rng.standard_normal((n_batch, dim, L)), "delta": rng.standard_normal((n_batch, dim, L)),
        "A": -rng.uniform(0.1, 2.0, (dim, N)), "B": rng.standard_normal((n_batch, N, L)),
        "C": rng.standard_normal((n_batch, N, L)), "D": rng.standard_normal(dim),
        "z": rng.standard_normal((n_batch, dim, L)), "delta_bias": 0.5 * rng.standard_normal(dim),
        "delta_softplus": True}
out = mamba.selective_scan_as_itnet(**scan).numpy()
out_ref = R.selective_scan_ref(**scan)
print("selective scan, ITNet vs Mamba's recursion:", np.abs(out - out_ref).max())
assert np.allclose(out, out_ref, rtol=1e-10, atol=1e-10)

# %% [markdown]
# ## Mamba-2 (SSD) and semiseparable matrices
#
# For any time-varying SSM $h_t = A_t h_{t-1} + B_t x_t$, $y_t = C_t^\top h_t$ the whole sequence map
# is a lower-triangular matrix, $y = M x$ with
#
# $$ M_{ts} = C_t^\top A_t A_{t-1} \cdots A_{s+1} B_s \quad (t \ge s). $$
#
# Mamba-2's state-space duality (SSD) takes a scalar decay per head, $A_t = a_t I$, and then
# $M = L \circ C B^\top$ with the 1-semiseparable mask $L_{ts} = a_{s+1} \cdots a_t = \exp\sum_{r=s+1}^{t}
# \log a_r$: a causal "attention" matrix. In ITNet it is the selective kernel with state decay $-1$ and
# the clock increments $-\log a_r$, unit weights (`ssd_as_itnet`, `ssd_matrix`).
#
# **Why the rank is small.** Cut $M$ at any $k$ and take the block of rows $t \ge k$ and columns
# $s \le k$. Every entry factors through the state at time $k$:
# $M_{ts} = \big(C_t^\top A_t \cdots A_{k+1}\big)\big(A_k \cdots A_{s+1} B_s\big)$, a product of an
# $(L - k) \times N$ and an $N \times (k + 1)$ matrix. So **every block $M[k{:}, {:}k{+}1]$ has rank at
# most $N$**, the state size, however long the sequence. A matrix with this property is called
# $N$-semiseparable. We check it with numpy's SVD.

# %%
N_ssd, P, heads = 3, 2, 1
X = rng.standard_normal((1, L, heads, P))
A_log = -rng.uniform(0.02, 0.3, (1, L, heads))                         # log a_t < 0: decays
B_ssd, C_ssd = rng.standard_normal((2, 1, L, heads, N_ssd))
Y = mamba.ssd_as_itnet(X, A_log, B_ssd, C_ssd).numpy()
M_ssd = mamba.ssd_matrix(A_log, B_ssd, C_ssd).numpy()[0, 0]            # (L, L), head 0
print("SSD: vs quadratic reference", np.abs(Y - R.ssd_ref(X, A_log, B_ssd, C_ssd)).max(),
      " vs recurrence", np.abs(Y - R.ssd_recurrent_ref(X, A_log, B_ssd, C_ssd)).max())
assert np.allclose(Y, R.ssd_recurrent_ref(X, A_log, B_ssd, C_ssd), rtol=1e-10, atol=1e-10)
assert np.allclose(M_ssd @ X[0, :, 0], Y[0, :, 0], rtol=1e-10, atol=1e-10)        # y = M x


def block_ranks(M, rtol=1e-10):
    """Ranks of the blocks M[k:, :k+1], k = 0..L-1: singular values above rtol * ||M||_2."""
    scale = np.linalg.svd(M, compute_uv=False)[0]
    return np.array([np.sum(np.linalg.svd(M[k:, :k + 1], compute_uv=False) > rtol * scale)
                     for k in range(len(M))])


random_lower = np.tril(rng.standard_normal((L, L)))                    # lower-triangular, not an SSM
ranks_ssd, ranks_random = block_ranks(M_ssd), block_ranks(random_lower)
assert ranks_ssd.max() <= N_ssd                                         # the semiseparable bound
assert ranks_random.max() > N_ssd                                       # ... which a generic matrix breaks

fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
lim = np.abs(M_ssd).max()
im = axes[0].imshow(M_ssd, cmap="RdBu_r", vmin=-lim, vmax=lim)
axes[0].set_xlabel("source position s")
axes[0].set_ylabel("query position t")
axes[0].set_title(r"SSD matrix $M = L \circ C B^\top$")
fig.colorbar(im, ax=axes[0])
for k in (L // 4, L // 2, 3 * L // 4):
    sv = np.linalg.svd(M_ssd[k:, :k + 1], compute_uv=False)
    axes[1].semilogy(np.arange(1, len(sv) + 1), sv, marker="o", ms=4, label=f"block M[{k}:, :{k + 1}]")
axes[1].axvline(N_ssd + 0.5, color="grey", ls=":", label=f"state size N = {N_ssd}")
axes[1].set_xlim(0.5, 12.5)
axes[1].set_xlabel("index of the singular value")
axes[1].set_ylabel("singular value")
axes[1].set_title("singular values of blocks below the diagonal")
axes[1].legend(fontsize=8)
axes[2].plot(ranks_random, label="random lower-triangular")
axes[2].plot(ranks_ssd, label="SSD matrix")
axes[2].axhline(N_ssd, color="grey", ls=":", label="N")
axes[2].set_xlabel("cut k")
axes[2].set_ylabel("rank of M[k:, :k+1]")
axes[2].set_title("block ranks")
axes[2].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# After $N$ singular values the spectrum falls off a cliff to rounding level. The same holds for S4D
# with $N$ complex modes (rank at most $2N$, its real state size) and for the selective scan. This is
# what makes SSMs fast: the matrix is never formed, the state carries the factorisation.
# `ssm.semiseparable_ranks(M)` computes the same ranks.

# %%
assert np.array_equal(ssm.semiseparable_ranks(M_ssd), ranks_ssd)
assert ssm.semiseparable_ranks(M4).max() <= 2                           # S4D: one complex mode per channel

# %% [markdown]
# ### Exercise 1: ZOH by hand
#
# Discretise the one-state SSM $x' = a x + b u$, $y = c x$ with $a = -0.7$, $b = 1.3$, $c = 0.8$ and
# step $\Delta = 0.25$ by ZOH: $\bar a = e^{\Delta a}$, $\bar b = (\bar a - 1)/a \cdot b$. Run the
# recurrence $x_t = \bar a x_{t-1} + \bar b u_t$, $y_t = c x_t$ yourself. Then do it again with Euler's
# $\bar b = \Delta b$ (Mamba's choice for $B$). The check compares the first with `s4d_as_itnet` and
# the second with `selective_scan_as_itnet` at a constant step.

# %%
a, b, c, step = -0.7, 1.3, 0.8, 0.25
u_1 = rng.standard_normal(L)


def scalar_ssm(u, a_bar, b_bar, c):
    """y_t = c x_t with x_t = a_bar x_{t-1} + b_bar u_t, x_{-1} = 0."""
    x, y = 0.0, np.zeros(len(u))
    for t in range(len(u)):
        x = a_bar * x + b_bar * u[t]
        y[t] = c * x
    return y


a_bar = np.exp(step * a)
y_zoh = scalar_ssm(u_1, a_bar, (a_bar - 1.0) / a * b, c)
y_euler = scalar_ssm(u_1, a_bar, step * b, c)

# %%
# Check
y_s4d = ssm.s4d_as_itnet(np.array([[a]]), np.array([[b]]), np.array([[c]]), dt=step)(u_1[None, None])
y_s6 = mamba.selective_scan_as_itnet(u_1[None, None], np.full((1, 1, L), step), np.array([[a]]),
                                     np.array([[b]]), np.array([[c]]))
assert np.allclose(y_s4d.numpy()[0, 0], y_zoh, rtol=1e-12, atol=1e-12)
assert np.allclose(y_s6.numpy()[0, 0], y_euler, rtol=1e-12, atol=1e-12)
assert np.abs(y_zoh - y_euler).max() > 1e-3          # the two rules really differ (by O(step^2))
print("ZOH vs Euler B, max difference:", np.abs(y_zoh - y_euler).max())

# %% [markdown]
# ### Exercise 2: the selective-scan matrix from its formula
#
# For one channel with $N = 1$, random $B_t$, $C_t$, $A = -0.8$ and raw steps $\delta_t$ (softplus
# applied), build $M_{ts} = C_t B_s \exp\big(A \sum_{r=s+1}^{t} \Delta_r\big) \Delta_s$ for $s \le t$
# (zero above the diagonal) with explicit loops, and compare it with `selective_scan_matrix`.

# %%
A_2 = np.array([[-0.8]])
delta_2 = rng.standard_normal((1, 1, L))
B_2, C_2 = rng.standard_normal((1, 1, L)), rng.standard_normal((1, 1, L))      # (batch, N, L)
steps = np.log1p(np.exp(delta_2[0, 0]))                                        # softplus
M_loops = np.zeros((L, L))
for t in range(L):
    for s in range(t + 1):
        M_loops[t, s] = C_2[0, 0, t] * B_2[0, 0, s] * np.exp(A_2[0, 0] * steps[s + 1:t + 1].sum()) * steps[s]

# %%
# Check
M_itnet = mamba.selective_scan_matrix(delta_2, A_2, B_2, C_2, delta_softplus=True).numpy()[0, 0]
assert np.allclose(M_itnet, M_loops, rtol=1e-10, atol=1e-12)
u_2 = rng.standard_normal((1, 1, L))
assert np.allclose(M_loops @ u_2[0, 0],
                   R.selective_scan_ref(u_2, delta_2, A_2, B_2, C_2, delta_softplus=True)[0, 0], atol=1e-10)
print("max |M_loops - selective_scan_matrix| =", np.abs(M_itnet - M_loops).max())

# %% [markdown]
# ### Exercise 3: the semiseparable rank of a random SSD matrix
#
# For state sizes $N = 1, 2, 5$, draw a random SSD matrix (`ssd_matrix` with random decays, $B$, $C$)
# and compute the ranks of all blocks $M[k{:}, {:}k{+}1]$ with `np.linalg.svd`. The bound says rank
# $\le N$; for random $B$, $C$ it is attained wherever the block is big enough, so expect
# $\min(N, L - k, k + 1)$ exactly.

# %%
ssd_ranks = {}
for N_try in (1, 2, 5):
    A_try = -rng.uniform(0.02, 0.3, (1, L, 1))
    B_try, C_try = rng.standard_normal((2, 1, L, 1, N_try))
    M_try = mamba.ssd_matrix(A_try, B_try, C_try).numpy()[0, 0]
    ssd_ranks[N_try] = block_ranks(M_try)
print("largest block rank per N:", {n: int(r.max()) for n, r in ssd_ranks.items()})

# %%
# Check
k = np.arange(L)
for N_try, ranks in ssd_ranks.items():
    assert ranks.max() <= N_try
    assert np.array_equal(ranks, np.minimum(N_try, np.minimum(L - k, k + 1))), N_try

# %% [markdown]
# ## What to remember
#
# - S4D is the ITNet operator with a decay kernel of the lag, $K(k) = C e^{A \Delta k} \bar B$.
# - Mamba's selective scan is the same exponential over the clock $\tau_t = \sum_{r \le t} \Delta_r$,
#   with $\Delta_s$ as the quadrature weight: selectivity is a data-dependent measure of time.
# - Every SSM matrix is semiseparable: blocks below the diagonal have rank at most the state size.
# - Code to open: `proofs/ssm.py`, `proofs/mamba.py`, `proofs/reference/ssm.py`,
#   `proofs/reference/mamba.py`, `itnet_np/transform/kernels/decay.py` and `selective.py`, and
#   `docs/theory.md` §8 to §10.
