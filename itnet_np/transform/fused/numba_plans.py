"""The 'numba' backend of IntegralTransform: ``plan(call)`` maps a planner.TransformCall onto one fused
engine op (a Plan), or says why it cannot (a Decline).

Contract (planner.py): the Plan's ``run()`` -> (B, H, N, dv) must equal the dense reference, with
gradients. The kernel's per-point projections (engine Tensors
computed by ``kernel.project``) are the fused op's inputs, so the engine carries gradients upstream to
features, positions and every kernel parameter; the op itself is a single graph node.

DotProductKernel, s_ij = scale q_i . k_j (- m_h |i - j| with ALiBi) -> fused_attention:
    q, k   proj (B, N, H, d) -> (B, H, N, d);  ALiBi -> alibi_slopes, only when the positions are the
           index grid up to a common shift (p_i = i + c, p_j = j + c), since the raw kernel uses |i - j|
    w_j    folded into the operands by weight_folding.py (shared with the 'cuda' plan):
           'none':    A_ij v_j = s_ij (w_j v_j)                     -> v' = w v
           'sum':     y_i = sum_j s_ij w_j v_j / sum_j s_ij w_j     -> 'none' on v' = [w v | w], then
                      normalization.ratio_or_zero (0, with derivative 0, where the sum is 0)
           'softmax': w_j e^{s_ij} = e^{s_ij + log w_j}              -> q' = [q | 1], k' = [k | log w / scale];
                      sources with w_j = 0 are masked (as in the dense path; w < 0 raises, NaN propagates)
MLPKernel -> fused_mlp with kernel.factors(proj) = (a, b, x, y, W, W2, b2, act) and w (ones when None;
    under softmax w = 0 goes through ``where``, so its gradient is 0 as in the dense path).
StencilKernel -> stencil_plan.plan_stencil: a banded gather over the T taps ('none' and 'sum';
    integer positions, any dimension), O(N T d).
DecayKernel, SelectiveKernel -> scan_plan.plan_scan: the recurrence as an O(N state) scan ('none';
    the index grid; the kernel's own causal or strictly causal support).

Support: the operator hands a support.SupportPlan (built once per call, O(N + M)). ``support_args``
reads the index band (causal j <= i, window |i - j| <= w) off it, which the raw kernels use to skip
whole tiles, so causal, window and 1-D radius supports on the integer grid form nothing of size N x M;
other 1-D band supports (strictly causal, shifted grids, sorted off-grid positions) go as per-row
source ranges (``SupportPlan.row_ranges``). A radius support that is neither (D > 1, unsorted 1-D
positions, positions per batch item) goes as CSR neighbour lists (``SupportPlan.neighbours``: a k-d
tree, built once per call, O(N k)) to the neighbour-list kernels (neighbour_attention_numba.py,
neighbour_mlp_numba.py), with the user's mask and softmax's w_j = 0 exclusions read at the listed
pairs only (pair_lists.pair_lists), the points in cell order for cache-friendly gathers
(locality.py); so neither 'numba' nor 'auto' forms N x M for a radius support.
A 1-D causal / strictly causal / window support on unsorted or per-batch positions becomes row
ranges once the sources are sorted (sorted_plan.py: one call per batch item, sources permuted).
A window on D > 1 positions goes as neighbour lists too (``neighbour_lists``: the lists of a ball
that holds the window's cube, the window applied to the listed pairs). A user's explicit mask goes
on as given (``band_of`` tightens the band to it): a user mask that is not a band is then the only
dense mask on a fused path (besides positions that are not finite, which fall back to the plan's
dense mask).

Declined (a Decline with the reason; 'auto' uses dense, an explicit backend='numba' raises
ConfigError): arrays that are not NumPy (CuPy), a score_bias or a per-head mask for kernels other
than DotProductKernel (fused_attention takes both: SDPA's float and per-head masks), a score_bias or
ALiBi with neighbour lists, LowRankKernel and
SumKernel, softmax for stencil and scan kernels, T5 / learned relative biases (an N x M table whose
gradient needs an N x M buffer), activations the raw MLP kernel lacks, ALiBi on positions that are
not the index grid, softmax weights with scale = 0. Accepted plans carry ``pays``: N M against the
measured crossover MIN_PAIRS (``pays_from``; SDPA's calls go through the same plan).
"""
import math

