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
# # 7. Making it fast
#
# Attention, written as an integral transform, forms the whole $N \times M$ matrix $A$ and then
# computes $A v$. That costs $O(NM)$ memory, and most of the time goes into moving that matrix
# around. In this notebook you learn how the fused kernels avoid it: **tiling** (work on small
# blocks of queries and keys), the **online softmax** (normalise without ever seeing a whole row),
# the **log-sum-exp** kept for the backward pass, and **skipping** the tiles that a causal or
# windowed support leaves empty. We first write all of it in plain NumPy on small arrays, then time
# the package's Numba kernels against the dense path and plot memory against $N$.
#
# Prerequisites: notebooks 02 (the integral transform: kernel, normalisation, support) and 04
# (attention is an integral transform).

# %%
import os
FULL_SIZE = os.environ.get("ITNET_FULL_SIZE", "0") == "1"   # full-size figures (slower)
import numpy as np
import matplotlib.pyplot as plt
import itnet_np as itn
import time
import tracemalloc
from scipy.special import logsumexp, softmax
from itnet_np.transform import DotProductKernel, IntegralTransform, scaled_dot_product_attention

SIZES = (64, 128, 256, 512, 1024, 2048) if FULL_SIZE else (64, 128, 256, 512)   # N for the timings
REPEATS = 5 if FULL_SIZE else 3                                                # best of this many
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. The dense path
#
# For one head, queries $q_i$, keys $k_j$ and values $v_j$ ($i < N$, $j < M$):
#
# $$ s_{ij} = \frac{q_i \cdot k_j}{\sqrt d}, \qquad
#    y_i = \sum_j \frac{e^{s_{ij}}}{\sum_{j'} e^{s_{ij'}}}\, v_j . $$
#
# The stable way subtracts the row maximum before `exp`. It needs the whole row $s_{i\cdot}$ at
# once, so the dense path builds the $N \times M$ score matrix.

# %%
def dense_attention(q, k, v, keep=None):
    """softmax(q k^T / sqrt(d)) v, with the pairs where keep is False left out (N x M matrix)."""
    s = q @ k.T / np.sqrt(q.shape[1])
    if keep is not None:
        s = np.where(keep, s, -np.inf)
    s = s - s.max(axis=1, keepdims=True)
    p = np.exp(s)
    return (p / p.sum(axis=1, keepdims=True)) @ v


N, M, d = 10, 13, 4
q, k, v = rng.standard_normal((N, d)), rng.standard_normal((M, d)), rng.standard_normal((M, 3))
y_dense = dense_attention(q, k, v)
print("y (dense):", y_dense.shape, " the score matrix it formed:", (N, M))

# %% [markdown]
# ## 2. The online softmax
#
# Split the keys into tiles $J_1, J_2, \dots$ of $b$ keys each and visit them one after the other.
# For every query row keep three running quantities over the keys seen so far:
#
# - the running maximum $m_i = \max_{j \text{ seen}} s_{ij}$,
# - the running sum $\ell_i = \sum_{j \text{ seen}} e^{s_{ij} - m_i}$,
# - the accumulator $a_i = \sum_{j \text{ seen}} e^{s_{ij} - m_i} v_j$.
#
# A new tile $J$ may raise the maximum to $m_i' = \max(m_i, \max_{j \in J} s_{ij})$. Both sums were
# taken relative to the old maximum, so they are rescaled by $\alpha_i = e^{m_i - m_i'} \le 1$:
#
# $$ \ell_i' = \alpha_i \ell_i + \sum_{j \in J} e^{s_{ij} - m_i'}, \qquad
#    a_i' = \alpha_i a_i + \sum_{j \in J} e^{s_{ij} - m_i'} v_j . $$
#
# After the last tile, $y_i = a_i / \ell_i$ exactly (no approximation: the invariant
# "$\ell_i$ and $a_i$ are the sums relative to $m_i$" holds after every step). Start with
# $m_i = -\infty$, $\ell_i = 0$, $a_i = 0$. Only one $N \times b$ tile of scores exists at a time.

