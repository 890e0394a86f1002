"""State-space models as ITNet integral transforms: S4D, Mamba's selective scan (S6), Mamba-2's SSD.

All three are causal, unnormalised transforms y_t = sum_{s <= t} w_s K(t, s) v_s (+ D u_t) on the grid
p_t = t (theory.md sections 10-12); the test file tests/proofs/test_ssm.py proves each one.

**S4D (LTI, diagonal).** x_k = Abar x_{k-1} + Bbar u_k, y_k = c Re(C x_k) + D u_k (c = 2 for conjugate
pairs) unrolls to y_t = sum_{s<=t} K^h(t - s) u_s + D u_t with, per channel h,

    K^h(k) = c Re(sum_n C_hn Bbar_hn Abar_hn^k),   k >= 0

    ZOH:      Abar = exp(dt A),  Bbar = expm1(dt A)/A B (dt B at A = 0)
    bilinear: Abar = (1 + dt A/2)/(1 - dt A/2),  Bbar = dt B/(1 - dt A/2)

which is a DecayKernel head: a real mode (rate Abar, coefficient c C Bbar) when A is real and
discretised by ZOH (Abar > 0), otherwise a complex mode mu = Abar, g = (c/2) C Bbar written in real
arithmetic (log|mu|, arg mu), whose 2 Re(g mu^k) is the mode plus its conjugate. Value and output
maps are the identity (one head per channel), W_skip = diag(D). Pitfalls: the factor 2 Re for
conjugate pairs; expm1 (not exp - 1) for small dt A, with the A = 0 limit; bilinear Abar can be
negative for real A (angle pi), hence complex modes.

**Selective scan (S6).** Mamba's recursion x_t = exp(Delta_t A) x_{t-1} + Delta_t B_t u_t (ZOH for A,
Euler for B: mamba issue #114), y_t = C_t . x_t, out = y + D u, out * silu(z), unrolls to

    y_t = sum_{s<=t} [sum_n C_tn B_sn exp(A_n (tau_t - tau_s))] Delta_s u_s,   tau_t = sum_{r<=t} Delta_r

i.e. the SelectiveKernel with quadrature weight Delta_s. Its features are f_t = [u_t, delta_t, B_t, C_t]
and every projection is a 0/1 selection (exact): W_dt picks delta (b_dt = delta_bias, softplus as
torch, threshold 20), W_B / W_C pick B_t / C_t, W_V picks u, W_skip = [diag(D) | 0]. Only differences
of clocks are exponentiated (exp(A tau_t) exp(-A tau_s) overflows). B and C are shared by a group of
channels, so G groups (B of shape (B, G, N, L), or G = D for a constant (D, N) B) use G transforms.

**SSD (Mamba-2).** Y = (L o C B^T) X with L_ts = exp(sum_{r=s+1}^t A_r): per head the same kernel with
state decay -1, clock increments Delta_t = -A_t and unit quadrature (the dt of Mamba-2 is already
folded into X and A), one transform per head since B, C are per head.

**Semiseparable.** M_ts = C_t (prod_{r=s+1}^t Abar_r) B_s factors through the state, so every block
M[k:, :k+1] (below and on the diagonal) has rank <= the real state dimension (``semiseparable_ranks``).
"""
import math

import numpy as np

from ..autograd import ops
from ..autograd.ops._util import raw
from ..autograd.primitive import primitive
from ..autograd.tensor import Tensor
from ..errors import ConfigError, ShapeError
from ..nn import functional as F
from ..nn.module import Module, Parameter
from ..transform import DecayKernel, IntegralTransform, SelectiveKernel
from ..verify import Measurement, directional_gradient_error, max_abs, reduction
from .reference import s4d_recurrent_ref, selective_scan_ref, ssd_ref

__all__ = [
    "S4DLayer",
    "s4d_as_itnet",
    "s4d_from_decay_kernel",
    "selective_scan_as_itnet",
    "selective_scan_from_itnet",
    "selective_scan_matrix",
    "semiseparable_ranks",
    "ssd_as_itnet",
    "ssd_matrix",
]