import numpy as np

from ..kernels.decay import DecayKernel
from ..kernels.dot import DotProductKernel
from ..kernels.mlp import MLPKernel
from ..kernels.selective import SelectiveKernel
from ..kernels.stencil import StencilKernel
from ..planner import Decline, Plan
from ..positions import GRID_TOL
from ..support import Support
from ._tiles import ACTIVATIONS
from .engine_ops import fused_attention, fused_mlp, neighbour_attention, neighbour_mlp
from .locality import run_in_cell_order
from .pair_lists import pair_lists
from .scan_plan import plan_scan
from .sorted_plan import run_sorted, sorts_into_ranges
from .stencil_plan import plan_stencil
from .weight_folding import dot_operands, mlp_weights, unfold

# Recurrence kernels run as an O(N * state) scan (scan_plan.py).
_SCANNED = (DecayKernel, SelectiveKernel)

NAME = "numba"
# 'auto' fuses from this many (query, source) pairs N M on, per (family, itemsize): the measured
# crossover of forward + backward time, dense vs fused (warm), IntegralTransform(16 -> 16, H = 2,
# B = 2, softmax) on a 2-core CPU. Dot: fused/dense time 0.9 (f64) / 1.0 (f32) at 32^2, 0.7 / 0.6 at
# 48^2, 0.05 / 0.02 at 256^2. MLP (hidden 16 / 32): f64 at 128^2 0.9 / 0.65, at 256^2 0.4 / 0.35;
# f32 at 128^2 1.1 / 1.3, at 192^2 0.6 / 0.9, at 256^2 0.65 / 0.45 (noisy: a shared machine).
MIN_PAIRS = {("dot", 8): 48 * 48, ("dot", 4): 48 * 48, ("mlp", 8): 128 * 128, ("mlp", 4): 192 * 192}


def band_of(mask):
    """(causal, window, rest) for a bool mask (..., N, M): the tightest causal (j <= i) / window
    (|i - j| <= w) index band containing every kept pair, and ``rest`` = None when the mask equals
    that band (for every leading index), else the mask itself. All-False masks give (False, None, mask).
    """
    mask = np.asarray(mask)
    n, m = mask.shape[-2:]
    flat = mask.reshape(-1, n, m)
    rows = flat.any(-1)
    if not rows.any():
        return False, None, mask
    i = np.arange(n)
    first = flat.argmax(-1)
    last = m - 1 - flat[..., ::-1].argmax(-1)
    causal = bool((last <= i)[rows].all())
    below = int((i - first)[rows].max())           # max (i - j) over kept pairs
    above = 0 if causal else int((last - i)[rows].max())
    window = max(below, above, 0)
    if window >= max(n, m) - 1:
        window = None
    lo = np.zeros(n, np.int64) if window is None else np.maximum(i - window, 0)
    hi = np.full(n, m) if not causal else np.minimum(i + 1, m)
    if window is not None:
        hi = np.minimum(hi, i + window + 1)
    count = np.maximum(hi - lo, 0)
    rest = None if (flat.sum(-1) == count).all() else mask
    return causal, window, rest


def _common_grid(support):
    """True when query and source positions are i + c and j + c (one common c): ALiBi's |p_i - p_j|
    is then the raw kernel's |i - j|."""
    return support.shift is not None and abs(support.shift[0] - support.shift[1]) <= GRID_TOL


