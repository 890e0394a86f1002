"""Linear time-invariant state-space models as ITNet integral transforms: S4D (docs/theory.md §8).

A causal, unnormalised transform y_t = sum_{s <= t} K(t - s) u_s (+ D u_t) on the grid p_t = t;
tests/proofs/test_ssm.py proves it.

**S4D (LTI, diagonal).** x_k = Abar x_{k-1} + Bbar u_k, y_k = c Re(C x_k) + D u_k (c = 2 for conjugate
pairs) unrolls to y_t = sum_{s<=t} K^h(t - s) u_s + D u_t with, per channel h,

    K^h(k) = c Re(sum_n C_hn Bbar_hn Abar_hn^k),   k >= 0

    ZOH:      Abar = exp(dt A),  Bbar = expm1(dt A)/A B (dt B at A = 0)
    bilinear: Abar = (1 + dt A/2)/(1 - dt A/2),  Bbar = dt B/(1 - dt A/2)

which is a DecayKernel head: a real mode (rate Abar, coefficient c C Bbar) when A is real and
discretised by ZOH (Abar > 0), otherwise a complex mode mu = Abar, g = (c/2) C Bbar written in real
arithmetic (log|mu|, arg mu), whose 2 Re(g mu^k) is the mode plus its conjugate. Value and output
maps are the identity (one head per channel), W_skip = diag(D). The layer keeps the conventional
weights; the kernel's modes and the maps are empty slots of its IntegralTransform that every call
fills (``functional_call``) with Tensors derived from them, so gradients reach A, B, C, D and dt.
Pitfalls: the factor 2 Re for conjugate pairs; expm1 (not exp - 1) for small dt A, with the A = 0
limit; bilinear Abar can be negative for real A (angle pi), hence complex modes.

Mamba's selective scan (S6) and Mamba-2's SSD are in :mod:`itnet_np.proofs.mamba`.

**Semiseparable.** M_ts = C_t (prod_{r=s+1}^t Abar_r) B_s factors through the state, so every block
M[k:, :k+1] (below and on the diagonal) has rank <= the real state dimension (``semiseparable_ranks``).
"""
import numpy as np

from ..autograd import ops
from ..autograd.ops._util import raw
from ..autograd.tensor import Tensor
from ..errors import ConfigError, ShapeError
from ..nn.module import Module, functional_call, override_parameters
from ..transform import DecayKernel, IntegralTransform
from ._common import as_tensor, diag, dtype_of, materialize, shape_of, template, weight

__all__ = ["S4DLayer", "s4d_as_itnet", "s4d_from_decay_kernel", "semiseparable_ranks"]


