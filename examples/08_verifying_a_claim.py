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
# # 8. Verifying a claim
#
# "Layer X is an ITNet" is a claim with a precise meaning: there is a construction, built from the
# pieces of `IntegralTransform`, whose output equals layer X's for *every* input and weight, and
# whose gradients equal X's too. This notebook shows how itnet-np checks such claims: the command
# `itnet verify` runs every reduction of the paper against references written independently from
# the published formulas. Then you state a claim of your own ("a causal running mean is an ITNet"),
# build the construction, write the reference with explicit loops, and check it the way the suite
# does: float64, random configurations from fixed seeds, the maximum absolute error against a
# tolerance near $10^{-10}$, and a gradient check. Finally you break the construction on purpose and
# watch the check catch it.
#
# Prerequisites: notebook 01 (gradcheck), 02 (kernel, normalisation, support) and 04 (attention as
# an integral transform); the exponential moving average of Exercise 1 uses the decay kernel of 06.

# %%
import os
FULL_SIZE = os.environ.get("ITNET_FULL_SIZE", "0") == "1"   # full-size figures (slower)
import numpy as np
import matplotlib.pyplot as plt
import itnet_np as itn
import inspect
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from itnet_np import verify
from itnet_np.proofs import reference as R
from itnet_np.transform import DecayKernel, DotProductKernel, IntegralTransform
from itnet_np.verify import Measurement, directional_gradient_error, max_abs

TRIALS = 400 if FULL_SIZE else 60                       # random configurations per claim
LENGTHS = (1, 2, 4, 8, 16, 32, 64, 128) if FULL_SIZE else (1, 2, 4, 8, 16, 32)   # error vs N

# %% [markdown]
# ## 1. How the suite checks a reduction
#
# Every reduction registers a *check*: a function that draws one random configuration (shapes,
# hyper-parameters, weights, inputs) in float64 from a generator, builds the ITNet construction
# (`itnet_np/proofs/`) and the conventional layer's reference (`itnet_np/proofs/reference/`, plain
# NumPy, importing nothing from itnet_np), and returns two numbers:
#
# - the forward error $\max |y_{\mathrm{ITNet}} - y_{\mathrm{ref}}|$;
# - the gradient error: draw a cotangent $u$ and directions $v_k$ for every input; the engine gives
#   $a = \sum_k \langle \partial \langle u, y_{\mathrm{ITNet}} \rangle / \partial x_k, v_k \rangle$,
#   central differences of the *reference* give $n$; the error is $|a - n| / \max(1, |n|)$. The
#   reference is never differentiated by hand.
#
# A reduction passes when the largest errors over all configurations stay below its tolerances
# (forward $10^{-10}$, gradient $10^{-6}$ by default; the gradient tolerance is looser because
# central differences with step $\varepsilon = 10^{-6}$ carry an error of order $\varepsilon^2$
# plus rounding of order $10^{-16} / \varepsilon$). Configuration $t$ of reduction `name` draws from
# `default_rng([seed, crc32(name), t])`, so every run is reproducible. The families:

# %%
print("\n".join(verify.select()))

# %% [markdown]
# Run one family from the command line, as a user would (`itnet verify --only NAME --trials 2
# --json report.json`; `--only` matches any part of a name), and read the JSON report it writes:

# %%
NAME = "SDPA + ALiBi"
with tempfile.TemporaryDirectory() as tmp:
    report_path = Path(tmp) / "report.json"
    run = subprocess.run([sys.executable, "-m", "itnet_np", "verify", "--only", NAME, "--trials", "2",
                          "--json", str(report_path)], capture_output=True, text=True)
    print("exit status:", run.returncode)
    report = json.loads(report_path.read_text())

columns = ("reduction", "configurations", "forward_error", "gradient_error", "tolerance", "grad_tolerance",
           "passed")
print("  ".join(f"{c:>15s}" for c in columns))
for result in report["results"]:
    print("  ".join(f"{result[c]:>15.2e}" if isinstance(result[c], float) else f"{result[c]!s:>15s}"
                    for c in columns))
assert run.returncode == 0 and report["passed"]

# %% [markdown]
# The check that just ran lives in `itnet_np/proofs/checks/attention.py`. It compares SDPA with an
# ALiBi `DotProductKernel` against `sdpa_ref` with the bias $-m_h |i - j|$ of Press et al., both
# causal and not:

# %%
print(inspect.getsource(verify.REGISTRY[NAME].check))

