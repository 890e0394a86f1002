"""The scan form of the recurrence kernels: DecayKernel and SelectiveKernel in O(N state), not O(N^2).

Contract (planner.py): ``plan_scan(call)`` -> a Plan whose run() gives (B, H, N, d)
equals the dense reference, with gradients. With normalization 'none' the transform of head h is

    y_t = sum_{s <= t (s < t when strict)} K^h(t, s) w_s v_s

and both kernels are causal exponentials in the lag, so y is a linear recurrence (scan_numba.py):

DecayKernel: K(t, s) = sum_n c_n lam_n^{t-s} + sum_m 2 Re(g_m mu_m^{t-s}) -> decay_scan(w v, params).
SelectiveKernel: K(t, s) = C_t . (B_s * exp(A_h (tau_t - tau_s))) -> selective_scan(A_h Delta_th, B, C,
    w v), one decay factor exp(A_hn Delta_th) per step (clock differences only; w already holds
    Delta_s when delta_as_weight, through the operator's combine_weights).

Every input is an engine Tensor (the kernel's parameters, its projections Delta, B, C, the values and
weights), so gradients reach features and kernel parameters through the engine; each scan is one
graph node (twice_differentiable=False, like fused/engine_ops.py).

Supported (``plan_scan``): normalization 'none'; a support (read from the SupportPlan: the
configured kind on the index grid, or a user's mask (1|B, N, N)) that keeps every pair
the kernel's own support keeps (then it changes nothing), or, for a non-strict kernel, exactly the
strictly causal pairs of it (then the scan drops lag 0). At call time (ConfigError otherwise):
NumPy arrays, N == M, and positions on the index grid p_i = i + c (the kernels' lag t - s is a
position difference; the scan steps by index).
"""
import numpy as np

from ..._numba import announce
from ...autograd import ops
from ...autograd.ops._util import raw
from ...autograd.primitive import primitive
from ...errors import ConfigError
from ..kernels.decay import DecayKernel
from ..kernels.selective import SelectiveKernel
from ..positions import GRID_TOL
from .scan_numba import decay_backward, decay_forward, selective_backward, selective_forward

__all__ = ["decay_scan", "plan_scan", "run_scan", "selective_scan"]

# ------------------------------------------------------------------------------------- primitives

def _c(a):
    return np.ascontiguousarray(a)


def _run(family, kernel, *args):
    """kernel(*args) on C-contiguous arrays, with the first-compilation notice."""
    args = tuple(_c(a) if isinstance(a, np.ndarray) else a for a in args)
    announce(family, kernel, args)
    return kernel(*args)


def _selective_forward(loga, Bm, Cm, v, *, strict):
    return _run("selective scan forward", selective_forward, loga, Bm, Cm, v, strict)


def _selective_vjp(g, out, needs, loga, Bm, Cm, v, *, strict):
    return _run("selective scan backward", selective_backward, loga, Bm, Cm, v, g, strict)


_selective = primitive(_selective_forward, "scan_selective",
                       twice_differentiable=False).defvjp_all(_selective_vjp)


def selective_scan(loga, Bm, Cm, v, *, strict=False):
    """One engine node: loga (B, H, N, S), Bm, Cm (B, N, S), v (B, H, N, d) -> y (B, H, N, d)."""
    return _selective(loga, Bm, Cm, v, strict=bool(strict))


def _decay_forward(v, log_rate, coef, log_mod, angle, coef_re, coef_im, *, strict):
    return _run("decay scan forward", decay_forward, v, log_rate, coef, log_mod, angle, coef_re, coef_im,
                strict)


def _decay_vjp(g, out, needs, v, log_rate, coef, log_mod, angle, coef_re, coef_im, *, strict):
    return _run("decay scan backward", decay_backward, v, log_rate, coef, log_mod, angle, coef_re, coef_im,
                g, strict)


_decay = primitive(_decay_forward, "scan_decay", twice_differentiable=False).defvjp_all(_decay_vjp)


def decay_scan(v, log_rate, coef, log_mod, angle, coef_re, coef_im, *, strict=False):
    """One engine node: v (B, H, N, d), real modes (H, nr), complex modes (H, nc) -> (B, H, N, d)."""
    return _decay(v, log_rate, coef, log_mod, angle, coef_re, coef_im, strict=bool(strict))


# ----------------------------------------------------------------------------------------- backend

def _kernel_strict(kernel):
    return bool(getattr(kernel, "strict", False))


