"""The ITNet operator: a learnable integral transform, and the kernels it is built from.

    y_i = sum_h W_O^h sum_{j in S(i)} n_h(w_j, K^h(p_i, p_j, f_i, f_j)) W_V^h f_j  +  W_skip f_i + b

Design note
-----------
*Pieces.* :class:`IntegralTransform` (operator.py) owns the value/output/skip maps and composes four
independent choices: a **kernel** (kernels/), a **quadrature** w_j (quadrature.py: uniform, mean,
learned, or given per call), a **normalisation** n_h (normalization.py: none, sum = Nadaraya-Watson,
softmax = attention, with a stable log-sum-exp) and a **support** S(i) (support.py: causal, strictly
causal, window, radius, explicit mask, per head if needed; empty rows give zeros). Per call, an
additive ``score_bias`` c^h_ij joins the kernel's scores (attention masks, relative tables). Positions are (N, D) or (B, N, D), or
implied by a 1-D grid (positions.py, ``grid_positions`` for D-dimensional grids). Everything is
composed from engine ops, so autograd (any order) flows through the dense reference path.

*Kernel interface.* Every kernel splits into per-point work and a per-pair combine:
``proj = kernel.project(query, source)`` computes per-point arrays (a :class:`Projection` whose
``query`` dict runs over N on axis 1 and ``source`` dict over M), ``kernel.scores(proj)`` combines
them into dense scores (B, H, N, M), and ``kernel.scores(proj.tile(i, j))`` is the (i, j) tile.
``kernel.source_weights(proj)`` optionally contributes quadrature weights (B, H, M). The MLPKernel
additionally exposes its first layer in factorised form, ``kernel.factors(proj) -> (a, b, x, y, W,
W2, b2, act)`` with pre_ijk = a_ik + b_jk + sum_r W_kr x_ir y_jr, s^h_ij = sum_k W2_hk act(pre_ijk) + b2_h.

*Support descriptor.* Per call the operator builds one ``support.SupportPlan`` (O(N + M)): the
configured kind, window and radius, the user's mask as given, whether the positions are the index
grid and their shift (``positions.grid_shift``, the package's one grid check), and from these the
index band (j <= i, |i - j| <= w), per-row source ranges [lo_i, hi_i) (sorted 1-D positions, by
binary search) or, for a radius, CSR neighbour lists from a k-d tree (neighbours.py, any D). The
fused kernels take the band or the row ranges directly; only the dense reference (and a fused call
whose support is neither, e.g. a radius in D > 1) forms the N x M mask, ``plan.dense_mask()``.

*Backends* (planner.py). The operator packs kernel, projections, values, weights, support descriptor,
normalisation and score bias into one ``TransformCall``; a backend is ``plan(call) -> Plan | Decline``
('dense', the reference, accepts everything; 'numba' is fused/numba_plans.py; more join with
``register_backend(name, plan)``). ``backend='auto'`` runs the first non-dense plan that is accepted
and pays at this size, else dense; an explicit backend that declines raises ConfigError with the
reason; ``layer.explain(x, ...)`` gives the decision and every backend's answer in words. Fused
plans work tile by tile from the projection (``proj.tile`` or ``kernel.factors``), keep a running
max and sum for softmax, and are tested for parity against 'dense'.

*The path of one fused call* (dot-product kernel, softmax, causal):
``IntegralTransform.forward`` -> ``_call`` (``_prepare``: ``Support.plan`` -> SupportPlan; the values)
-> ``planner.plan(name, call)`` -> ``fused.numba_plans.plan(call)`` -> ``Plan.run()`` ->
``numba_plans._dot`` (band from the descriptor) -> ``fused.engine_ops.fused_attention`` (one engine
node) -> ``fused.attention_numba.attention_forward`` -> the tiled Numba kernel. The word "backend"
alone means this choice of evaluator; ``autograd/backend.py`` is the array module (NumPy/CuPy).

*Implicit mode.* :class:`Volterra` (volterra.py) solves y = Phi(T_K[y], x) with T_K made strictly
causal, by forward substitution or Picard iteration; ``shift_transform`` is the lag-1 T_K of
Elman/GRU/LSTM recurrences.
"""
from . import planner  # noqa: F401
from .kernels import (  # noqa: F401
    DecayKernel,
    DotProductKernel,
    Kernel,
    LowRankKernel,
    MLPKernel,
    Points,
    Projection,
    RelativeBias,
    SelectiveKernel,
    StencilKernel,
    SumKernel,
    alibi_slopes,
    conv_offsets,
    t5_bucket,
)
from .montecarlo import MonteCarlo  # noqa: F401
from .normalization import NORMALIZATIONS, transform_matrix  # noqa: F401
from .operator import IntegralTransform  # noqa: F401
from .planner import Decline, Plan, TransformCall, available_backends, register_backend  # noqa: F401
from .positions import as_positions, grid_positions, relative_offsets  # noqa: F401
from .quadrature import QUADRATURES, LearnedQuadrature  # noqa: F401
from .sdpa import scaled_dot_product_attention  # noqa: F401
from .support import Support  # noqa: F401
from .volterra import Volterra, shift_transform  # noqa: F401