# Local primitives the engine lacks (report: they belong in autograd/ops/elementwise.py).
expm1 = primitive(np.expm1, "expm1", save_output=True).defvjp(lambda g, out, x: g * (out + 1.0))
arctan2 = primitive(np.arctan2, "arctan2").defvjp(lambda g, out, y, x: g * x / (x * x + y * y),
                                                  lambda g, out, y, x: -g * y / (x * x + y * y))


# ----- helpers shared by the constructions --------------------------------------------------------
def _tensor(a, dtype):
    return a if isinstance(a, Tensor) else Tensor(np.asarray(a, dtype=dtype))


def _hold(module, name, value, dtype):
    """Keep a conventional weight: an array becomes a trainable Parameter, a Tensor is kept as given
    (so backward reaches it), None stays None."""
    if value is not None and not isinstance(value, Tensor):
        value = Parameter(np.array(value, dtype=dtype))
    setattr(module, name, value)


def _unbind(module, *names):
    """Drop registered parameters: the construction sets them per call to Tensors derived from the
    conventional weights (plain attributes are what the kernels and the operator read)."""
    for name in names:
        if name in module._parameters:
            delattr(module, name)


def _shape(a):
    return tuple(a.shape) if hasattr(a, "shape") else np.shape(a)


def _dtype(*values):
    for v in values:
        if isinstance(v, Tensor):
            return v.dtype
    return np.dtype(np.float64)


def _diag(d):
    """diag(d) (n, n) from a Tensor d (n,), with engine ops."""
    return ops.expand_dims(d, 1) * Tensor(np.eye(d.shape[0], dtype=d.dtype))


def _complex_parts(value, name, dtype):
    """(re, im) from a real array/Tensor (im None), a complex array, or a pair of reals."""
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ConfigError(f"s4d: {name} as a tuple must be (real part, imaginary part), "
                              f"got {len(value)} items")
        return value
    if not isinstance(value, Tensor) and np.iscomplexobj(value):
        value = np.asarray(value)
        return value.real.astype(dtype), value.imag.astype(dtype)
    return value, None


def _cmul(a, b):
    return a[0] * b[0] - a[1] * b[1], a[0] * b[1] + a[1] * b[0]


def _cdiv(a, b):
    den = b[0] * b[0] + b[1] * b[1]
    return (a[0] * b[0] + a[1] * b[1]) / den, (a[1] * b[0] - a[0] * b[1]) / den


