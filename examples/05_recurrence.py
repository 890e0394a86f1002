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
# # 5. Recurrence is an integral equation
#
# An RNN, a GRU and an LSTM all compute $h_t = F(h_{t-1}, x_t)$. In this notebook you rewrite that
# loop as an *integral equation*: the unknown sequence $h$ appears on both sides, under a causal
# integral transform. You check that the ITNet construction reproduces PyTorch's three cells to
# rounding, watch the Picard iteration fix the solution one position per sweep, and confirm that an
# output never depends on a later input. Prerequisites: notebook 02 (the integral transform) and
# notebook 03 (the stencil kernel).

# %%
import os
FULL_SIZE = os.environ.get("ITNET_FULL_SIZE", "0") == "1"   # full-size figures (slower)
import numpy as np
import matplotlib.pyplot as plt
import itnet_np as itn
from itnet_np.proofs import recurrence
from itnet_np.proofs import reference as R
from itnet_np.transform import shift_transform

T = 64 if FULL_SIZE else 32          # sequence length
B, I, H = 2, 3, 4                    # batch, input width, hidden width
rng = np.random.default_rng(0)
x = rng.standard_normal((B, T, I))   # float64 throughout: we compare with references to ~1e-12

GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def torch_weights(mode, scale=0.6, seed=1):
    """Random weights in torch's layout: weight_ih (G H, I), weight_hh (G H, H), biases (G H,)."""
    r = np.random.default_rng(seed)
    G = GATES[mode]
    return (scale * r.standard_normal((G * H, I)), scale * r.standard_normal((G * H, H)),
            0.5 * r.standard_normal(G * H), 0.5 * r.standard_normal(G * H))


# %% [markdown]
# ## The Volterra form of a recurrence
#
# Take a recurrence $h_t = F(h_{t-1}, x_t)$ with initial state $h_{-1} = h_0$. Define the lag-1
# shift as an integral transform with the kernel $K(t, s) = \mathbf 1[s = t-1]$:
#
# $$ T_K[y]_t = \sum_{s < t} K(t, s)\, y_s = y_{t-1}, \qquad y_{-1} = h_0 $$
#
# (the initial state is a boundary source at position $-1$).
#
# Then the whole sequence $h$ is the solution $y$ of
#
# $$ y_t = \Phi\big(T_K[y]_t,\ u_t\big), \qquad u_t = W_{ih} x_t + b_{ih}, $$
#
# where $\Phi(z, u_t) = F(z, x_t)$ is the cell. The part of the gates that does not depend on the
# unknown, $u$, is computed once for the whole sequence. Because the integral only reaches *back*
# ($s < t$), this is a **discrete Volterra equation of the second kind**, and it has exactly one
# solution. PyTorch's cells (gate rows stacked in the order $[r, z, n]$ and $[i, f, g, o]$; we write
# torch's update gate $z$ as $\zeta$, to keep $z$ for the shifted state):
#
# - Elman: $\Phi(z, u) = \tanh(u + W_{hh} z + b_{hh})$.
# - GRU: $r, \zeta = \sigma(u_{r,\zeta} + (W_{hh} z + b_{hh})_{r,\zeta})$,
#   $n = \tanh(u_n + r \odot (W_{hn} z + b_{hn}))$, $\Phi = (1-\zeta) \odot n + \zeta \odot z$.
# - LSTM: the unknown is the pair $y = [h \mid c]$; $i, f, o = \sigma(\cdot)$, $g = \tanh(\cdot)$ of
#   $u + W_{hh} z_h + b_{hh}$; $c_t = f \odot z_c + i \odot g$, $h_t = o \odot \tanh(c_t)$.
#
# The whole memory of the network is one sub-diagonal. `shift_transform` builds it as an
# `IntegralTransform` with a one-tap `StencilKernel([-1])` and identity value and output maps
# (`itnet_np/transform/volterra.py`). Here is its kernel matrix, with the boundary as the first column.

# %%
shift = shift_transform(H, dtype=np.float64)
query_pos = np.arange(T, dtype=np.float64)[:, None]
source_pos = np.arange(-1, T, dtype=np.float64)[:, None]          # the boundary h_{-1}, then h_0 .. h_{T-1}
K_shift = shift.kernel_matrix(np.zeros((1, T, H)), positions=query_pos, source=np.zeros((1, T + 1, H)),
                              source_positions=source_pos).numpy()[0, 0]
