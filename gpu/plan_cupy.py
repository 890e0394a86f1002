"""The 'cupy' backend of IntegralTransform: ``plan(call)`` maps a planner.TransformCall on CuPy float16
arrays onto the tensor-core kernels (CUDA C++ through CuPy's RawModule), or says why it cannot (a
Decline). 'auto' asks it before 'cuda' (planner._BUILTIN's order), so float16 data on a GPU take the
tensor cores and everything else goes on to the numba-CUDA kernels or the CPU backends.

Accepted:
  DotProductKernel -> attention_cupy.cupy_attention (FlashAttention-2 on mma.sync), when
      normalization='softmax', the data are float16, the head dim d is 64 or 128 and the values have
      the same width d, and the support is an index band on the integer grid (every pair, causal
      j <= i, a window |i - j| <= w, or both: support.SupportPlan.index_band; the key tiles outside the
      band are skipped), with no score bias, position bias (ALiBi, T5, learned), user mask or
      quadrature weights;
  MLPKernel -> mlp_cupy.cupy_mlp (the tensor-core MLP kernel, same arguments as
      gpu.engine_ops.cuda_mlp, the support as gpu/plan.py passes it) on float16 data with an
      activation of fused._tiles.ACTIVATIONS, when that module can be imported and its
      ``problem(R, K, H, dv, ...)`` (if it has one) finds nothing it lacks.

Declined, in words: NumPy data; dtypes other than float16 (bfloat16 data reach the kernels only
through attention_cupy's wrappers: the engine has no bfloat16 dtype); no CuPy, no device, or compute
capability below 8.0 (cp.async and the bf16 mma need sm_80); kernels other than the two above; and
for attention every option the kernel does not take. Quadrature weights decline rather than fold:
gpu/plan.py folds them under softmax as a log-weight key column, which makes the head dim d + 1.
Accepted plans always ``pay``: the dense/fused crossover on a device is not measured yet.

Importing this module imports no CuPy: the device is looked at when a plan runs.
"""
import importlib

import numpy as np

from itnet_np.errors import ConfigError
from itnet_np.transform.fused._tiles import ACTIVATIONS
from itnet_np.transform.kernels.dot import DotProductKernel
from itnet_np.transform.kernels.mlp import MLPKernel
from itnet_np.transform.planner import Decline, Plan

from .attention_cupy import HEAD_DIMS, MAX_GRID_Y, attention_tiles

NAME = "cupy"
MIN_CAPABILITY = (8, 0)
MLP_MODULE = "itnet_np.gpu.mlp_cupy"


def plan(call):
    """The 'cupy' backend (planner.py contract): a Plan running one tensor-core engine op, or a Decline."""
    if call.on_numpy:
        return Decline(NAME, "the data are NumPy arrays; the 'cupy' backend needs CuPy float16 arrays on a GPU")
    kernel = call.kernel
    if not isinstance(kernel, (DotProductKernel, MLPKernel)):
        return Decline(NAME, f"{type(kernel).__name__} (tensor-core kernels: DotProductKernel, MLPKernel)")
    if call.dtype != np.float16:
        return Decline(NAME, f"{call.dtype} data: the tensor-core kernels take float16; backend 'cuda' runs "
                             "float32 and float64")
    reason = device_problem()
    if reason:
        return Decline(NAME, reason)
    return _plan_dot(call) if isinstance(kernel, DotProductKernel) else _plan_mlp(call)


def device_problem():
    """'' when CuPy sees a device of compute capability 8.0 or newer, else the reason in words."""
    from ._rawmodule import cupy
    try:
        cp = cupy()
    except ConfigError as exc:
        return str(exc)
    major, minor = divmod(int(cp.cuda.Device().compute_capability), 10)     # CuPy gives e.g. '90'
    if (major, minor) < MIN_CAPABILITY:
        return (f"compute capability {major}.{minor}: the tensor-core kernels need {MIN_CAPABILITY[0]}."
                f"{MIN_CAPABILITY[1]} or newer (cp.async, bfloat16 mma)")
    return ""


def device_shared_limit():
    """Bytes of shared memory one block may use on the current device."""
    from ._rawmodule import cupy
    from .attention_cupy import shared_limit
    return shared_limit(cupy())