# %% [markdown]
# Its independent side is `itnet_np/proofs/reference/attention.py`: `sdpa_ref` follows the
# pseudo-code of torch's documentation, and `alibi_bias` writes the bias from the paper's formula
# (slopes $m_h = 2^{-8h/H}$ for $H$ a power of two). The bias of both heads for a causal sequence of
# length 5:

# %%
print(R.alibi_slopes(2))
print(R.alibi_bias(2, 5, 5, causal=True) + 0.0)          # + 0.0 prints -0 as 0

# %% [markdown]
# ## 2. Your claim: a causal running mean is an ITNet
#
# The running mean of width $w$ over a sequence $x_0, x_1, \dots$ (each channel on its own) averages
# the last $w$ values, fewer at the start:
#
# $$ y_i = \frac{1}{|S(i)|} \sum_{j \in S(i)} x_j, \qquad S(i) = \{\, j : 0 \le j \le i,\ i - j < w \,\}. $$
#
# **Construction.** Softmax attention with a *constant* score $s_{ij} = 0$ gives every kept pair the
# same weight, $e^0 / \sum_{j' \in S(i)} e^0 = 1/|S(i)|$. So take a `DotProductKernel` with
# `scale=0` (queries and keys then do not matter), `normalization='softmax'`, the support
# `'causal'` with `window=w - 1` (that is, $j \le i$ and $|i - j| \le w - 1$), and the identity as
# value map $W_V$ and output map $W_O$, no bias.
#
# **Reference.** Written from the formula with explicit loops, nothing from itnet_np.