def support_args(support, tighten=True):
    """(causal, window, mask, ranges) of the raw kernels for a SupportPlan: the support's index band
    read from the descriptor, else its per-row source ranges [lo_i, hi_i) (strictly causal, shifted
    grids, sorted 1-D positions off the grid: O(N log M)), with the user's mask (if any) on top,
    tightened by ``band_of`` to skip tiles when ``tighten`` (it reads the mask on the host: the GPU
    plan passes False). Only a support that is neither (D > 1 with a local support, unsorted
    sources, per-batch positions) falls back to the dense mask."""
    band, mask, ranges = support.index_band(), support.mask, None
    if band is None:
        ranges = support.row_ranges()
        band = (False, None)
        if ranges is None:
            mask = support.dense_mask()
    causal, window = band
    if tighten and mask is not None and mask.shape[-2:] == (support.n, support.m):   # not a (1, M) row
        banded, width, mask = band_of(mask)
        causal = causal or banded
        window = width if window is None else window if width is None else min(window, width)
    if mask is not None and mask.ndim == 3:
        mask = mask[:, None]                          # (1|B, N, M) -> (1|B, 1, N, M)
    return causal, window, mask, ranges


def neighbour_lists(support):
    """The support as neighbour lists (neighbours.Neighbours) when neither the index band nor the row
    ranges describe it: a radius support's own (SupportPlan.neighbours, cached by the plan; D > 1,
    unsorted 1-D or per-batch positions), or a window max_d |p_j,d - p_i,d| <= w on D > 1 positions
    as the lists of the same support with the ball of radius w sqrt(D) (which holds the window's
    cube) added: the window is then applied to the listed pairs, so the support is unchanged.
    None otherwise. Call once per call (the window case builds its lists each time)."""
    if support.index_band() is not None or support.row_ranges() is not None:
        return None
    lists, sup, dim = support.neighbours(), support.support, support.query_positions.shape[-1]
    if lists is None and sup.radius is None and sup.window is not None and dim > 1:
        reach = sup.window * math.sqrt(dim) * (1 + 1e-9)         # margin: the cube's corners stay inside
        lists = Support(sup.kind, sup.window, reach).plan(support.query_positions,
                                                          support.source_positions).neighbours()
    return lists


def plan(call):
    """The 'numba' backend (planner.py contract): a Plan running one fused engine op, or a Decline."""
    kernel = call.kernel
    if not call.on_numpy:
        return Decline(NAME, "arrays that are not NumPy arrays (CuPy?): the Numba kernels run on the CPU")
    if isinstance(kernel, DotProductKernel):           # the attention kernel takes a bias and per-head masks
        return _plan_dot(call)
    if call.score_bias is not None:
        return Decline(NAME, "a score_bias (an N x M table of logits: the dense path adds it)")
    if call.support.per_head:
        return Decline(NAME, "a per-head mask (the fused kernels take one support for every head)")
    if isinstance(kernel, _SCANNED):
        return plan_scan(call)
    if isinstance(kernel, StencilKernel):
        return plan_stencil(call)
    if isinstance(kernel, MLPKernel):
        if kernel.activation_name not in ACTIVATIONS:
            name = kernel.activation_name or "a callable"
            return Decline(NAME, f"MLPKernel activation {name!r} (fused: {sorted(ACTIVATIONS)})")
        return _tiled(call, "mlp", "fused MLP-kernel tiles")
    return Decline(NAME, f"{type(kernel).__name__} (fused: DotProductKernel, MLPKernel, StencilKernel, "
                         "DecayKernel, SelectiveKernel)")


def _plan_dot(call):
    """DotProductKernel -> fused_attention (any normalisation; a score bias and per-head masks are
    the attention kernel's own inputs)."""
    kernel, norm = call.kernel, call.normalization
    bias = kernel.position_bias
    if bias is not None and bias.kind != "alibi":
        return Decline(NAME, f"DotProductKernel with position_bias={bias.kind!r} (an N x M table: its "
                             "gradient needs an N x M buffer)")
    if bias is not None and not _common_grid(call.support):
        return Decline(NAME, "ALiBi on positions other than the index grid p_i = i + c")
    if (bias is not None or call.score_bias is not None) and neighbour_lists(call.support) is not None:
        return Decline(NAME, "a score_bias or ALiBi with a radius support as neighbour lists (the "
                             "neighbour-list kernel takes scores only)")
    if call.weights is not None and norm == "softmax" and kernel.scale == 0:
        return Decline(NAME, "softmax quadrature weights with scale = 0")
    return _tiled(call, "dot", "fused attention tiles (FlashAttention-2)")