assert np.array_equal(K_shift, np.eye(T, T + 1))                  # K(t, s) = 1[s = t - 1]

# %% [markdown]
# The GRU has a second Volterra form. Unroll $h_t = \zeta_t h_{t-1} + (1-\zeta_t) n_t$:
#
# $$ h_t = \Big[\prod_{r \le t} \zeta_r\Big] h_0 + \sum_{s \le t} K_\zeta(t, s)\, (1-\zeta_s)\, n_s,
#    \qquad K_\zeta(t, s) = \prod_{r=s+1}^{t} \zeta_r . $$
#
# Now the kernel is no longer a fixed shift: it is a data-dependent cumulative product of the update
# gate, evaluated on the solution. That is the kernel of gated linear attention and of Mamba
# (notebook 06). `layer.multiplicative_form(x)` evaluates this sum densely; it must give the GRU's
# output. Below we also draw $K_\zeta$ for one hidden unit, from the gates recomputed with numpy.

# %%
w_ih, w_hh, b_ih, b_hh = torch_weights("gru")
gru = recurrence.gru_as_itnet(w_ih, w_hh, b_ih, b_hh)
h_ref, _ = R.gru_ref(x, None, w_ih, w_hh, b_ih, b_hh)
gated = gru.multiplicative_form(x).numpy()
print("multiplicative form vs reference GRU:", np.abs(gated - h_ref).max())
assert np.allclose(gated, h_ref, rtol=0, atol=1e-12)

# the update gate zeta_t = sigma(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz) on the solution (h_{-1} = 0)
h_prev = np.concatenate([np.zeros((B, 1, H)), h_ref[:, :-1]], axis=1)
zeta = R.sigmoid(x @ w_ih[H:2 * H].T + b_ih[H:2 * H] + h_prev @ w_hh[H:2 * H].T + b_hh[H:2 * H])
log_cum = np.concatenate([[0.0], np.cumsum(np.log(zeta[0, :, 0]))])   # sum_{r <= t} log zeta_r, from t = -1
K_gate = np.exp(log_cum[1:, None] - log_cum[None, :])                   # prod_{r=s+1}^t zeta_r, s = -1 .. T-1
K_gate[source_pos[:, 0][None, :] > query_pos] = 0.0                     # causal: s <= t

fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
for ax, K, title in ((axes[0], K_shift, "shift kernel $K(t,s)=1[s=t-1]$"),
                     (axes[1], K_gate, r"GRU gated kernel $\prod_{r=s+1}^t \zeta_r$ (unit 0)")):
    im = ax.imshow(K, cmap="viridis", extent=(-1.5, T - 0.5, T - 0.5, -0.5), aspect="auto")
    ax.set_xlabel("source position s (s = -1: initial state)")
    ax.set_ylabel("query position t")
    ax.set_title(title)
    fig.colorbar(im, ax=ax)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The construction equals PyTorch's cells
#
# `rnn_as_itnet`, `gru_as_itnet` and `lstm_as_itnet` (`proofs/recurrence.py`) take weights in
# torch's layout and return a `VolterraRecurrence` that returns what torch returns. The references in
# `proofs/reference/recurrent.py` are plain numpy loops written from PyTorch's documented formulas,
# independently of ITNet. We compare outputs and final states in float64, with a random initial state.

# %%
h0 = rng.standard_normal((1, B, H))
c0 = rng.standard_normal((1, B, H))
builders = {"rnn": recurrence.rnn_as_itnet, "gru": recurrence.gru_as_itnet, "lstm": recurrence.lstm_as_itnet}
references = {"rnn": R.rnn_ref, "gru": R.gru_ref, "lstm": R.lstm_ref}
for mode in ("rnn", "gru", "lstm"):
    weights = torch_weights(mode)
    state = (h0, c0) if mode == "lstm" else h0
    out, last = builders[mode](*weights)(x, state)
    out_ref, last_ref = references[mode](x, state, *weights)
    if mode == "lstm":                                     # (h_n, c_n)
        last, last_ref = np.concatenate([s.numpy() for s in last]), np.concatenate(last_ref)
    else:
        last = last.numpy()
    err = max(np.abs(out.numpy() - out_ref).max(), np.abs(last - last_ref).max())
    print(f"{mode:4s}: max |ITNet - reference| = {err:.1e}")
    assert err <= 1e-12