# %%
def online_attention(q, k, v, tile):
    """Softmax attention over key tiles of size ``tile``; returns y (N, dv) and the row LSE (N,)."""
    n, scale = q.shape[0], 1.0 / np.sqrt(q.shape[1])
    m = np.full(n, -np.inf)                 # running max
    l = np.zeros(n)                         # running sum of exp(s - m)
    acc = np.zeros((n, v.shape[1]))         # running sum of exp(s - m) v
    for j0 in range(0, k.shape[0], tile):
        s = q @ k[j0:j0 + tile].T * scale                   # (n, tile): the only scores in memory
        m_new = np.maximum(m, s.max(axis=1))
        alpha = np.exp(m - m_new)                           # rescales what was summed before
        p = np.exp(s - m_new[:, None])
        l = alpha * l + p.sum(axis=1)
        acc = alpha[:, None] * acc + p @ v[j0:j0 + tile]
        m = m_new
    return acc / l[:, None], m + np.log(l)


y_online, lse = online_attention(q, k, v, tile=4)
print("max |online - dense| =", np.abs(y_online - y_dense).max())
assert np.abs(y_online - y_dense).max() < 1e-12

# %% [markdown]
# ### The log-sum-exp is all the backward needs
#
# The forward returns one extra number per row, $\mathrm{LSE}_i = m_i + \log \ell_i
# = \log \sum_j e^{s_{ij}}$. With it, any tile of the softmax matrix can be rebuilt without the
# rest of its row: $P_{ij} = e^{s_{ij} - \mathrm{LSE}_i}$. The backward (FlashAttention-2) does
# exactly that, tile by tile: it recomputes $s_{ij}$, rebuilds $P_{ij}$ and accumulates
#
# $$ dv_j = \sum_i P_{ij}\, dy_i, \qquad dS_{ij} = P_{ij}\,(dy_i \cdot v_j - D_i), \quad
#    D_i = dy_i \cdot y_i , $$
#
# where $D_i = \sum_j P_{ij}\, dy_i \cdot v_j$ is computed once per row from the output. So the
# forward saves $O(N)$ numbers, not $O(NM)$. Below: the LSE against scipy's `logsumexp`, one
# tile of $P$ rebuilt from it, and $dv$ summed tile by tile.

# %%
s_full = q @ k.T / np.sqrt(d)
assert np.abs(lse - logsumexp(s_full, axis=1)).max() < 1e-12
P_tile = np.exp(q @ k[4:8].T / np.sqrt(d) - lse[:, None])          # tile J = keys 4..7 only
assert np.abs(P_tile - softmax(s_full, axis=1)[:, 4:8]).max() < 1e-12

dy = rng.standard_normal(y_dense.shape)                               # an upstream gradient
dv_tiles = np.concatenate([np.exp(q @ k[j0:j0 + 4].T / np.sqrt(d) - lse[:, None]).T @ dy
                           for j0 in range(0, M, 4)])
dv_dense = softmax(s_full, axis=1).T @ dy
print("LSE:", np.round(lse, 3))
print("max |dv (tiles, from the LSE) - dv (dense)| =", np.abs(dv_tiles - dv_dense).max())
assert np.abs(dv_tiles - dv_dense).max() < 1e-12

# %% [markdown]
# ## 3. Tiles in both directions, and skipping empty ones
#
# The fused kernel tiles the queries too: a task owns a block $I$ of $b_q$ query rows and streams
# the key tiles $J$ through the online softmax. The support $S(i)$ reaches the kernel as a
# *descriptor*, not as an $N \times M$ mask: per row a source range $[\mathrm{lo}_i, \mathrm{hi}_i)$
# (causal: $[0, i+1)$; window $w$: $[i-w, i+w+1)$, clipped). A tile $(I, J)$ in which no row's
# range meets $J$ contributes nothing, and is **skipped whole**: it is never computed. That is
# where causal and windowed attention save work. Inside a visited tile the pairs outside the range
# get $s_{ij} = -\infty$ (their $e^{s}$ is 0).