# ----- S4D ----------------------------------------------------------------------------------------
class S4DLayer(Module):
    """An S4D layer as an IntegralTransform with a DecayKernel (see the module docstring).

    ``forward(u)``: u (B, H, L) -> y (B, H, L), the layout of ``s4d_recurrent_ref``. Holds the
    conventional weights (``A_re``, ``A_im``, ``B_re``, ``B_im``, ``C_re``, ``C_im``, ``D``, ``dt``;
    imaginary parts None when real) and maps them onto the kernel's modes on every call.
    """

    def __init__(self, A, B, C, D=None, dt=1.0, discretization="zoh", conj_pairs=False):
        super().__init__()
        if discretization not in ("zoh", "bilinear"):
            raise ConfigError(f"s4d: discretization must be 'zoh' or 'bilinear', got {discretization!r}")
        dtype = _dtype(A, B, C, D, dt, *(A if isinstance(A, tuple) else ()))
        parts = {k: _complex_parts(v, k, dtype) for k, v in (("A", A), ("B", B), ("C", C))}
        if len(_shape(parts["A"][0])) != 2:
            raise ShapeError(f"s4d: A must be (H, N), got shape {_shape(parts['A'][0])}")
        H, N = _shape(parts["A"][0])
        for key, (re, im) in parts.items():
            for part, val in (("", re), (" (imaginary part)", im)):
                if val is not None and _shape(val) != (H, N):
                    raise ShapeError(f"s4d: {key}{part} must be (H, N) = {(H, N)} like A, got {_shape(val)}")
            _hold(self, key + "_re", re, dtype)
            _hold(self, key + "_im", im, dtype)
        if D is not None and _shape(D) != (H,):
            raise ShapeError(f"s4d: D must be (H,) = {(H,)}, got {_shape(D)}")
        if _shape(dt) not in ((), (H,)):
            raise ShapeError(f"s4d: dt must be a scalar or (H,) = {(H,)}, got {_shape(dt)}")
        _hold(self, "D", D, dtype)
        _hold(self, "dt", dt, dtype)
        self.H, self.N, self.discretization, self.conj_pairs = H, N, discretization, bool(conj_pairs)
        self.real_modes = discretization == "zoh" and self.A_im is None
        kernel = DecayKernel(H, N if self.real_modes else 0, 0 if self.real_modes else N, dtype=dtype)
        _unbind(kernel, "coef", "log_rate", "coef_re", "coef_im", "log_modulus", "angle")
        self.transform = IntegralTransform(H, H, kernel, embed_dim=H, support="causal", skip=D is not None,
                                           bias=False, dtype=dtype)
        _unbind(self.transform, "W_V", "W_O", "W_skip")
        eye = Tensor(np.eye(H, dtype=dtype))
        self.transform.W_V = self.transform.W_O = eye
        self._bind()

    def _part(self, name, like):
        value = getattr(self, name)
        return value if value is not None else Tensor(np.zeros(like.shape, like.dtype))

    def _bind(self):
        """Set the kernel's modes (and W_skip) from the conventional weights, with engine ops."""
        kernel, factor = self.transform.kernel, 2.0 if self.conj_pairs else 1.0
        dt = ops.reshape(_tensor(self.dt, self.A_re.dtype), (-1, 1))
        A = (self.A_re, self._part("A_im", self.A_re))
        B = (self.B_re, self._part("B_im", self.B_re))
        C = (self.C_re, self._part("C_im", self.C_re))
        zero = raw(A[0]) == 0
        if self.real_modes:
            safe = ops.where(zero, 1.0, A[0])
            phi = ops.where(zero, dt, expm1(dt * safe) / safe)    # expm1(dt A)/A
            kernel.log_rate = dt * A[0]
            kernel.coef = factor * phi * _cmul(C, B)[0]
        else:
            if self.discretization == "zoh":
                x, y = dt * A[0], dt * A[1]
                zero = zero & (raw(A[1]) == 0)
                s = ops.sin(0.5 * y)
                e = (expm1(x) * ops.cos(y) - 2.0 * s * s, ops.exp(x) * ops.sin(y))   # expm1(dt A)
                phi = _cdiv(e, (ops.where(zero, 1.0, A[0]), A[1]))
                phi = (ops.where(zero, dt, phi[0]), ops.where(zero, 0.0, phi[1]))
                b_bar = _cmul(phi, B)
                kernel.log_modulus, kernel.angle = x, y
            else:
                half = (0.5 * dt * A[0], 0.5 * dt * A[1])
                num, den = (1.0 + half[0], half[1]), (1.0 - half[0], -half[1])
                a_bar = _cdiv(num, den)
                b_bar = _cdiv((dt * B[0], dt * B[1]), den)
                kernel.log_modulus = 0.5 * (ops.log(num[0] * num[0] + num[1] * num[1])
                                            - ops.log(den[0] * den[0] + den[1] * den[1]))
                kernel.angle = arctan2(a_bar[1], a_bar[0])
            g = _cmul(C, b_bar)
            kernel.coef_re, kernel.coef_im = 0.5 * factor * g[0], 0.5 * factor * g[1]
        if self.D is not None:
            self.transform.W_skip = _diag(_tensor(self.D, self.A_re.dtype))

    def forward(self, u):
        shape = _shape(u)
        if len(shape) != 3 or shape[1] != self.H:
            raise ShapeError(f"S4DLayer: u must be (B, H, L) with H = {self.H}, got shape {shape}")
        self._bind()
        y = self.transform(ops.transpose(_tensor(u, self.A_re.dtype), (0, 2, 1)))
        return ops.transpose(y, (0, 2, 1))

    def kernel_matrix(self, length):
        """M (H, L, L) with y[:, h] = M[h] @ u[:, h] (+ D u): the causal Toeplitz matrix of K^h(t - s)."""
        self._bind()
        x = Tensor(np.zeros((1, length, self.H), self.A_re.dtype))
        return self.transform.kernel_matrix(x)[0]