# %%
def running_mean_ref(x, w):
    """y[b, i, c] = mean of x[b, j, c] over max(0, i - w + 1) <= j <= i; x (B, N, C)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.zeros_like(x)
    for b in range(x.shape[0]):
        for i in range(x.shape[1]):
            for c in range(x.shape[2]):
                window = [x[b, j, c] for j in range(x.shape[1]) if j <= i and i - j < w]
                y[b, i, c] = sum(window) / len(window)
    return y


def running_mean_as_itnet(channels, w):
    """The running mean of width w as an IntegralTransform (B, N, C) -> (B, N, C)."""
    kernel = DotProductKernel(channels, scale=0.0, dtype=np.float64)      # s_ij = 0
    layer = IntegralTransform(channels, channels, kernel, normalization="softmax", support="causal",
                              window=w - 1, bias=False, dtype=np.float64)
    eye = np.eye(channels)
    layer.load_state_dict({"W_V": eye, "W_O": eye}, strict=False)       # W_q, W_k keep their values
    return layer


rng = np.random.default_rng(0)
x = rng.standard_normal((2, 12, 3))
layer = running_mean_as_itnet(3, w=4)
error = max_abs(layer(itn.tensor(x)), running_mean_ref(x, w=4))
print(f"one input: max |ITNet - loops| = {error:.1e}")
assert error < 1e-10

# %% [markdown]
# The gradient of the construction: `itn.gradcheck` compares the engine's vector-Jacobian products
# with central differences of the same function, in float64, along random directions (it raises
# when they disagree). That checks the engine's derivatives of *this* construction; the suite's
# gradient error below compares them with the *reference* instead.

# %%
assert itn.gradcheck(layer, [x])
print("gradcheck of the construction: passed")

# %% [markdown]
# The matrix $A$ of the construction (`layer.kernel_matrix`) shows the claim at a glance: each row
# spreads weight $1/|S(i)|$ over the last $w$ positions.

# %%
A = layer.kernel_matrix(itn.tensor(x)).numpy()[0, 0]
print(np.round(A[:6, :6], 3))

# %% [markdown]
# ### Checking it the way the suite does
#
# A check function draws a whole configuration (batch, length, channels, width, input) from the
# generator it is given and measures both errors with the suite's own helpers `max_abs` and
# `directional_gradient_error` (`itnet_np/verify.py`). Registering it with `verify.reduction` lets
# the suite's runner measure it over many configurations; the registration lasts for this Python
# process only.

# %%
def draw_running_mean_case(rng, length=None):
    """(x (B, N, C), w) with B, C in 1..3, N in 1..16 (or the given length), w in 1..8."""
    B, C, w = int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(1, 9))
    N = int(rng.integers(1, 17)) if length is None else length
    return rng.standard_normal((B, N, C)), w


def measure_running_mean(rng, length=None):
    x, w = draw_running_mean_case(rng, length)
    layer = running_mean_as_itnet(x.shape[2], w)

    def reference(a):
        return running_mean_ref(a, w)
    return Measurement(forward=max_abs(layer(itn.tensor(x)), reference(x)),
                       gradient=directional_gradient_error(layer, reference, [x], rng))


@verify.reduction("running mean (notebook 08)", tolerance=1e-10, grad_tolerance=1e-6)
def check_running_mean(rng):
    """Causal running mean of width w == softmax attention with score 0 and a causal window w - 1."""
    return measure_running_mean(rng)


results = list(verify.iter_suite(trials=TRIALS, seed=0, names=["running mean (notebook 08)"]))
print(verify.format_table(results))
assert results[0]["passed"]

# %% [markdown]
# The table keeps only the largest error. To see the whole distribution, run the check per
# configuration, and once more per sequence length (several seeds each).

# %%
per_trial = [measure_running_mean(np.random.default_rng([1, t])) for t in range(TRIALS)]
forward_errors = np.array([m.forward for m in per_trial])
gradient_errors = np.array([m.gradient for m in per_trial])
by_length = np.array([[measure_running_mean(np.random.default_rng([2, n, s]), length=n).forward
                       for s in range(8)] for n in LENGTHS])
FLOOR = 1e-18                                   # exact zeros drawn on the floor of the log axis

fig, (ax_h, ax_n) = plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained")
bins = np.logspace(-18, -4, 43)
ax_h.hist(np.maximum(forward_errors, FLOOR), bins=bins, alpha=0.7, label="forward: max |ITNet - loops|")
ax_h.hist(np.maximum(gradient_errors, FLOOR), bins=bins, alpha=0.7, label="gradient: directional error")
ax_h.axvline(1e-10, color="tab:blue", ls="--", label="forward tolerance 1e-10")
ax_h.axvline(1e-6, color="tab:orange", ls="--", label="gradient tolerance 1e-6")
ax_h.set(xscale="log", xlabel="error (exact zeros at 1e-18)", ylabel="configurations",
         title=f"Running mean: {TRIALS} random configurations")
ax_h.legend(fontsize=8)
for s in range(by_length.shape[1]):
    ax_n.plot(LENGTHS, np.maximum(by_length[:, s], FLOOR), "o", color="tab:blue", alpha=0.5)
ax_n.axhline(1e-10, color="tab:blue", ls="--", label="tolerance")
ax_n.axhline(np.finfo(np.float64).eps, color="gray", ls=":", label="float64 machine epsilon")
ax_n.set(xscale="log", yscale="log", xlabel="sequence length N", ylabel="max |ITNet - loops|",
         title="Forward error against length (8 seeds each)")
ax_n.legend(fontsize=8)
plt.show()

# %% [markdown]
# The forward errors sit at the rounding level of float64 (at most a few $\varepsilon$; exact zeros
# where both sides add the same numbers in the same order), more than five orders of magnitude below the
# tolerance: the construction is exact. The gradient errors sit near $10^{-10}$, the accuracy of
# central differences with step $10^{-6}$, four orders below their tolerance.

# %% [markdown]
# ### Exercise 1: the exponential moving average is an ITNet
#
# The exponential moving average with smoothing factor $\alpha \in (0, 1)$ is the recurrence
# $h_i = (1 - \alpha) h_{i-1} + \alpha x_i$, $h_{-1} = 0$. Unrolled,
# $h_i = \sum_{j \le i} \alpha (1 - \alpha)^{i - j} x_j$: a causal integral transform with the decay
# kernel $K(i - j) = c \lambda^{i - j}$, $\lambda = 1 - \alpha$, $c = \alpha$, no normalisation.
# Write `ema_as_itnet(channels, alpha)` with `DecayKernel.from_modes(real=(lam, c))` (arrays of
# shape (heads, modes): one head per channel, one mode each), identity value and output maps.

# %%
def ema_as_itnet(channels, alpha):
    lam = np.full((channels, 1), 1.0 - alpha)
    coef = np.full((channels, 1), alpha)
    kernel = DecayKernel.from_modes(real=(lam, coef), dtype=np.float64)
    layer = IntegralTransform(channels, channels, kernel, embed_dim=channels, support="causal",
                              bias=False, dtype=np.float64)
    layer.load_state_dict({"W_V": np.eye(channels), "W_O": np.eye(channels)}, strict=False)
    return layer


# %%
# Check: against the recurrence as an explicit loop (not the unrolled sum), over random
# configurations, forward and the suite's gradient error.
def ema_ref(x, alpha):
    x = np.asarray(x, dtype=np.float64)
    y, h = np.zeros_like(x), np.zeros((x.shape[0], x.shape[2]))
    for i in range(x.shape[1]):
        h = (1 - alpha) * h + alpha * x[:, i]
        y[:, i] = h
    return y


for trial in range(20):
    ex_rng = np.random.default_rng([3, trial])
    alpha = float(ex_rng.uniform(0.05, 0.95))
    B, N, C = (int(ex_rng.integers(1, top)) for top in (4, 30, 4))
    x = ex_rng.standard_normal((B, N, C))
    ema = ema_as_itnet(x.shape[2], alpha)
    assert max_abs(ema(itn.tensor(x)), ema_ref(x, alpha)) < 1e-10, trial
    gradient_error = directional_gradient_error(ema, lambda a: ema_ref(a, alpha), [x], ex_rng)
    assert gradient_error < 1e-6, trial
print("EMA construction == recurrence on 20 configurations")

# %% [markdown]
# ### Exercise 2: break the construction, and watch the check catch it
#
# A check is only worth something if it can fail. Replace the configured support of the running
# mean by an explicit mask passed at call time (`layer(x, mask=keep)`, True = keep), first with the
# right polarity $j \le i$, $i - j < w$, then with the wrong one, $j > i$ instead of $j \le i$.
# Measure both against `running_mean_ref` on random configurations.

# %%
def running_mean_masked(x, w, causal_polarity):
    """The running mean with the support as an explicit mask; causal_polarity False flips j <= i."""
    n, channels = x.shape[1], x.shape[2]
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    keep = ((j <= i) if causal_polarity else (j > i)) & (i - j < w)
    kernel = DotProductKernel(channels, scale=0.0, dtype=np.float64)
    layer = IntegralTransform(channels, channels, kernel, normalization="softmax", bias=False,
                              dtype=np.float64)
    layer.load_state_dict({"W_V": np.eye(channels), "W_O": np.eye(channels)}, strict=False)
    return layer(itn.tensor(x), mask=keep)


right, wrong = [], []
for t in range(20):
    x, w = draw_running_mean_case(np.random.default_rng([4, t]), length=int(4 + t))
    right.append(max_abs(running_mean_masked(x, w, True), running_mean_ref(x, w)))
    wrong.append(max_abs(running_mean_masked(x, w, False), running_mean_ref(x, w)))
print(f"right polarity: largest error {max(right):.1e};  wrong polarity: smallest error {min(wrong):.2f}")

# %%
# Check: the right mask passes the suite's tolerance, the wrong one misses it by far on every
# configuration. Why it must: with j > i, row 0 keeps no source and gives 0 where the reference
# gives x_0, so the error is at least max_c |x[0, 0, c]|; for a standard normal entry the chance
# of falling below 1e-3 is under 1e-3, and the draws are fixed by the seeds.
assert max(right) < 1e-10
assert min(wrong) > 1e-3


@verify.reduction("running mean, wrong polarity (notebook 08)")
def check_wrong_polarity(rng):
    x, w = draw_running_mean_case(rng)
    return Measurement(forward=max_abs(running_mean_masked(x, w, False), running_mean_ref(x, w)))


broken = list(verify.iter_suite(trials=10, seed=0, names=["running mean, wrong polarity (notebook 08)"]))
print(verify.format_table(broken))
assert not broken[0]["passed"]

# %% [markdown]
# ### Exercise 3: a box filter is a decay kernel that does not decay
#
# The causal box filter with zero padding divides by $w$ always (not by the number of terms):
# $y_i = \frac{1}{w} \sum_{k=0}^{w-1} x_{i-k}$, with $x_{i-k} = 0$ for $i - k < 0$. Build it as a
# `DecayKernel` with $\lambda = 1$ (no decay) and $c = 1/w$, cut to the last $w$ positions by the
# support (`support='causal', window=w - 1`), normalisation 'none'.

# %%
def box_filter_as_itnet(channels, w):
    kernel = DecayKernel.from_modes(real=(np.ones((channels, 1)), np.full((channels, 1), 1.0 / w)),
                                    dtype=np.float64)
    layer = IntegralTransform(channels, channels, kernel, embed_dim=channels, support="causal",
                              window=w - 1, bias=False, dtype=np.float64)
    layer.load_state_dict({"W_V": np.eye(channels), "W_O": np.eye(channels)}, strict=False)
    return layer


# %%
# Check: against numpy's full convolution with a box of w ones (truncated to the first N outputs),
# an implementation the construction shares nothing with.
for t in range(10):
    x, w = draw_running_mean_case(np.random.default_rng([5, t]))
    ref = np.stack([np.stack([np.convolve(x[b, :, c], np.ones(w) / w)[:x.shape[1]]
                              for c in range(x.shape[2])], axis=-1) for b in range(x.shape[0])])
    assert max_abs(box_filter_as_itnet(x.shape[2], w)(itn.tensor(x)), ref) < 1e-10, t
print("box filter construction == np.convolve on 10 configurations")
