"""The 'cuda' backend of IntegralTransform: ``plan(call)`` maps a planner.TransformCall on CuPy arrays
onto one GPU engine op (engine_ops.py), or says why it cannot (a Decline).

The mapping follows the CPU backend (itnet_np.transform.fused.numba_plans; read its docstring for the
algebra): DotProductKernel -> cuda_attention (weights folded as on the CPU, by fused.weight_folding:
into v for 'none', appended as a column for 'sum', as a log-weight key column under softmax, the
sources with w = 0 masked without a host check; ALiBi on the index grid; a score bias and
per-head masks as the kernel's own inputs), MLPKernel -> cuda_mlp with kernel.factors(proj),
SelectiveKernel / DecayKernel -> cuda_selective_scan / cuda_decay_scan (the chunked scans; 'none',
causal supports), StencilKernel -> cuda_stencil through the CPU plan's own preparation
(fused.stencil_plan.plan_stencil with the GPU op: tap indices, the support on the taps, 'sum' as a
ones column). The support goes as the index band (tiles skipped), else per-row source ranges, else
the dense mask.

Declined, in words: NumPy data (the CPU backends take those; 'auto' then picks 'numba' or 'dense'),
no CUDA device or numba-cuda, what the banded stencil declines on the CPU too ('softmax', positions
that are not integers, sources sharing a position, grids too large for int64 keys), and everything
the GPU kernels do not cover yet: the scans with a mask / window / radius, LowRankKernel, SumKernel,
T5 / learned position biases, activations outside _tiles.ACTIVATIONS, ALiBi off the grid, softmax
weights with scale 0. Accepted plans always ``pay``: the dense/fused crossover on a device is not measured yet.

Importing this module imports neither CuPy nor numba.cuda: both load when a plan runs.
"""
from itnet_np.autograd import ops
from itnet_np.autograd.backend import xp_of
from itnet_np.autograd.ops._util import raw
from itnet_np.transform.fused._tiles import ACTIVATIONS
from itnet_np.transform.fused.weight_folding import dot_operands, mlp_weights, unfold
from itnet_np.transform.kernels.decay import DecayKernel
from itnet_np.transform.kernels.dot import DotProductKernel
from itnet_np.transform.kernels.mlp import MLPKernel
from itnet_np.transform.kernels.selective import SelectiveKernel
from itnet_np.transform.kernels.stencil import StencilKernel
from itnet_np.transform.planner import Decline, Plan
from itnet_np.transform.positions import GRID_TOL

NAME = "cuda"


def plan(call):
    """The 'cuda' backend (planner.py contract): a Plan running one GPU engine op, or a Decline."""
    if call.on_numpy:
        return Decline(NAME, "the data are NumPy arrays; the 'cuda' backend needs CuPy arrays "
                             "(move the model and inputs with .to('cuda'))")
    reason = device_problem()
    if reason:
        return Decline(NAME, reason)
    kernel = call.kernel
    if isinstance(kernel, DotProductKernel):
        return _plan_dot(call)
    if call.score_bias is not None:
        return Decline(NAME, "a score_bias for a kernel other than DotProductKernel")
    if call.support.per_head:
        return Decline(NAME, "a per-head mask for a kernel other than DotProductKernel")
    if isinstance(kernel, (SelectiveKernel, DecayKernel)):
        return _plan_scan(call)
    if isinstance(kernel, StencilKernel):
        from itnet_np.transform.fused.stencil_plan import plan_stencil
        return plan_stencil(call, NAME, _stencil)
    if isinstance(kernel, MLPKernel):
        if kernel.activation_name not in ACTIVATIONS:
            name = kernel.activation_name or "a callable"
            return Decline(NAME, f"MLPKernel activation {name!r} (GPU kernel: {sorted(ACTIVATIONS)})")
        return _accepted(call, _mlp, "GPU MLP-kernel tiles (numba-CUDA)")
    return Decline(NAME, f"{type(kernel).__name__} (GPU kernels so far: DotProductKernel, MLPKernel, "
                         "SelectiveKernel, DecayKernel, StencilKernel)")


def device_problem():
    """'' when numba.cuda can launch kernels here, else the reason (what to install) in words."""
    from itnet_np.errors import ConfigError

    from ._cuda import require_device
    try:
        require_device()
    except ConfigError as exc:
        return str(exc)
    return ""