def s4d_as_itnet(A, B, C, D=None, dt=1.0, discretization="zoh", conj_pairs=False):
    """The ITNet layer equal to ``s4d_recurrent_ref(u, A, B, C, D, dt, discretization, conj_pairs)``.

    A, B, C (H, N): real arrays/Tensors, complex arrays, or (real, imaginary) pairs of Tensors; D (H,)
    or None; dt scalar or (H,). Arrays become Parameters; Tensors are used as given (gradients flow).
    """
    return S4DLayer(A, B, C, D, dt, discretization, conj_pairs)


def s4d_from_decay_kernel(kernel, dt=1.0):
    """Reverse map: complex (A, B, C) (H, n) such that a ZOH S4D with conj_pairs=True and step dt has
    the kernel of ``kernel`` (a DecayKernel, or its current modes): each mode mu becomes
    A = log(mu)/dt with Bbar = 1 (B = A/expm1(dt A), 1/dt at A = 0) and C = g (complex mode) or c/2
    (real mode, since 2 Re(c/2 lam^k) = c lam^k)."""
    modes, coefs = [], []
    if getattr(kernel, "real_modes", 0):
        modes.append(raw(kernel.log_rate).astype(np.complex128))
        coefs.append(raw(kernel.coef) / 2.0)
    if getattr(kernel, "complex_modes", 0):
        modes.append(raw(kernel.log_modulus) + 1j * raw(kernel.angle))
        coefs.append(raw(kernel.coef_re) + 1j * raw(kernel.coef_im))
    A = np.concatenate(modes, axis=1) / dt
    zero = A == 0
    B = np.where(zero, 1.0 / dt, A / np.expm1(dt * np.where(zero, 1.0, A)))
    return A, B, np.concatenate(coefs, axis=1)


# ----- selective scan (Mamba S6) --------------------------------------------------------------------
class _SignedSelectiveKernel(SelectiveKernel):
    """SelectiveKernel with A used as given (any sign): the operator's kernel fixes A = -exp(A_log) < 0,
    Mamba's reference accepts any real A. Set ``A_value`` (H, S)."""

    def scores(self, proj):
        q, s = proj.query, proj.source
        keep = raw(q["p"])[:, :, None, 0] >= raw(s["p"])[:, None, :, 0]
        gap = ops.where(keep[..., None], ops.expand_dims(q["tau"], 2) - ops.expand_dims(s["tau"], 1), 0.0)
        decay = ops.exp(ops.expand_dims(gap, -1) * self.A_value)
        return ops.where(keep[:, None], ops.einsum("bts,bus,btuhs->bhtu", q["C"], s["B"], decay), 0.0)


