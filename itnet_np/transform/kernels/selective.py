"""SelectiveKernel: the data-dependent kernel of Mamba's selective scan (S6), one head per channel.

Per-point projections of the features f_t (Cs):

    Delta_t = softplus(W_dt f_t + b_dt)  (H,)  [or W_dt f_t + b_dt when dt_softplus=False]
    B_t = W_B f_t (S,),   C_t = W_C f_t (S,),   tau_t = sum_{r <= t} Delta_r   (a per-channel clock)

    s^h_ts = 1[t >= s] sum_n C_tn B_sn exp(A_hn (tau_th - tau_sh)),   tau_t - tau_s = sum_{r=s+1}^{t} Delta_r

with A = -exp(A_log) < 0 (Mamba's module), or A itself, any real values, when ``direct_A`` (Mamba's
reference accepts any A). The kernel contributes the quadrature weight w^h_s = Delta_sh
(``source_weights``), so with normalization='none' and value map u_h the transform is

    y_th = sum_{s <= t} (C_t . (B_s * exp(A_h (tau_t - tau_s)))) Delta_sh u_sh,

exactly Mamba's ``selective_scan_ref`` (ZOH for A, Euler for B: the Delta B u term). With
``delta_as_weight=False`` the step sizes drive the clock only and w_s = 1: Mamba-2's SSD,
Y = (L o C B^T) X with L_ts = exp(sum_{r=s+1}^t a_r), a_r = A Delta_r (docs/theory.md §10).

Stability. The exponent is always a clock DIFFERENCE, set to 0 on masked (t < s) pairs before exp:
exp(A tau_t) and exp(-A tau_s) are never formed (the latter overflows for long sequences, A << 0).
The dense scores take the difference as a SEGMENT SUM, the cumulative sum over r of Delta_r
1[r > s] (Mamba-2's ``segsum``), so its rounding error is relative to the gap itself; a difference
of two long prefix sums would lose everything the gap has below eps |tau_t|. A tile of pairs
(``proj.tile``, for fused backends) has only its own points, so there the gap is tau_t - tau_s
from the prefix sums (the same value up to that rounding; use float64 or moderate lengths there).
Self only: query and source are the same sequence, and the clock runs over its index.
"""
import numpy as np

from ...autograd import ops
from ...autograd.backend import xp_of
from ...autograd.ops._util import raw
from ...errors import ConfigError
from .._config import flag, integer
from .base import Kernel, Projection, check_features, generator, new_parameter