# ----- helpers shared by the constructions --------------------------------------------------------
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
        dtype = dtype_of(A, B, C, D, dt, *(A if isinstance(A, tuple) else ()))
        parts = {k: _complex_parts(v, k, dtype) for k, v in (("A", A), ("B", B), ("C", C))}
        if len(shape_of(parts["A"][0])) != 2:
            raise ShapeError(f"s4d: A must be (H, N), got shape {shape_of(parts['A'][0])}")
        H, N = shape_of(parts["A"][0])
        for key, (re, im) in parts.items():
            for part, val in (("", re), (" (imaginary part)", im)):
                if val is not None and shape_of(val) != (H, N):
                    raise ShapeError(f"s4d: {key}{part} must be (H, N) = {(H, N)} like A, got {shape_of(val)}")
            setattr(self, key + "_re", weight(re, key, "s4d", dtype))
            setattr(self, key + "_im", weight(im, key + " (imaginary part)", "s4d", dtype))
        if D is not None and shape_of(D) != (H,):
            raise ShapeError(f"s4d: D must be (H,) = {(H,)}, got {shape_of(D)}")
        if shape_of(dt) not in ((), (H,)):
            raise ShapeError(f"s4d: dt must be a scalar or (H,) = {(H,)}, got {shape_of(dt)}")
        self.D, self.dt = weight(D, "D", "s4d", dtype), weight(dt, "dt", "s4d", dtype)
        self.H, self.N, self.discretization, self.conj_pairs = H, N, discretization, bool(conj_pairs)
        self.real_modes = discretization == "zoh" and self.A_im is None
        kernel = DecayKernel(H, N if self.real_modes else 0, 0 if self.real_modes else N, dtype=dtype)
        # the modes and the maps are functions of the S4D weights: empty slots, filled per call (maps())
        self.transform = template(IntegralTransform(H, H, kernel, embed_dim=H, support="causal",
                                                    skip=D is not None, bias=False, dtype=dtype))

    def _part(self, name, like):
        value = getattr(self, name)
        return value if value is not None else Tensor(np.zeros(like.shape, like.dtype))

    def maps(self):
        """The kernel's modes and the transform's maps (functional_call names) derived from the S4D
        weights with engine ops: one DecayKernel mode per state, W_V = W_O = I, W_skip = diag(D)."""
        factor, dtype = 2.0 if self.conj_pairs else 1.0, self.A_re.dtype
        dt = ops.reshape(as_tensor(self.dt, dtype), (-1, 1))
        A = (self.A_re, self._part("A_im", self.A_re))
        B = (self.B_re, self._part("B_im", self.B_re))
        C = (self.C_re, self._part("C_im", self.C_re))
        zero = raw(A[0]) == 0
        eye = np.eye(self.H, dtype=dtype)
        maps = {"W_V": eye, "W_O": eye}
        if self.real_modes:
            safe = ops.where(zero, 1.0, A[0])
            phi = ops.where(zero, dt, ops.expm1(dt * safe) / safe)    # expm1(dt A)/A
            maps["kernel.log_rate"] = dt * A[0]
            maps["kernel.coef"] = factor * phi * _cmul(C, B)[0]
        else:
            if self.discretization == "zoh":
                x, y = dt * A[0], dt * A[1]
                zero = zero & (raw(A[1]) == 0)
                s = ops.sin(0.5 * y)
                e = (ops.expm1(x) * ops.cos(y) - 2.0 * s * s, ops.exp(x) * ops.sin(y))   # expm1(dt A)
                phi = _cdiv(e, (ops.where(zero, 1.0, A[0]), A[1]))
                phi = (ops.where(zero, dt, phi[0]), ops.where(zero, 0.0, phi[1]))
                b_bar = _cmul(phi, B)
                maps["kernel.log_modulus"], maps["kernel.angle"] = x, y
            else:
                half = (0.5 * dt * A[0], 0.5 * dt * A[1])
                num, den = (1.0 + half[0], half[1]), (1.0 - half[0], -half[1])
                a_bar = _cdiv(num, den)
                b_bar = _cdiv((dt * B[0], dt * B[1]), den)
                maps["kernel.log_modulus"] = 0.5 * (ops.log(num[0] * num[0] + num[1] * num[1])
                                                    - ops.log(den[0] * den[0] + den[1] * den[1]))
                maps["kernel.angle"] = ops.arctan2(a_bar[1], a_bar[0])
            g = _cmul(C, b_bar)
            maps["kernel.coef_re"], maps["kernel.coef_im"] = 0.5 * factor * g[0], 0.5 * factor * g[1]
        if self.D is not None:
            maps["W_skip"] = diag(as_tensor(self.D, dtype))
        return maps

    def forward(self, u):
        shape = shape_of(u)
        if len(shape) != 3 or shape[1] != self.H:
            raise ShapeError(f"S4DLayer: u must be (B, H, L) with H = {self.H}, got shape {shape}")
        x = ops.transpose(as_tensor(u, self.A_re.dtype), (0, 2, 1))
        y = functional_call(self.transform, self.maps(), x)
        return ops.transpose(y, (0, 2, 1))

    def kernel_matrix(self, length):
        """M (H, L, L) with y[:, h] = M[h] @ u[:, h] (+ D u): the causal Toeplitz matrix of K^h(t - s)."""
        x = Tensor(np.zeros((1, length, self.H), self.A_re.dtype))
        with override_parameters(self.transform, self.maps()):
            return self.transform.kernel_matrix(x)[0]

    def decay_kernel(self):
        """A standalone DecayKernel with the layer's current modes (its own Parameters)."""
        return materialize(self.transform, self.maps()).kernel


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