class _UnitWeightSelectiveKernel(SelectiveKernel):
    """SelectiveKernel whose step sizes drive the clock but are not quadrature weights (SSD)."""

    def source_weights(self, proj):
        return None


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
    """Yield (transform, features (B, L, 2 Dg + 2 N)) per group of channels sharing B and C."""
    if np.iscomplexobj(raw(A)):
        raise ConfigError("selective_scan: A must be real (mamba's complex-A variant is not supported; the "
                          "reference does not transcribe it either)")
    dtype = _dtype(u, delta, A, B, C, D, delta_bias)
    u, delta, A, B, C = (_tensor(a, dtype) for a in (u, delta, A, B, C))
    if A.ndim != 2:
        raise ShapeError(f"selective_scan: A must be a real (D, N) array, got shape {tuple(A.shape)}")
    if u.ndim != 3 or u.shape[1] != A.shape[0] or tuple(delta.shape) != tuple(u.shape):
        raise ShapeError(f"selective_scan: u and delta must be (B, D, L) with D = {A.shape[0]} (rows of A); "
                         f"got u {tuple(u.shape)}, delta {tuple(delta.shape)}")
    (n_batch, dim, length), n_state = u.shape, A.shape[1]
    for name, v in (("D", D), ("delta_bias", delta_bias)):
        if v is not None and _shape(v) != (dim,):
            raise ShapeError(f"selective_scan: {name} must be (D,) = {(dim,)}, got {_shape(v)}")
    gb, get_b = _bc_groups(B, "B", n_batch, dim, n_state, length)
    gc, get_c = _bc_groups(C, "C", n_batch, dim, n_state, length)
    groups = gb * gc // math.gcd(gb, gc)
    width, signed = dim // groups, bool(np.any(raw(A) >= 0))
    cols = 2 * width + 2 * n_state
    sel = lambda rows, start: Tensor(np.eye(rows, cols, start, dtype=dtype))
    T = lambda a: ops.transpose(a, (0, 2, 1))
    for g in range(groups):
        ch = slice(g * width, (g + 1) * width)
        feats = ops.concatenate([T(u[:, ch]), T(delta[:, ch]), T(get_b(g * gb // groups)),
                                 T(get_c(g * gc // groups))], axis=-1)
        kernel = (_SignedSelectiveKernel if signed else SelectiveKernel)(
            cols, width, state_dim=n_state, dt_softplus=delta_softplus, A=-np.ones((width, n_state)),
            dtype=dtype)
        _unbind(kernel, "W_dt", "b_dt", "W_B", "W_C", "A_log")
        kernel.W_dt, kernel.W_B = sel(width, width), sel(n_state, 2 * width)
        kernel.W_C = sel(n_state, 2 * width + n_state)
        kernel.b_dt = 0.0 if delta_bias is None else _tensor(delta_bias, dtype)[ch]
        if signed:
            kernel.A_value = A[ch]
        else:
            kernel.A_log = ops.log(-A[ch])
        op = IntegralTransform(cols, width, kernel, embed_dim=width, support="causal", skip=D is not None,
                               bias=False, dtype=dtype)
        _unbind(op, "W_V", "W_O", "W_skip")
        op.W_V, op.W_O = sel(width, 0), Tensor(np.eye(width, dtype=dtype))
        if D is not None:
            op.W_skip = ops.concatenate([_diag(_tensor(D, dtype)[ch]),
                                         Tensor(np.zeros((width, cols - width), dtype))], axis=1)
        yield op, feats


def selective_scan_as_itnet(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Mamba's ``selective_scan_ref`` computed by SelectiveKernel integral transforms (module docstring).

    u, delta, z (B, D, L); A (D, N) real; B, C (D, N) | (B, N, L) | (B, G, N, L); D, delta_bias (D,).
    Arrays or Tensors (gradients flow to every Tensor). Returns out (B, D, L) as a Tensor.
    """
    ys = [op(f) for op, f in _selective_groups(u, delta, A, B, C, D, delta_bias, delta_softplus)]
    out = ops.transpose(ops.concatenate(ys, axis=-1), (0, 2, 1))
    return out if z is None else out * F.silu(_tensor(z, out.dtype))


def selective_scan_matrix(delta, A, B, C, delta_bias=None, delta_softplus=False):
    """M (B, D, L, L) with y[b, d] = M[b, d] @ u[b, d] (before D and z): Delta-weighted S6 kernel."""
    zeros = np.zeros(_shape(delta), _dtype(delta, A, B, C))
    groups = _selective_groups(zeros, delta, A, B, C, None, delta_bias, delta_softplus)
    mats = [op.kernel_matrix(f) for op, f in groups]
    return ops.concatenate(mats, axis=1)


def selective_scan_from_itnet(transform, x):
    """Reverse map: an IntegralTransform with a SelectiveKernel (normalization 'none', uniform
    quadrature) on features x (B, L, Cs) is Mamba's scan on its projections. Returns (kwargs, W_O,
    W_skip, b) with transform(x) = selective_scan_ref(**kwargs)^T W_O^T + x W_skip^T + b (arrays;
    W_skip / b None when absent): u = W_V x (+ b_V), delta = W_dt x, delta_bias = b_dt, B = W_B x,
    C = W_C x, A = -exp(A_log); a head of width d is d Mamba channels sharing delta and A."""
    kernel = transform.kernel
    if type(kernel) is not SelectiveKernel or transform.normalization != "none" \
            or transform.quadrature != "uniform":
        raise ConfigError("selective_scan_from_itnet: expected an IntegralTransform with a SelectiveKernel, "
                          "normalization='none' and quadrature='uniform'")
    f = np.asarray(raw(x), dtype=np.float64)
    get = lambda a: None if a is None else np.asarray(raw(a))  # noqa: E731
    d = transform.head_dim
    u = f @ get(transform.W_V).T + (0.0 if transform.b_V is None else get(transform.b_V))
    kwargs = {"u": np.moveaxis(u, 1, 2), "delta": np.repeat(np.moveaxis(f @ get(kernel.W_dt).T, 1, 2), d, 1),
              "A": np.repeat(-np.exp(get(kernel.A_log)), d, 0), "B": np.moveaxis(f @ get(kernel.W_B).T, 1, 2),
              "C": np.moveaxis(f @ get(kernel.W_C).T, 1, 2), "delta_bias": np.repeat(get(kernel.b_dt), d),
              "delta_softplus": kernel.dt_softplus}
    return kwargs, get(transform.W_O), get(transform.W_skip), get(transform.b)


# ----- SSD (Mamba-2) ------------------------------------------------------------------------------
def _ssd_heads(X, A, B, C):
    """Yield (transform, features (B, L, P + 1 + 2 N)) per head."""
    dtype = _dtype(X, A, B, C)
    X, A, B, C = (_tensor(a, dtype) for a in (X, A, B, C))
    lead = tuple(X.shape[:3])
    if X.ndim != 4 or tuple(A.shape) != lead or B.ndim != 4 or tuple(B.shape[:3]) != lead \
            or tuple(C.shape) != tuple(B.shape):
        raise ShapeError(f"ssd: expected X (B, L, H, P), A (B, L, H), B and C (B, L, H, N); got "
                         f"X {tuple(X.shape)}, A {tuple(A.shape)}, B {tuple(B.shape)}, C {tuple(C.shape)}")
    P, N = X.shape[3], B.shape[3]
    cols = P + 1 + 2 * N
    for h in range(X.shape[2]):
        feats = ops.concatenate([X[:, :, h], A[:, :, h:h + 1], B[:, :, h], C[:, :, h]], axis=-1)
        kernel = _UnitWeightSelectiveKernel(cols, 1, state_dim=N, dt_softplus=False, dtype=dtype)
        _unbind(kernel, "W_dt", "b_dt", "W_B", "W_C", "A_log")
        kernel.W_dt = Tensor(-np.eye(1, cols, P, dtype=dtype))        # Delta_t = -A_t
        kernel.b_dt, kernel.A_log = 0.0, Tensor(np.zeros((1, N), dtype))  # state decay -exp(0) = -1
        kernel.W_B, kernel.W_C = (Tensor(np.eye(N, cols, P + 1 + k * N, dtype=dtype)) for k in (0, 1))
        op = IntegralTransform(cols, P, kernel, embed_dim=P, support="causal", bias=False, dtype=dtype)
        _unbind(op, "W_V", "W_O")
        op.W_V, op.W_O = Tensor(np.eye(P, cols, dtype=dtype)), Tensor(np.eye(P, dtype=dtype))
        yield op, feats


def ssd_as_itnet(X, A, B, C):
    """Mamba-2 SSD Y = (L o C B^T) X (``ssd_ref`` layout, no initial state) by one transform per head.

    X (B, L, H, P) (dt-scaled), A (B, L, H) (dt-scaled log decay), B, C (B, L, H, N). Returns Y (B, L, H, P).
    """
    return ops.stack([op(f) for op, f in _ssd_heads(X, A, B, C)], axis=2)


def ssd_matrix(A, B, C):
    """M (B, H, L, L) = L o C B^T, so that Y[:, :, h] = M[:, h] @ X[:, :, h]."""
    X = np.zeros(_shape(A) + (1,), _dtype(A, B, C))
    return ops.concatenate([op.kernel_matrix(f) for op, f in _ssd_heads(X, A, B, C)], axis=1)


# ----- semiseparable structure --------------------------------------------------------------------
def semiseparable_ranks(M, rtol=1e-10):
    """Numerical ranks of the maximal lower blocks M[..., k:, :k+1], k = 0 .. L-1 (singular values
    above rtol * ||M||_2). For an SSM matrix each is <= the (real) state dimension. M (..., L, L)."""
    M = np.asarray(raw(M), dtype=np.float64)
    length = M.shape[-1]
    norms = np.linalg.norm(M.reshape(-1, length, length), ord=2, axis=(1, 2))
    scale = max(np.max(norms, initial=0.0), 1e-300)
    ranks = np.zeros(M.shape[:-2] + (length,), dtype=int)
    for k in range(length):
        s = np.linalg.svd(M[..., k:, :k + 1], compute_uv=False)
        ranks[..., k] = np.sum(s > rtol * scale, axis=-1)
    return ranks


# ----- verification suite ---------------------------------------------------------------------------

def _check_s4d(rng, discretization):
    n_batch, H, N, L = (int(v) for v in rng.integers(1, [3, 4, 4, 12], endpoint=True))
    cplx, conj = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
    shapes = [(n_batch, H, L)] + [(H, N)] * (6 if cplx else 3)
    inputs = [rng.standard_normal(s) for s in shapes] + [rng.standard_normal(H), rng.uniform(0.05, 0.5, H)]
    inputs[1] = -rng.uniform(0.1, 1.5, (H, N))                         # stable real parts of A

    def weights(ws, pair):
        if not cplx:
            return ws[:3]
        return [(ws[k], ws[k + 1]) if pair else ws[k] + 1j * ws[k + 1] for k in (0, 2, 4)]

    def itnet(u, *ws):
        return s4d_as_itnet(*weights(ws, True), ws[-2], ws[-1], discretization, conj)(u)

    def reference(u, *ws):
        return s4d_recurrent_ref(u, *weights(ws, False), ws[-2], ws[-1], discretization, conj)
    return Measurement(forward=max_abs(itnet(*inputs), reference(*inputs)),
                       gradient=directional_gradient_error(itnet, reference, inputs, rng))


@reduction("S4D (ZOH)")
def _verify_s4d_zoh(rng):
    """ITNet DecayKernel layer == S4D recurrence, ZOH, real or complex modes, conjugate pairs or not."""
    return _check_s4d(rng, "zoh")


@reduction("S4D (bilinear)")
def _verify_s4d_bilinear(rng):
    """ITNet DecayKernel layer == S4D recurrence, bilinear, real or complex modes, conjugate pairs or not."""
    return _check_s4d(rng, "bilinear")


@reduction("Mamba selective scan")
def _verify_selective_scan(rng):
    """SelectiveKernel transforms == mamba selective_scan_ref (groups, D, z, delta_bias, softplus)."""
    n_batch, dim, N, L = (int(v) for v in rng.integers(1, [2, 4, 3, 10], endpoint=True))
    groups = int(rng.choice([g for g in range(1, dim + 1) if dim % g == 0]))
    softplus = bool(rng.random() < 0.5)
    seq = (n_batch, dim, L)
    delta = rng.uniform(-2.0, 1.0, seq) if softplus else rng.uniform(0.05, 1.0, seq)
    inputs = [rng.standard_normal(seq), delta,
              -rng.uniform(0.1, 2.0, (dim, N)), rng.standard_normal((n_batch, groups, N, L)),
              rng.standard_normal((n_batch, N, L)), rng.standard_normal(dim), rng.standard_normal(seq),
              0.1 * rng.standard_normal(dim)]

    def run(fn):
        return lambda u, delta, A, B, C, D, z, bias: fn(u, delta, A, B, C, D, z, bias, softplus)
    itnet, reference = run(selective_scan_as_itnet), run(selective_scan_ref)
    return Measurement(forward=max_abs(itnet(*inputs), reference(*inputs)),
                       gradient=directional_gradient_error(itnet, reference, inputs, rng))


@reduction("Mamba-2 SSD")
def _verify_ssd(rng):
    """Per-head selective transforms (unit quadrature) == Mamba-2 SSD Y = (L o C B^T) X."""
    n_batch, L, H, P, N = (int(v) for v in rng.integers(1, [2, 10, 3, 3, 3], endpoint=True))
    inputs = [rng.standard_normal((n_batch, L, H, P)), -rng.uniform(0.0, 1.0, (n_batch, L, H)),
              rng.standard_normal((n_batch, L, H, N)), rng.standard_normal((n_batch, L, H, N))]
    return Measurement(forward=max_abs(ssd_as_itnet(*inputs), ssd_ref(*inputs)),
                       gradient=directional_gradient_error(ssd_as_itnet, ssd_ref, inputs, rng))
