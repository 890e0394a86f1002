"""Mamba's selective scan (S6) and Mamba-2's SSD as ITNet integral transforms (docs/theory.md §9, §10).

Both are causal, unnormalised transforms y_t = sum_{s <= t} w_s K(t, s) v_s (+ D u_t) on the grid
p_t = t with the data-dependent SelectiveKernel; tests/proofs/test_mamba.py proves each one.

**Selective scan (S6).** Mamba's recursion x_t = exp(Delta_t A) x_{t-1} + Delta_t B_t u_t (ZOH for A,
Euler for B: mamba issue #114), y_t = C_t . x_t, out = y + D u, out * silu(z), unrolls to

    y_t = sum_{s<=t} [sum_n C_tn B_sn exp(A_n (tau_t - tau_s))] Delta_s u_s,
    tau_t - tau_s = sum_{r=s+1}^t Delta_r

i.e. the SelectiveKernel with quadrature weight Delta_s and A given directly (``direct_A``: the
reference accepts any real A, not only -exp(A_log) < 0). Its features are f_t = [u_t, delta_t, B_t,
C_t] and every projection is a 0/1 selection (exact): W_dt picks delta (b_dt = delta_bias, softplus
as torch, threshold 20), W_B / W_C pick B_t / C_t, W_V picks u, W_skip = [diag(D) | 0]. Only clock
differences are exponentiated (exp(A tau_t) exp(-A tau_s) overflows), taken as segment sums. B and C
are shared by a group of channels, so G groups (B of shape (B, G, N, L), or G = D for a constant
(D, N) B) use G transforms.

**SSD (Mamba-2).** Y = (L o C B^T) X with L_ts = exp(sum_{r=s+1}^t A_r): per head the same kernel with
state decay A = -1, clock increments Delta_t = -A_t and unit quadrature (``delta_as_weight=False``;
the dt of Mamba-2 is already folded into X and A), one transform per head since B, C are per head.
The clock difference is exactly ssd_minimal's stable ``segsum``.

Each transform's parameters are the selections above, derived from the given arrays/Tensors and
supplied per call (``functional_call``), so gradients reach u, delta, A, B, C, D, z and delta_bias.
"""
import math

import numpy as np

from ..autograd import ops
from ..autograd.ops._util import raw
from ..autograd.tensor import Tensor
from ..errors import ConfigError, ShapeError
from ..nn import functional as F
from ..nn.module import functional_call, override_parameters
from ..transform import IntegralTransform, SelectiveKernel
from ._common import as_tensor, diag, dtype_of, shape_of

__all__ = ["selective_scan_as_itnet", "selective_scan_from_itnet", "selective_scan_matrix", "ssd_as_itnet",
           "ssd_matrix"]


# ----- selective scan (Mamba S6) --------------------------------------------------------------------
def _bc_groups(M, name, n_batch, dim, n_state, length):
    """(G, g -> (B, N, L) Tensor) for B or C given as (D, N), (B, N, L) or (B, G, N, L)."""
    shape = tuple(M.shape)
    if shape == (dim, n_state):
        return dim, lambda g: ops.broadcast_to(ops.reshape(M[g], (1, n_state, 1)), (n_batch, n_state, length))
    if shape == (n_batch, n_state, length):
        return 1, lambda g: M
    if len(shape) == 4 and shape[0] == n_batch and shape[2:] == (n_state, length) and dim % shape[1] == 0:
        return shape[1], lambda g: M[:, g]
    raise ShapeError(f"selective_scan: {name} must be (D, N) = {(dim, n_state)}, (B, N, L) = "
                     f"{(n_batch, n_state, length)} or (B, G, N, L) with G dividing D = {dim}; got {shape}")