def scan_strictness(kernel, mask):
    """Whether the scan drops lag 0 under ``mask`` (raw bool (1|B, N, M) or None); None when the mask
    cuts the kernel's causal support any other way (then the scan cannot run it)."""
    base = _kernel_strict(kernel)
    if mask is None:
        return base
    mask = np.asarray(mask)
    n, m = mask.shape[-2:]
    if n != m or mask.ndim != 3:
        return None
    # the first dropped source of each row (n when none): every s < t must be kept
    first_dropped = np.where(mask.all(-1), n, mask.argmin(-1))
    if not (first_dropped >= np.arange(n)).all():
        return None
    diagonal = np.diagonal(mask, axis1=-2, axis2=-1)
    if base or diagonal.all():
        return base
    return True if not diagonal.any() else None


def support_strictness(kernel, support):
    """scan_strictness for a SupportPlan: from the descriptor alone (O(1)) for a configured support
    on the exact index grid without a user mask; from the dense mask otherwise (a user's mask is
    N x M already)."""
    base, sup = _kernel_strict(kernel), support.support
    if support.mask is None and sup.window is None and sup.radius is None and \
            (sup.kind == "full" or support.offset == 0):
        return base if sup.kind in ("full", "causal") else True
    if support.mask is not None and type(support.mask) is not np.ndarray:
        return None
    return scan_strictness(kernel, support.dense_mask())


def _decline(kernel, normalization, weights, support):
    if not isinstance(kernel, (DecayKernel, SelectiveKernel)):
        return f"{type(kernel).__name__} (scan: DecayKernel, SelectiveKernel)"
    if normalization != "none":
        return f"normalization={normalization!r} (scan: 'none' only)"
    if support.mask is not None and type(support.mask) is not np.ndarray:
        return "a mask that is not a NumPy array (the scan runs on the CPU)"
    return None


def _decline_call(kernel, proj, values, weights, support, normalization):
    reason = _decline(kernel, normalization, weights, support)
    if reason:
        return reason
    if type(raw(values)) is not np.ndarray:
        return "arrays that are not NumPy arrays (the scan runs on the CPU)"
    n, m = support.n, support.m
    if n != m:
        return f"N = {n} queries against M = {m} sources (scan: self mode, N == M)"
    if support.shift is None or abs(support.shift[0] - support.shift[1]) > GRID_TOL:
        return "positions other than the index grid p_i = i + c"
    if isinstance(kernel, SelectiveKernel) and proj.query["delta"] is not proj.source["delta"]:
        return "a tile of a selective projection (the scan needs the whole sequence)"
    if support_strictness(kernel, support) is None:
        return "a mask other than the (strictly) causal support the kernel implies"
    return None


def plan_scan(call, name="numba"):
    """The scan's answer to a planner.TransformCall: a Plan (the O(N state) scan) or a Decline."""
    from ..planner import Decline, Plan
    args = (call.kernel, call.proj, call.values, call.weights, call.support, call.normalization)
    reason = _decline_call(*args)
    if reason:
        return Decline(name, reason)
    strict = support_strictness(call.kernel, call.support)
    return Plan(name, lambda: _scan(*args[:4], strict),
                f"an O(N state) {'strictly ' if strict else ''}causal scan of the recurrence")


def run_scan(kernel, proj, values, weights, support, normalization):
    """The scan on raw call arguments; ConfigError for a call the scan cannot run."""
    reason = _decline_call(kernel, proj, values, weights, support, normalization)
    if reason:
        raise ConfigError(f"scan backend cannot run {reason}; use backend='auto' or backend='dense'")
    return _scan(kernel, proj, values, weights, support_strictness(kernel, support))


def _scan(kernel, proj, values, weights, strict):
    v = values
    if weights is not None:
        v = values * ops.reshape(weights, tuple(weights.shape) + (1,))     # w_s v_s, (B, H, N, d)
    if isinstance(kernel, SelectiveKernel):
        delta = proj.query["delta"]                                          # (B, N, H)
        loga = ops.transpose(ops.expand_dims(delta, -1) * kernel.state_matrix(), (0, 2, 1, 3))
        return selective_scan(loga, proj.source["B"], proj.query["C"], v, strict=strict)
    dtype = raw(values).dtype
    none = np.zeros((kernel.heads, 0), dtype)
    real = (kernel.log_rate, kernel.coef) if kernel.real_modes else (none, none)
    cplx = (kernel.log_modulus, kernel.angle, kernel.coef_re, kernel.coef_im) if kernel.complex_modes \
        else (none, none, none, none)
    return decay_scan(v, *real, *cplx, strict=strict)