# %% [markdown]
# ## Picard iteration: one position per sweep
#
# Forward substitution solves the equation in $T$ sequential steps. The Picard iteration instead
# updates the *whole* sequence at once:
#
# $$ y^{(k+1)} = \Phi\big(T_K[y^{(k)}],\ u\big), \qquad y^{(0)} = 0 . $$
#
# Each sweep is one parallel application of the transform and the cell. Since $T_K[y]_t$ reads only
# $y_{t-1}$, position $t$ of sweep $k+1$ depends on position $t-1$ of sweep $k$. By induction on $t$:
# **after $k$ sweeps the first $k$ positions are exact**, and after $T$ sweeps the whole sequence is.
# Position $k$ is generally still wrong: it is $F$ applied $k$ times to the wrong start $0$.
#
# `layer.solve(x, method="picard", return_iterates=True)` returns every iterate. We plot the error
# $\max |y^{(k)}_t - h_t|$ per position $t$ and sweep $k$ against the reference loop (exact zeros are
# drawn at $10^{-17}$).

# %%
w_rnn = torch_weights("rnn")
rnn = recurrence.rnn_as_itnet(*w_rnn)
h_rnn, _ = R.rnn_ref(x, None, *w_rnn)
_, iterates = rnn.solve(x, method="picard", return_iterates=True)
iterates = [np.zeros_like(h_rnn)] + [y.numpy() for y in iterates]        # y^(0) = 0, then y^(1) .. y^(T)
error = np.array([np.abs(y - h_rnn).max(axis=(0, 2)) for y in iterates])  # (T + 1 sweeps, T positions)
floor = 1e-17

fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
im = axes[0].imshow(np.log10(np.maximum(error, floor)), cmap="magma", aspect="auto", origin="lower")
axes[0].plot(np.arange(T), np.arange(T), "c--", lw=1, label="t = k (the front)")
axes[0].set_xlabel("position t")
axes[0].set_ylabel("Picard sweep k")
axes[0].set_title(r"$\log_{10}$ error of $y^{(k)}_t$")
axes[0].legend(loc="upper left")
fig.colorbar(im, ax=axes[0])
for k in range(0, T + 1, max(1, T // 6)):
    axes[1].semilogy(np.arange(T), np.maximum(error[k], floor), marker=".", label=f"k = {k}")
axes[1].set_xlabel("position t")
axes[1].set_ylabel(r"$\max |y^{(k)}_t - h_t|$")
axes[1].set_title("error per position after k sweeps")
axes[1].legend(fontsize=8)
plt.tight_layout()
plt.show()
print("error after T sweeps:", error[-1].max())

# %% [markdown]
# The dark triangle above the line $t = k$ is the exact prefix: behind the front the error is at
# rounding level, at the front it jumps by many orders of magnitude. In front of it the error also
# shrinks from sweep to sweep, but only as fast as the cell contracts (Exercise 3); the exact prefix
# does not depend on any contraction.
#
# ## Causality
#
# The output at $t$ may depend on $x_s$ only for $s \le t$. Perturb the input at one position $t_0$
# and compare: every output before $t_0$ must be *bitwise* unchanged, for both solvers, and the change
# must appear at $t_0$ itself.

# %%
t0 = T // 2
x_bumped = x.copy()
x_bumped[:, t0] += 1.0
styles = {"picard": {"color": "C1", "marker": "o", "ms": 7},
          "substitution": {"color": "k", "marker": "x", "ls": ""}}
fig, ax = plt.subplots(figsize=(6, 3.5))
for method, style in styles.items():
    before, after = (rnn.solve(inp, method=method).numpy() for inp in (x, x_bumped))
    change = np.abs(after - before).max(axis=(0, 2))
    assert np.array_equal(after[:, :t0], before[:, :t0]), method   # nothing before t0 moved
    assert change[t0] > 1e-3, method                               # the bump is felt at t0
    ax.semilogy(np.arange(T), np.maximum(change, floor), label=method, **style)
ax.axvline(t0, color="grey", ls=":", label="perturbed position $t_0$")
ax.set_xlabel("position t")
ax.set_ylabel(r"$\max |\Delta h_t|$")
ax.set_title("effect of perturbing $x_{t_0}$ (exact zeros drawn at $10^{-17}$)")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ### Exercise 1: an Elman RNN by hand
#
# Write the Elman loop $h_t = \tanh(W_{ih} x_t + b_{ih} + W_{hh} h_{t-1} + b_{hh})$ yourself (weights
# in torch's layout, so $W x$ is `x @ W.T`), starting from `h0`. The check compares it with the ITNet
# construction `rnn_as_itnet` (forward substitution and Picard) to $10^{-12}$.

# %%
def elman(x, h0, weight_ih, weight_hh, bias_ih, bias_hh):
    """x (B, T, I), h0 (B, H) -> outputs (B, T, H)."""
    h, outputs = h0, []
    for t in range(x.shape[1]):
        h = np.tanh(x[:, t] @ weight_ih.T + bias_ih + h @ weight_hh.T + bias_hh)
        outputs.append(h)
    return np.stack(outputs, axis=1)


mine = elman(x, h0[0], *w_rnn)

# %%
# Check
for method in ("substitution", "picard"):
    out, h_last = rnn(x, h0, method=method)
    assert np.allclose(out.numpy(), mine, rtol=0, atol=1e-12), method
    assert np.allclose(h_last.numpy()[0], mine[:, -1], rtol=0, atol=1e-12), method
print("your loop = ITNet Volterra solve, max diff", np.abs(rnn(x, h0)[0].numpy() - mine).max())

# %% [markdown]
# ### Exercise 2: prefix exactness, and no more
#
# For an LSTM, run Picard with `iterations=k` for every $k = 1, \dots, T-1$ (argument of
# `layer.solve`) and collect, per $k$, the error of the first $k$ positions and the error of position
# $k$. Show that the first is below $10^{-12}$ and the second is not small. For the LSTM the unknown is
# $[h \mid c]$; compare both halves with `lstm_ref`. Give the forget gate a bias of $+2$ so that the
# cell state remembers: with a strongly contracting cell the error at the front also fades with $k$
# (Exercise 3), and a long sequence would hide it.

# %%
w_lstm = torch_weights("lstm")
w_lstm[2][H:2 * H] += 2.0                       # forget-gate rows [i, f, g, o][1] of bias_ih
lstm = recurrence.lstm_as_itnet(*w_lstm)
out_ref, _ = R.lstm_ref(x, None, *w_lstm)
# c_t from the reference, stepping one position at a time: c_t is the final cell state of x[:, :t+1]
c_ref = np.stack([R.lstm_ref(x[:, :t + 1], None, *w_lstm)[1][1][0] for t in range(T)], axis=1)
solution = np.concatenate([out_ref, c_ref], axis=-1)                  # the unknown [h | c]

prefix_error, front_error = [], []
for k in range(1, T):
    y_k = lstm.solve(x, method="picard", iterations=k).numpy()
    prefix_error.append(np.abs(y_k[:, :k] - solution[:, :k]).max())
    front_error.append(np.abs(y_k[:, k] - solution[:, k]).max())
print(f"worst prefix error {max(prefix_error):.1e}, smallest error at the front {min(front_error):.1e}")

# %%
# Check
assert len(prefix_error) == len(front_error) == T - 1
assert max(prefix_error) <= 1e-12          # positions < k are exact after k sweeps
assert min(front_error) > 1e-6             # position k is not
assert np.allclose(lstm.solve(x, method="picard").numpy(), solution, rtol=0, atol=1e-12)   # T sweeps: all

# %% [markdown]
# ### Exercise 3: contraction makes Picard converge faster
#
# Picard converges in at most $T$ sweeps for *any* recurrence. When the cell is a contraction in its
# first argument it converges sooner: the error in front of the front shrinks at every sweep too.
# For the GRU, $\partial \Phi / \partial z = \mathrm{diag}(\zeta) + O(\|W_{hh}\|)$, so the factor per
# sweep is about $\max \zeta$ plus a multiple of $\|W_{hh}\|$: tiny recurrent weights help only if the
# update gate also forgets ($\zeta$ small; with $\zeta \approx 1/2$ reaching $10^{-10}$ takes about 33
# sweeps whatever $W_{hh}$ is). With $W_{hh} = 0$ exactly, $\Phi$ is affine in $z$ with slope
# $\zeta_t$ (which then does not read $h$) and, since $y^{(0)} = 0$ and the boundary is exact,
#
# $$ h_t - y^{(k)}_t = \Big[\prod_{r=t-k+1}^{t} \zeta_r\Big] h_{t-k} \quad (t \ge k),
#    \qquad h_t - y^{(k)}_t = 0 \quad (t < k), $$
#
# so the error after $k$ sweeps is at most $(\max \zeta)^k \max |h|$.
#
# Task: bias the update gate towards forgetting ($b_{i\zeta} = -3$, so $\zeta \approx 0.05$), scale the
# recurrent weights by $1, 0.1, 10^{-3}, 0$, count the sweeps until $\max_t |y^{(k)}_t - h_t| \le 10^{-10}$
# and plot the error per sweep beside a plain GRU (no gate bias). Then check the formula for $W_{hh} = 0$.

# %%
def gru_weights(scale, gate_bias, seed=2):
    """GRU weights with W_hh multiplied by `scale` and `gate_bias` added to the update gate's b_iz."""
    w_ih, w_hh, b_ih, b_hh = torch_weights("gru", seed=seed)
    b_ih = b_ih.copy()
    b_ih[H:2 * H] += gate_bias                      # rows [r, z, n][1]: the update gate
    return w_ih, scale * w_hh, b_ih, b_hh


def picard_errors(weights):
    """(T, T): max |y^(k)_t - h_t| over batch and units, for sweeps k = 1..T and positions t."""
    h_ref, _ = R.gru_ref(x, None, *weights)
    _, its = recurrence.gru_as_itnet(*weights).solve(x, method="picard", return_iterates=True)
    return np.array([np.abs(y.numpy() - h_ref).max(axis=(0, 2)) for y in its])


tol = 1e-10
cases = {"plain GRU": (1.0, 0.0)} | {f"forgetful, {s:g} W_hh": (s, -3.0) for s in (1.0, 0.1, 1e-3, 0.0)}
sweeps_needed, sweep_error = {}, {}
fig, ax = plt.subplots(figsize=(6.5, 4))
for name, (scale, gate_bias) in cases.items():
    sweep_error[name] = picard_errors(gru_weights(scale, gate_bias))
    worst = sweep_error[name].max(axis=1)
    sweeps_needed[name] = int(np.argmax(worst <= tol)) + 1
    ax.semilogy(np.arange(1, T + 1), np.maximum(worst, floor), marker=".", label=name)
ax.axhline(tol, color="grey", ls=":")
ax.set_xlabel("Picard sweep k")
ax.set_ylabel(r"$\max_t |y^{(k)}_t - h_t|$")
ax.set_title("Picard error per sweep: the GRU as a contraction")
ax.legend(fontsize=8)
plt.tight_layout()
plt.show()
print("sweeps to reach 1e-10:", sweeps_needed)

# %%
# Check
w_ih0, _, b_ih0, b_hh0 = weights0 = gru_weights(0.0, -3.0)
h_ref0, _ = R.gru_ref(x, None, *weights0)
zeta0 = R.sigmoid(x @ w_ih0[H:2 * H].T + b_ih0[H:2 * H] + b_hh0[H:2 * H])   # no h term when W_hh = 0
measured = sweep_error["forgetful, 0 W_hh"]
for k in range(1, T):
    predicted = np.zeros_like(h_ref0)
    for t in range(k, T):
        predicted[:, t] = np.prod(zeta0[:, t - k + 1:t + 1], axis=1) * np.abs(h_ref0[:, t - k])
    assert np.allclose(measured[k - 1], predicted.max(axis=(0, 2)), rtol=1e-9, atol=1e-14), k
bound = int(np.ceil(np.log(tol / np.abs(h_ref0).max()) / np.log(zeta0.max())))   # (max zeta)^k max|h| <= tol
assert sweeps_needed["forgetful, 0 W_hh"] <= bound < T
needed = sweeps_needed
assert needed["forgetful, 0.001 W_hh"] < needed["forgetful, 1 W_hh"] < needed["plain GRU"]
print(f"W_hh = 0: {needed['forgetful, 0 W_hh']} sweeps; bound from max zeta = {zeta0.max():.3f}: {bound}")

# %% [markdown]
# ## What to remember
#
# - A recurrence is a causal integral equation $y = \Phi(T_K[y], u)$ whose kernel is the lag-1 shift;
#   the cell $\Phi$ carries the nonlinearity. Gated cells also have a linear Volterra form with a
#   data-dependent kernel $\prod \zeta_r$, the bridge to notebook 06.
# - Forward substitution and Picard iteration both solve it exactly; Picard is parallel over positions
#   and fixes one more position per sweep, faster when the cell contracts.
# - Code to open: `proofs/recurrence.py`, `itnet_np/transform/volterra.py`,
#   `proofs/reference/recurrent.py`, and `docs/theory.md` §11.