def _plan_dot(call):
    kernel, support = call.kernel, call.support
    if call.normalization != "softmax":
        return Decline(NAME, f"normalization={call.normalization!r}: the tensor-core attention runs 'softmax' "
                             "only (backend 'cuda' runs 'sum' and 'none')")
    if kernel.position_bias is not None:
        return Decline(NAME, f"DotProductKernel with position_bias={kernel.position_bias.kind!r} "
                             "(the tensor-core attention takes none; backend 'cuda' takes ALiBi)")
    if call.score_bias is not None:
        return Decline(NAME, "a score_bias (an N x M table of logits; backend 'cuda' takes it)")
    if support.mask is not None:
        return Decline(NAME, "a user mask (the tensor-core attention takes the index band only; backend "
                             "'cuda' takes masks)")
    if call.weights is not None:
        return Decline(NAME, "quadrature weights: under softmax they fold into a log-weight key column, "
                             "head dim d + 1, which the 64 / 128 tiles do not take (backend 'cuda' folds them)")
    band = support.index_band()
    if band is None:
        return Decline(NAME, "a support that is not an index band on the integer grid (strictly causal, "
                             "shifted or off-grid positions, or a local support in D > 1); backend 'cuda' "
                             "takes row ranges")
    q, v = call.proj.query["q"], call.values
    d, width = q.shape[-1], v.shape[-1]
    if d not in HEAD_DIMS:
        return Decline(NAME, f"head dim {d} (the tensor-core tiles take {' or '.join(map(str, HEAD_DIMS))})")
    if width != d:
        return Decline(NAME, f"values of width {width} with head dim {d} (the kernels' V tile has the q, k width)")
    if v.shape[0] * v.shape[1] > MAX_GRID_Y:
        return Decline(NAME, f"B H = {v.shape[0] * v.shape[1]} batch-heads (the grid takes {MAX_GRID_Y})")
    try:
        limit = device_shared_limit()
        tiles = attention_tiles(d, "float16", limit)
        attention_tiles(d, "float16", limit, backward=True)
    except ConfigError as exc:
        return Decline(NAME, str(exc))
    causal, window = band

    def go():
        from itnet_np.transform.fused.weight_folding import dot_operands

        from .attention_cupy import cupy_attention
        qh, kh, vh, _, _ = dot_operands(call)          # no weights: q, k as (B, H, N|M, d), v as given
        return cupy_attention(qh, kh, vh, scale=kernel.scale, causal=causal, window=window)
    note = (f"tensor-core FlashAttention-2 (mma.sync, float16, {tiles.rows} x {tiles.cols} tiles) over "
            f"{_band_words(causal, window)}")
    return Plan(NAME, go, note)


def _band_words(causal, window):
    words = ([] if not causal else ["the causal band j <= i"]) + \
        ([] if window is None else [f"the window |i - j| <= {window}"])
    return " and ".join(words) or "every pair"


def _plan_mlp(call):
    kernel = call.kernel
    if kernel.activation_name not in ACTIVATIONS:
        name = kernel.activation_name or "a callable"
        return Decline(NAME, f"MLPKernel activation {name!r} (tensor-core MLP kernel: {sorted(ACTIVATIONS)})")
    if call.score_bias is not None:
        return Decline(NAME, "a score_bias for MLPKernel")
    if call.support.per_head:
        return Decline(NAME, "a per-head mask for MLPKernel")
    try:
        module = importlib.import_module(MLP_MODULE)
        op = module.cupy_mlp
    except (ImportError, AttributeError) as exc:
        return Decline(NAME, f"the tensor-core MLP kernel is not available ({MLP_MODULE}.cupy_mlp: "
                             f"{type(exc).__name__}: {exc}); backend 'cuda' runs MLPKernel")
    from itnet_np.transform.fused.numba_plans import support_args
    causal, window, mask, ranges = support_args(call.support, tighten=False)   # as gpu/plan.py passes it
    problem = getattr(module, "problem", None)        # the module's own limits, in words
    if problem is not None:
        reason = problem(call.proj.query["x"].shape[-1], kernel.hidden, kernel.heads, call.values.shape[-1],
                         dtype=call.dtype, act=kernel.activation_name, normalization=call.normalization, mask=mask,
                         ranges=ranges, shared_limit=device_shared_limit())
        if reason:
            return Decline(NAME, f"MLPKernel: {reason}")

    def go():
        from itnet_np.transform.fused.weight_folding import mlp_weights
        a, b, x, y, W, W2, b2, act = kernel.factors(call.proj)
        return op(a, b, x, y, W, W2, b2, call.values, mlp_weights(call), act=act, causal=causal, window=window,
                  mask=mask, normalization=call.normalization, ranges=ranges)
    return Plan(NAME, go, "tensor-core MLP-kernel tiles (mma.sync, float16)")