class SelectiveKernel(Kernel):
    """``SelectiveKernel(in_features, heads, state_dim=16, dt_softplus=True, A=None, direct_A=False,
    delta_as_weight=True, rng=None, dtype=None)``.

    Parameters: ``W_dt`` (H, Cs), ``b_dt`` (H,), ``W_B`` (S, Cs), ``W_C`` (S, Cs), and ``A_log``
    (H, S) with A = -exp(A_log), or ``A`` (H, S) itself when ``direct_A``. The constructor's ``A``
    (H, S) sets the initial value (default: S4D-real, A_hn = -(n+1)); every entry must be < 0
    unless ``direct_A``. ``delta_as_weight``: Delta_s is the quadrature weight (S6), else 1 (SSD).
    """

    position_dim = 1
    self_only = True

    def __init__(self, in_features, heads, state_dim=16, dt_softplus=True, A=None, direct_A=False,
                 delta_as_weight=True, rng=None, dtype=None):
        super().__init__(heads)
        name = "SelectiveKernel"
        rng = generator(rng, name)
        self.in_features = integer(name, "in_features", in_features)
        self.state_dim = integer(name, "state_dim", state_dim)
        self.dt_softplus, self.direct_A = flag(name, "dt_softplus", dt_softplus), flag(name, "direct_A", direct_A)
        self.delta_as_weight = flag(name, "delta_as_weight", delta_as_weight)
        H, S, C = self.heads, self.state_dim, self.in_features
        if A is None:
            A = -np.broadcast_to(np.arange(1, S + 1, dtype=np.float64), (H, S))
        A = np.asarray(A, dtype=np.float64)
        if A.shape != (H, S) or not np.isfinite(A).all() or (not self.direct_A and np.any(A >= 0)):
            raise ConfigError(f"{name}: A must be ({H}, {S}), finite, with every entry < 0 (or pass "
                              f"direct_A=True for any real A), got shape {A.shape}"
                              + ("" if A.shape != (H, S) else " with entries >= 0 or not finite"))
        self.W_dt = new_parameter((H, C), rng, dtype, fan_in=C)
        self.b_dt = new_parameter((H,), rng, dtype, value=np.log(np.expm1(rng.uniform(1e-3, 1e-1, H))))
        self.W_B = new_parameter((S, C), rng, dtype, fan_in=C)
        self.W_C = new_parameter((S, C), rng, dtype, fan_in=C)
        if self.direct_A:
            self.A = new_parameter((H, S), rng, dtype, value=A)
        else:
            self.A_log = new_parameter((H, S), rng, dtype, value=np.log(-A))

    def extra_repr(self):
        return (f"in_features={self.in_features}, heads={self.heads}, state_dim={self.state_dim}, "
                f"direct_A={self.direct_A}, delta_as_weight={self.delta_as_weight}")

    @property
    def has_source_weights(self):
        return self.delta_as_weight

    def state_matrix(self):
        """A (H, S): the parameter itself when direct_A, else -exp(A_log)."""
        return self.A if self.direct_A else -ops.exp(self.A_log)

    def step_sizes(self, f):
        """Delta (B, N, H) of features f (B, N, Cs)."""
        z = ops.matmul(f, ops.transpose(self.W_dt)) + self.b_dt
        if not self.dt_softplus:
            return z
        from ...nn import functional as F
        return F.softplus(z)

    def project(self, query, source):
        if query is not source and (query.features is not source.features
                                    or query.positions is not source.positions):
            raise ConfigError("SelectiveKernel: query and source must be the same sequence (self mode)")
        check_features(self, source, self.in_features, "source")
        f = source.features
        delta = self.step_sizes(f)
        tau = ops.cumsum(delta, axis=1)
        T = ops.transpose
        # the same delta object on both sides marks the whole sequence (not a tile): see scores
        return Projection({"C": ops.matmul(f, T(self.W_C)), "tau": tau, "delta": delta,
                           "p": source.positions},
                          {"B": ops.matmul(f, T(self.W_B)), "tau": tau, "delta": delta,
                           "p": source.positions})

    def source_weights(self, proj):
        if not self.delta_as_weight:
            return None
        return ops.transpose(proj.source["delta"], (0, 2, 1))

    def clock_gaps(self, proj):
        """tau_t - tau_s (B, N, M, H), 0 where t < s: a segment sum over the whole sequence, the
        difference of the prefix sums on a tile (module docstring)."""
        q, s = proj.query, proj.source
        if q["delta"] is s["delta"]:
            delta = q["delta"]                                                     # (B, T, H)
            n = delta.shape[1]
            r = xp_of(raw(delta)).arange(n)
            after = (r[:, None] > r[None, :])[None, :, :, None]                    # r > s, (1, T, T, 1)
            steps = ops.where(after, ops.expand_dims(delta, 2), 0.0)               # (B, r, s, H)
            return ops.cumsum(steps, axis=1)                                       # sum_{s < r <= t}
        keep = raw(q["p"])[:, :, None, 0] >= raw(s["p"])[:, None, :, 0]
        gap = ops.expand_dims(q["tau"], 2) - ops.expand_dims(s["tau"], 1)
        return ops.where(keep[..., None], gap, 0.0)

    def scores(self, proj):
        q, s = proj.query, proj.source
        keep = raw(q["p"])[:, :, None, 0] >= raw(s["p"])[:, None, :, 0]             # (1|B, N, M)
        decay = ops.exp(ops.expand_dims(self.clock_gaps(proj), -1) * self.state_matrix())  # (B, N, M, H, S)
        out = ops.einsum("bts,bus,btuhs->bhtu", q["C"], s["B"], decay)
        return ops.where(keep[:, None], out, 0.0)