def _selective_groups(u, delta, A, B, C, D, delta_bias, delta_softplus):
    """Yield (transform, its parameters, features (B, L, 2 Dg + 2 N)) per group of channels sharing
    B and C."""
    if np.iscomplexobj(raw(A)):
        raise ConfigError("selective_scan: A must be real (mamba's complex-A variant is not supported; the "
                          "reference does not transcribe it either)")
    dtype = dtype_of(u, delta, A, B, C, D, delta_bias)
    u, delta, A, B, C = (as_tensor(a, dtype) for a in (u, delta, A, B, C))
    if A.ndim != 2:
        raise ShapeError(f"selective_scan: A must be a real (D, N) array, got shape {tuple(A.shape)}")
    if u.ndim != 3 or u.shape[1] != A.shape[0] or tuple(delta.shape) != tuple(u.shape):
        raise ShapeError(f"selective_scan: u and delta must be (B, D, L) with D = {A.shape[0]} (rows of A); "
                         f"got u {tuple(u.shape)}, delta {tuple(delta.shape)}")
    (n_batch, dim, length), n_state = u.shape, A.shape[1]
    for name, v in (("D", D), ("delta_bias", delta_bias)):
        if v is not None and shape_of(v) != (dim,):
            raise ShapeError(f"selective_scan: {name} must be (D,) = {(dim,)}, got {shape_of(v)}")
    gb, get_b = _bc_groups(B, "B", n_batch, dim, n_state, length)
    gc, get_c = _bc_groups(C, "C", n_batch, dim, n_state, length)
    groups = gb * gc // math.gcd(gb, gc)
    width = dim // groups
    cols = 2 * width + 2 * n_state
    sel = lambda rows, start: np.eye(rows, cols, start, dtype=dtype)
    T = lambda a: ops.transpose(a, (0, 2, 1))
    for g in range(groups):
        ch = slice(g * width, (g + 1) * width)
        feats = ops.concatenate([T(u[:, ch]), T(delta[:, ch]), T(get_b(g * gb // groups)),
                                 T(get_c(g * gc // groups))], axis=-1)
        kernel = SelectiveKernel(cols, width, state_dim=n_state, dt_softplus=delta_softplus, direct_A=True,
                                 dtype=dtype)
        op = IntegralTransform(cols, width, kernel, embed_dim=width, support="causal", skip=D is not None,
                               bias=False, dtype=dtype)
        maps = {"kernel.W_dt": sel(width, width), "kernel.W_B": sel(n_state, 2 * width),
                "kernel.W_C": sel(n_state, 2 * width + n_state), "kernel.A": A[ch],
                "kernel.b_dt": np.zeros(width, dtype) if delta_bias is None
                else as_tensor(delta_bias, dtype)[ch],
                "W_V": sel(width, 0), "W_O": np.eye(width, dtype=dtype)}
        if D is not None:
            maps["W_skip"] = ops.concatenate([diag(as_tensor(D, dtype)[ch]),
                                              Tensor(np.zeros((width, cols - width), dtype))], axis=1)
        yield op, maps, feats


def selective_scan_as_itnet(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Mamba's ``selective_scan_ref`` computed by SelectiveKernel integral transforms (module docstring).

    u, delta, z (B, D, L); A (D, N) real; B, C (D, N) | (B, N, L) | (B, G, N, L); D, delta_bias (D,).
    Arrays or Tensors (gradients flow to every Tensor). Returns out (B, D, L) as a Tensor.
    """
    ys = [functional_call(op, maps, f)
          for op, maps, f in _selective_groups(u, delta, A, B, C, D, delta_bias, delta_softplus)]
    out = ops.transpose(ops.concatenate(ys, axis=-1), (0, 2, 1))
    return out if z is None else out * F.silu(as_tensor(z, out.dtype))


def selective_scan_matrix(delta, A, B, C, delta_bias=None, delta_softplus=False):
    """M (B, D, L, L) with y[b, d] = M[b, d] @ u[b, d] (before D and z): Delta-weighted S6 kernel."""
    zeros = np.zeros(shape_of(delta), dtype_of(delta, A, B, C))
    mats = []
    for op, maps, f in _selective_groups(zeros, delta, A, B, C, None, delta_bias, delta_softplus):
        with override_parameters(op, maps):
            mats.append(op.kernel_matrix(f))
    return ops.concatenate(mats, axis=1)


def selective_scan_from_itnet(transform, x):
    """Reverse map: an IntegralTransform with a SelectiveKernel (Delta as quadrature weight,
    normalization 'none', uniform quadrature) on features x (B, L, Cs) is Mamba's scan on its
    projections. Returns (kwargs, W_O, W_skip, b) with transform(x) = selective_scan_ref(**kwargs)^T
    W_O^T + x W_skip^T + b (arrays; W_skip / b None when absent): u = W_V x (+ b_V), delta = W_dt x,
    delta_bias = b_dt, B = W_B x, C = W_C x, A (= -exp(A_log) unless direct_A); a head of width d is
    d Mamba channels sharing delta and A."""
    kernel = transform.kernel
    if type(kernel) is not SelectiveKernel or not kernel.delta_as_weight \
            or transform.normalization != "none" or transform.quadrature != "uniform":
        raise ConfigError("selective_scan_from_itnet: expected an IntegralTransform with a SelectiveKernel "
                          "(delta_as_weight=True), normalization='none' and quadrature='uniform'")
    f = np.asarray(raw(x), dtype=np.float64)
    get = lambda a: None if a is None else np.asarray(raw(a))
    d = transform.head_dim
    u = f @ get(transform.W_V).T + (0.0 if transform.b_V is None else get(transform.b_V))
    A = get(kernel.state_matrix())
    kwargs = {"u": np.moveaxis(u, 1, 2), "delta": np.repeat(np.moveaxis(f @ get(kernel.W_dt).T, 1, 2), d, 1),
              "A": np.repeat(A, d, 0), "B": np.moveaxis(f @ get(kernel.W_B).T, 1, 2),
              "C": np.moveaxis(f @ get(kernel.W_C).T, 1, 2), "delta_bias": np.repeat(get(kernel.b_dt), d),
              "delta_softplus": kernel.dt_softplus}
    return kwargs, get(transform.W_O), get(transform.W_skip), get(transform.b)


# ----- SSD (Mamba-2) ------------------------------------------------------------------------------
def _ssd_heads(X, A, B, C):
    """Yield (transform, its parameters, features (B, L, P + 1 + 2 N)) per head."""
    dtype = dtype_of(X, A, B, C)
    X, A, B, C = (as_tensor(a, dtype) for a in (X, A, B, C))
    lead = tuple(X.shape[:3])
    if X.ndim != 4 or tuple(A.shape) != lead or B.ndim != 4 or tuple(B.shape[:3]) != lead \
            or tuple(C.shape) != tuple(B.shape):
        raise ShapeError(f"ssd: expected X (B, L, H, P), A (B, L, H), B and C (B, L, H, N); got "
                         f"X {tuple(X.shape)}, A {tuple(A.shape)}, B {tuple(B.shape)}, C {tuple(C.shape)}")
    P, N = X.shape[3], B.shape[3]
    cols = P + 1 + 2 * N
    maps = {"kernel.W_dt": -np.eye(1, cols, P, dtype=dtype),                 # Delta_t = -A_t
            "kernel.b_dt": np.zeros(1, dtype), "kernel.A": -np.ones((1, N), dtype),   # state decay -1
            "kernel.W_B": np.eye(N, cols, P + 1, dtype=dtype),
            "kernel.W_C": np.eye(N, cols, P + 1 + N, dtype=dtype),
            "W_V": np.eye(P, cols, dtype=dtype), "W_O": np.eye(P, dtype=dtype)}
    for h in range(X.shape[2]):
        feats = ops.concatenate([X[:, :, h], A[:, :, h:h + 1], B[:, :, h], C[:, :, h]], axis=-1)
        kernel = SelectiveKernel(cols, 1, state_dim=N, dt_softplus=False, direct_A=True,
                                 delta_as_weight=False, dtype=dtype)
        op = IntegralTransform(cols, P, kernel, embed_dim=P, support="causal", bias=False, dtype=dtype)
        yield op, maps, feats


def ssd_as_itnet(X, A, B, C):
    """Mamba-2 SSD Y = (L o C B^T) X (``ssd_ref`` layout, no initial state) by one transform per head.

    X (B, L, H, P) (dt-scaled), A (B, L, H) (dt-scaled log decay), B, C (B, L, H, N). Returns Y (B, L, H, P).
    """
    return ops.stack([functional_call(op, maps, f) for op, maps, f in _ssd_heads(X, A, B, C)], axis=2)


def ssd_matrix(A, B, C):
    """M (B, H, L, L) = L o C B^T, so that Y[:, :, h] = M[:, h] @ X[:, :, h]."""
    X = np.zeros(shape_of(A) + (1,), dtype_of(A, B, C))
    mats = []
    for op, maps, f in _ssd_heads(X, A, B, C):
        with override_parameters(op, maps):
            mats.append(op.kernel_matrix(f))
    return ops.concatenate(mats, axis=1)