def describe_support(support, lists=False):
    """The support as the raw kernels will see it, in words (``lists``: neighbour_lists(support) if
    the caller has it)."""
    band = support.index_band()
    lists = neighbour_lists(support) if lists is False else lists
    if lists is not None:
        n = max(support.n, 1) * lists.batch
        ball = "radius" if support.support.radius is not None else "window (in a radius ball)"
        text = (f"{ball} neighbour lists (CSR from a k-d tree: {lists.indices.size} pairs, "
                f"{lists.indices.size / n:.1f} per query)")
    elif band is None and support.row_ranges() is not None:
        text = "per-row source ranges [lo_i, hi_i) of the support"
    elif sorts_into_ranges(support):
        text = ("per-row source ranges [lo_i, hi_i) of the sources sorted by position (one call per "
                "batch item when positions differ per item)")
    elif band is None:
        text = "the support as a dense mask (neither an index band nor row ranges here)"
    elif band == (False, None):
        text = "every pair"
    else:
        text = " and ".join(([] if not band[0] else ["the causal band j <= i"])
                            + ([] if band[1] is None else [f"the window |i - j| <= {band[1]}"]))
    return text + ("" if support.mask is None else ", with the user's mask")


def pays_from(family, pairs, itemsize):
    """(pays, why_not): whether N M pairs reach the measured crossover MIN_PAIRS of this family."""
    need = MIN_PAIRS[family, itemsize]
    return pairs >= need, f"N M = {pairs} pairs < {need}, where the dense path is faster"


def _tiled(call, family, what):
    pays, why_not = pays_from(family, call.pairs, call.dtype.itemsize)
    run = _dot if family == "dot" else _mlp
    lists = neighbour_lists(call.support)
    if lists is not None:
        what = what.split(" tiles")[0]               # "fused attention" / "fused MLP-kernel"
        mask = call.support.mask                       # (1|B, N, M) -> (1|B, 1, N, M); per head as given
        mask = mask[:, None] if mask is not None and mask.ndim == 3 else mask
        go = lambda: run_in_cell_order(call, lists, mask,  # points in cell order: cache-friendly gathers
                                       lambda moved, relabelled, m: run(moved, False, None, m, None, relabelled))
        return Plan(NAME, go, f"{what} over {describe_support(call.support, lists)}", pays, why_not)
    if sorts_into_ranges(call.support):
        return Plan(NAME, lambda: run_sorted(call, lambda sub: run(sub, *support_args(sub.support))),
                    f"{what} over {describe_support(call.support, None)}", pays, why_not)
    return Plan(NAME, lambda: run(call, *support_args(call.support)),
                f"{what} over {describe_support(call.support, None)}", pays, why_not)


def _dot(call, causal, window, mask, ranges, lists=None):
    q, k, v, mode, keep = dot_operands(call)
    slopes = None if call.kernel.position_bias is None else call.kernel.position_bias.slopes
    excluded = None
    if keep is not None and not keep.all():
        if lists is not None:                                  # read at the listed pairs
            excluded = keep
        else:
            mask = keep if mask is None else mask & keep
    if lists is not None:
        out = neighbour_attention(q, k, v, scale=call.kernel.scale, lists=pair_lists(lists, mask, excluded),
                                  normalization=mode)
    else:
        out = fused_attention(q, k, v, scale=call.kernel.scale, bias=call.score_bias, alibi_slopes=slopes,
                              causal=causal, window=window, mask=mask, normalization=mode, ranges=ranges)
    return unfold(out, mode, call.normalization)


def _mlp(call, causal, window, mask, ranges, lists=None):
    a, b, x, y, W, W2, b2, act = call.kernel.factors(call.proj)
    values, w, normalization = call.values, mlp_weights(call), call.normalization
    if lists is not None:
        return neighbour_mlp(a, b, x, y, W, W2, b2, values, w, act=act, lists=pair_lists(lists, mask),
                             normalization=normalization)
    return fused_mlp(a, b, x, y, W, W2, b2, values, w, act=act, causal=causal, window=window, mask=mask,
                     normalization=normalization, ranges=ranges)