# %%
def row_ranges(n, m, causal=False, window=None):
    """[lo_i, hi_i) of the support j <= i (causal) and |i - j| <= window, for i < n."""
    i = np.arange(n)
    lo, hi = np.zeros(n, int), np.full(n, m)
    if causal:
        hi = np.minimum(hi, i + 1)
    if window is not None:
        lo, hi = np.maximum(lo, i - window), np.minimum(hi, i + window + 1)
    return lo, hi


def tiled_attention(q, k, v, lo, hi, bq, bk):
    """Online softmax over (bq x bk) tiles, skipping the tiles outside every row's range.
    Returns y and the boolean map of visited tiles."""
    n, mk, scale = q.shape[0], k.shape[0], 1.0 / np.sqrt(q.shape[1])
    y = np.zeros((n, v.shape[1]))
    visited = np.zeros((-(-n // bq), -(-mk // bk)), bool)
    for ti, i0 in enumerate(range(0, n, bq)):
        rows = slice(i0, i0 + bq)
        m = np.full(len(q[rows]), -np.inf)
        l, acc = np.zeros_like(m), np.zeros((len(m), v.shape[1]))
        for tj, j0 in enumerate(range(0, mk, bk)):
            if j0 >= hi[rows].max() or j0 + bk <= lo[rows].min():
                continue                                            # no pair of this tile is kept
            visited[ti, tj] = True
            j = np.arange(j0, min(j0 + bk, mk))
            inside = (j >= lo[rows, None]) & (j < hi[rows, None])
            s = np.where(inside, q[rows] @ k[j].T * scale, -np.inf)
            m_new = np.maximum(m, s.max(axis=1))
            safe = np.where(np.isneginf(m_new), 0.0, m_new)         # rows with nothing kept yet
            alpha, p = np.exp(m - safe), np.exp(s - safe[:, None])
            l = alpha * l + p.sum(axis=1)
            acc = alpha[:, None] * acc + p @ v[j]
            m = m_new
        y[rows] = acc / np.where(l > 0, l, 1.0)[:, None]           # empty rows give 0
    return y, visited


n_demo, b_demo = 64, 8
qd, kd, vd = (rng.standard_normal((n_demo, 4)) for _ in range(3))
supports = {"full": {}, "causal": {"causal": True}, "window w = 6": {"window": 6},
            "causal, window w = 6": {"causal": True, "window": 6}}
visited_maps = {}
for name, kw in supports.items():
    lo, hi = row_ranges(n_demo, n_demo, **kw)
    keep = (np.arange(n_demo) >= lo[:, None]) & (np.arange(n_demo) < hi[:, None])
    y_tiled, visited_maps[name] = tiled_attention(qd, kd, vd, lo, hi, b_demo, b_demo)
    err = np.abs(y_tiled - dense_attention(qd, kd, vd, keep)).max()
    assert err < 1e-12
    print(f"{name:22s} visits {visited_maps[name].sum():2d} of {visited_maps[name].size} tiles, "
          f"max |tiled - dense| = {err:.1e}")

# %%
fig, axes = plt.subplots(1, 4, figsize=(15, 4.6), layout="constrained")
for ax, (name, kw) in zip(axes, supports.items()):
    lo, hi = row_ranges(n_demo, n_demo, **kw)
    keep = (np.arange(n_demo) >= lo[:, None]) & (np.arange(n_demo) < hi[:, None])
    tiles = np.kron(visited_maps[name], np.ones((b_demo, b_demo)))        # tile map at pair resolution
    ax.imshow(0.35 * tiles + 0.65 * keep, cmap="Greys", vmin=0, vmax=1)
    ax.set_xticks(np.arange(-0.5, n_demo, b_demo), minor=False, labels=[])
    ax.set_yticks(np.arange(-0.5, n_demo, b_demo), minor=False, labels=[])
    ax.grid(color="tab:blue", linewidth=0.6)
    ax.set_title(f"{name}\n{visited_maps[name].sum()} of {visited_maps[name].size} tiles visited")
    ax.set_xlabel("source j (tiles of 8)")
    ax.set_ylabel("query i (tiles of 8)")
fig.suptitle("Kept pairs (black), visited tiles (grey), skipped tiles (white)")
plt.show()

# %% [markdown]
# Causal attention visits about half the tiles. With a window of width $w$ each query tile needs the
# keys of $b + 2w$ positions, at most $2w/b + 2$ key tiles, so about $(N/b)(2w/b + 2)$ tiles in all:
# the cost grows linearly in $N$, not quadratically.
#
# ## 4. The fused kernels in the package
#
# `itnet_np/transform/fused/attention_numba.py` is the loop of section 3 in Numba: $64 \times 64$
# tiles, the two tile products as BLAS calls, one task per (batch, head, query tile) spread over
# the CPU threads, and the FlashAttention-2 backward that recomputes tiles from the saved LSE.
# Which evaluator runs is decided by one planner (`itnet_np/transform/planner.py`):
#
# - `backend='dense'`: the reference; forms $A$ ($B \times H \times N \times M$), then $A v$;
# - `backend='numba'`: the fused kernels (`itnet_np/transform/fused/numba_plans.py` maps the call
#   onto them, or declines with a reason, which then raises);
# - `backend='auto'`: the fused plan when it accepts the call *and* pays at this size (from
#   $NM \ge 48^2$ pairs for attention, a measured crossover), else dense.
#
# `layer.explain(x)` prints the decision and every backend's answer, evaluating nothing.

# %%
C, H = 16, 2
kernel = DotProductKernel(C, heads=H, rng=np.random.default_rng(1), dtype=np.float64)
layer = IntegralTransform(C, C, kernel, normalization="softmax", support="causal", backend="auto",
                          rng=np.random.default_rng(2), dtype=np.float64)
print(layer.explain(itn.tensor(rng.standard_normal((1, 32, C)))))
print()
print(layer.explain(itn.tensor(rng.standard_normal((1, 256, C)))))

# %% [markdown]
# Numba compiles the kernels on their first call (and caches them on disk, so later sessions skip
# this). We time that first call separately, forward and backward, at the smallest size.

# %%
x_small = itn.tensor(rng.standard_normal((1, SIZES[0], C)), requires_grad=True)
layer.backend = "numba"
start = time.perf_counter()
y_small = layer(x_small)
forward_seconds = time.perf_counter() - start
y_small.sum().backward()
backward_seconds = time.perf_counter() - start - forward_seconds
start = time.perf_counter()
layer(x_small).sum().backward()
warm_ms = 1e3 * (time.perf_counter() - start)
print(f"first fused forward: {forward_seconds:.2f} s, first backward: {backward_seconds:.2f} s "
      f"(they compile unless cached); second forward + backward: {warm_ms:.1f} ms")

# %% [markdown]
# The fused result equals the dense reference, forward and gradients (float64):

# %%
def output_and_grads(backend, x):
    layer.backend = backend
    layer.zero_grad()
    xt = itn.tensor(x, requires_grad=True)
    y = layer(xt)
    (y * itn.tensor(np.cos(np.arange(y.size)).reshape(y.shape))).sum().backward()
    return y.numpy(), xt.grad.numpy(), layer.kernel.W_q.grad.numpy().copy()


x_check = rng.standard_normal((2, 200, C))
for name, a, b in zip(("y", "dL/dx", "dL/dW_q"), output_and_grads("dense", x_check),
                      output_and_grads("numba", x_check)):
    print(f"max |fused - dense| for {name:8s}: {np.abs(a - b).max():.1e}")
    assert np.abs(a - b).max() < 1e-10

# %% [markdown]
# ## 5. Time and memory against $N$
#
# Forward passes without gradient recording (`itn.no_grad()`), best of a few repeats. Memory is the
# peak that `tracemalloc` sees during one forward: NumPy reports its allocations to it, so every
# array of the dense path is counted. Numba's own scratch inside the fused kernel (a few
# $64 \times 64$ tiles per thread, independent of $N$) is not seen. Beside the measurements, the
# analytic size of one dense attention matrix, $B H N M \times 8$ bytes. Timings depend on the
# machine and its load: they illustrate, they prove nothing.

# %%
def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_bytes(fn):
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


results = {"dense": ([], []), "numba": ([], [])}
for n in SIZES:
    x = itn.tensor(rng.standard_normal((1, n, C)))
    for backend, (times, peaks) in results.items():
        layer.backend = backend
        with itn.no_grad():
            times.append(best_time(lambda: layer(x), REPEATS))
            peaks.append(peak_bytes(lambda: layer(x)))
analytic = [H * n * n * 8 for n in SIZES]

print(f"{'N':>5} {'dense ms':>9} {'fused ms':>9} {'dense MB':>9} {'fused MB':>9} {'B H N M 8 (MB)':>15}")
(dense_t, dense_m), (fused_t, fused_m) = results["dense"], results["numba"]
rows = zip(SIZES, dense_t, fused_t, dense_m, fused_m, analytic)
for n, td, tf, pd, pf, a in rows:
    print(f"{n:5d} {1e3 * td:9.2f} {1e3 * tf:9.2f} {pd / 1e6:9.2f} {pf / 1e6:9.2f} {a / 1e6:15.2f}")

# %%
fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(12, 4.5))
for backend, (times, peaks) in results.items():
    label = "dense (forms A)" if backend == "dense" else "fused (numba)"
    ax_t.loglog(SIZES, np.array(times) * 1e3, "o-", label=label)
    ax_m.loglog(SIZES, np.array(peaks) / 1e6, "o-", label=label + ", tracemalloc peak")
ax_m.loglog(SIZES, np.array(analytic) / 1e6, "k--", label="one attention matrix, B H N M 8 bytes")
ax_t.set(xlabel="N (= M)", ylabel="forward time (ms)", title="Causal attention, one forward")
ax_m.set(xlabel="N (= M)", ylabel="peak memory (MB)", title="Memory: dense grows as N², fused as N")
ax_t.legend()
ax_m.legend(fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# On a log-log plot a power law is a line: slope 2 for the dense memory (it holds several $N \times
# M$ arrays at once: scores, exponentials, the normalised matrix), slope 1 for the fused one (the
# inputs and outputs). The measured slopes:

# %%
for backend, (times, peaks) in results.items():
    slope = np.polyfit(np.log(SIZES[1:]), np.log(peaks[1:]), 1)[0]
    print(f"{backend:6s} memory slope {slope:.2f}, peak / (B H N M 8 bytes) at N = {SIZES[-1]}: "
          f"{peaks[-1] / analytic[-1]:.2f}")

# %% [markdown]
# Skipping in the package: at the largest size, the same fused layer with the full, causal and
# windowed support (the window is one tile wide, so the visited tiles grow as $N$):

# %%
n = SIZES[-1]
x = itn.tensor(rng.standard_normal((1, n, C)))
for support, extra in (("full", {}), ("causal", {}), ("causal", {"window": 64})):
    fused = IntegralTransform(C, C, kernel, normalization="softmax", support=support, backend="numba",
                              rng=np.random.default_rng(2), dtype=np.float64, **extra)
    with itn.no_grad():
        seconds = best_time(lambda: fused(x), REPEATS)
    decision = fused.explain(x).splitlines()[0]
    print(f"support={support!r:9s} {extra!s:15s} {1e3 * seconds:6.2f} ms   ({decision})")

# %% [markdown]
# ### The same kernels behind `scaled_dot_product_attention`
#
# `itnet_np.transform.scaled_dot_product_attention(q, k, v, attn_mask=None, is_causal=False,
# scale=None, backend='auto')` follows torch's SDPA conventions and builds the same planner call
# (`itnet_np/transform/sdpa.py`; its `explain` gives the decision in words). Raw arrays in, a raw
# array out:

# %%
qs, ks, vs = (rng.standard_normal((1, H, 300, 8)) for _ in range(3))
out_fused = scaled_dot_product_attention(qs, ks, vs, is_causal=True, backend="numba")
out_dense = scaled_dot_product_attention(qs, ks, vs, is_causal=True, backend="dense")
print("max |fused - dense| =", np.abs(out_fused - out_dense).max())
assert np.abs(out_fused - out_dense).max() < 1e-10

# %% [markdown]
# ### Exercise 1: the online softmax over tiles of any size
#
# Write `my_online_softmax_attention(q, k, v, tile)` that visits the keys in tiles of `tile` keys
# (the last tile may be shorter) and keeps only the running max, running sum and the rescaled
# accumulator per query row. Return the output and the log-sum-exp of each row.

# %%
def my_online_softmax_attention(q, k, v, tile):
    scale = 1.0 / np.sqrt(q.shape[1])
    m = np.full(q.shape[0], -np.inf)
    l = np.zeros(q.shape[0])
    acc = np.zeros((q.shape[0], v.shape[1]))
    for j0 in range(0, k.shape[0], tile):
        s = q @ k[j0:j0 + tile].T * scale
        m_new = np.maximum(m, s.max(axis=1))
        p = np.exp(s - m_new[:, None])
        alpha = np.exp(m - m_new)
        l = alpha * l + p.sum(axis=1)
        acc = alpha[:, None] * acc + p @ v[j0:j0 + tile]
        m = m_new
    return acc / l[:, None], m + np.log(l)


# %%
# Check: against the dense formula written with scipy (softmax, logsumexp), for several tile sizes,
# including ones that do not divide M and one larger than M; large scores test the rescaling.
ex_rng = np.random.default_rng(7)
qe = 10 * ex_rng.standard_normal((9, 5))
ke, ve = ex_rng.standard_normal((23, 5)), ex_rng.standard_normal((23, 2))
scores = qe @ ke.T / np.sqrt(5)
for tile in (1, 4, 7, 23, 50):
    y_mine, lse_mine = my_online_softmax_attention(qe, ke, ve, tile)
    assert np.abs(y_mine - softmax(scores, axis=1) @ ve).max() < 1e-12, tile
    assert np.abs(lse_mine - logsumexp(scores, axis=1)).max() < 1e-12, tile
print("online softmax == dense softmax for tiles 1, 4, 7, 23, 50")

# %% [markdown]
# ### Exercise 2: a radius support runs fused
#
# Build an attention layer (`DotProductKernel`, softmax) with the support `radius=5.0` on the
# default grid $p_i = i$, `backend='auto'`, at $N = 256$. Use `layer.explain(x)` to find which
# backend runs and how it sees the support. Then compute the output with `backend='dense'` and
# `backend='numba'`.

# %%
radius_layer = IntegralTransform(C, C, kernel, normalization="softmax", radius=5.0, backend="auto",
                                 rng=np.random.default_rng(3), dtype=np.float64)
x_radius = itn.tensor(np.random.default_rng(4).standard_normal((2, 256, C)))
explanation = radius_layer.explain(x_radius)
print(explanation)
radius_layer.backend = "dense"
y_radius_dense = radius_layer(x_radius).numpy()
radius_layer.backend = "numba"
y_radius_fused = radius_layer(x_radius).numpy()

# %%
# Check: 'auto' chose the fused kernel, which sees |p_i - p_j| <= 5 on the grid as the band
# |i - j| <= 5, and the fused output equals the dense reference in float64.
assert explanation.splitlines()[0] == "backend='auto' runs 'numba'"
assert "window |i - j| <= 5" in explanation
assert np.abs(y_radius_fused - y_radius_dense).max() < 1e-10
print("max |fused - dense| =", np.abs(y_radius_fused - y_radius_dense).max())