def _plan_dot(call):
    kernel = call.kernel
    bias = kernel.position_bias
    if bias is not None and bias.kind != "alibi":
        return Decline(NAME, f"DotProductKernel with position_bias={bias.kind!r} (an N x M table)")
    if bias is not None and not (call.support.shift is not None
                                 and abs(call.support.shift[0] - call.support.shift[1]) <= GRID_TOL):
        return Decline(NAME, "ALiBi on positions other than the index grid p_i = i + c")
    if call.weights is not None and call.normalization == "softmax" and kernel.scale == 0:
        return Decline(NAME, "softmax quadrature weights with scale = 0")
    return _accepted(call, _dot, "GPU attention tiles (numba-CUDA, FlashAttention-2)")


def _plan_scan(call):
    """SelectiveKernel / DecayKernel -> the chunked scans (selective_scan.py, decay_scan.py): 'none',
    self mode on the index grid, the kernel's own (strictly) causal support read from the descriptor
    (no mask, window or radius)."""
    from itnet_np.transform.fused.scan_plan import support_strictness
    support, proj = call.support, call.proj
    if call.normalization != "none":
        return Decline(NAME, f"normalization={call.normalization!r} (scan: 'none' only)")
    if support.n != support.m:
        return Decline(NAME, f"N = {support.n} queries against M = {support.m} sources (scan: self mode)")
    if support.shift is None or abs(support.shift[0] - support.shift[1]) > GRID_TOL:
        return Decline(NAME, "positions other than the index grid p_i = i + c")
    if isinstance(call.kernel, SelectiveKernel) and proj.query["delta"] is not proj.source["delta"]:
        return Decline(NAME, "a tile of a selective projection (the scan needs the whole sequence)")
    sup = support.support
    if support.mask is not None or sup.window is not None or sup.radius is not None:
        return Decline(NAME, "a mask, window or radius on a scan kernel (GPU: the causal supports only)")
    strict = support_strictness(call.kernel, support)

    def go():
        from .engine_ops import cuda_decay_scan, cuda_selective_scan
        kernel, v = call.kernel, call.values
        if call.weights is not None:
            v = v * ops.reshape(call.weights, tuple(call.weights.shape) + (1,))
        if isinstance(kernel, SelectiveKernel):
            loga = ops.transpose(ops.expand_dims(proj.query["delta"], -1) * kernel.state_matrix(), (0, 2, 1, 3))
            return cuda_selective_scan(loga, proj.source["B"], proj.query["C"], v, strict=strict)
        none = xp_of(raw(v)).zeros((kernel.heads, 0), raw(v).dtype)
        real = (kernel.log_rate, kernel.coef) if kernel.real_modes else (none, none)
        cplx = (kernel.log_modulus, kernel.angle, kernel.coef_re, kernel.coef_im) if kernel.complex_modes \
            else (none,) * 4
        return cuda_decay_scan(v, *real, *cplx, strict=strict)
    return Plan(NAME, go, f"a chunked {'strictly ' if strict else ''}causal scan on the GPU (numba-CUDA)")


def _stencil(table, w, v, idx):
    from .engine_ops import cuda_stencil
    return cuda_stencil(table, w, v, idx)


def _accepted(call, run, what):
    def go():
        from itnet_np.transform.fused.numba_plans import support_args

        from .engine_ops import cuda_attention, cuda_mlp
        # the CPU plan's support arguments, the user's mask as given (tightening it reads it on the host)
        args = support_args(call.support, tighten=False)
        return run(call, *args, cuda_attention if run is _dot else cuda_mlp)
    return Plan(NAME, go, what)


def _dot(call, causal, window, mask, ranges, op):
    q, k, v, mode, keep = dot_operands(call)
    slopes = None if call.kernel.position_bias is None else call.kernel.position_bias.slopes
    if keep is not None:            # w = 0 masked (no host check of the weights: always applied)
        mask = keep if mask is None else mask & keep
    out = op(q, k, v, scale=call.kernel.scale, bias=call.score_bias, alibi_slopes=slopes, causal=causal,
             window=window, mask=mask, normalization=mode, ranges=ranges)
    return unfold(out, mode, call.normalization)


def _mlp(call, causal, window, mask, ranges, op):
    a, b, x, y, W, W2, b2, act = call.kernel.factors(call.proj)
    return op(a, b, x, y, W, W2, b2, call.values, mlp_weights(call), act=act, causal=causal, window=window,
              mask=mask, normalization=call.normalization, ranges=ranges)
