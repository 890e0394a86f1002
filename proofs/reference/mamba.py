"""Selective SSMs: Mamba's selective scan (S6) and Mamba-2's SSD, transcribed from their formulas.

Sources:
- Gu & Dao 2023, "Mamba"; semantics of ``selective_scan_ref`` in state-spaces/mamba
  (mamba_ssm/ops/selective_scan_interface.py), summarised in docs/theory.md §9:
      delta <- softplus(delta + delta_bias)  (if requested)
      deltaA[b,d,l,n]   = exp(delta[b,d,l] * A[d,n])            (ZOH for A)
      deltaB_u[b,d,l,n] = delta[b,d,l] * B[b,n,l] * u[b,d,l]     (Euler for B; mamba issue #114)
      x_l = deltaA_l * x_{l-1} + deltaB_u_l,   y_l = sum_n x_l[n] C[b,n,l]
      out = y + u * D,   then out * silu(z)
- Dao & Gu 2024, "Transformers are SSMs" (Mamba-2); ``ssd_minimal.py`` semantics, docs/theory.md §10:
      Y = (L o C B^T) X,   L[t, s] = exp(sum_{r=s+1}^{t} A_r) for t >= s, 0 otherwise.
"""
import numpy as np

__all__ = [
    "segsum_ref",
    "selective_scan_kernel_ref",
    "selective_scan_ref",
    "softplus_torch",
    "ssd_recurrent_ref",
    "ssd_ref",
]


def softplus_torch(x, threshold=20.0):
    """torch.nn.functional.softplus (beta=1): log(1 + exp(x)), and x itself where x > threshold (=20).

    Mamba's reference calls F.softplus, so the threshold is part of its semantics (log1p(e^x) - x is
    ~2e-9 at x = 20, visible at float64 tolerances).
    """
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > threshold, x, np.logaddexp(0.0, np.minimum(x, threshold)))


def _silu(z):
    return z / (1.0 + np.exp(-z))


def _bc_per_channel(M, name, n_batch, dim, n_state, length):
    """B or C -> (batch, D, N, L): the value seen by channel d at step l.

    Accepts (D, N) constant, (batch, N, L) shared by all channels, or (batch, G, N, L) in G groups
    (channel d uses group d // (D/G), as mamba's ``repeat(B, "B G N L -> B (G H) N L")``).
    """
    M = np.asarray(M, dtype=np.float64)
    if M.shape == (dim, n_state):
        return np.broadcast_to(M[None, :, :, None], (n_batch, dim, n_state, length))
    if M.shape == (n_batch, n_state, length):
        return np.broadcast_to(M[:, None], (n_batch, dim, n_state, length))
    if M.ndim == 4 and M.shape[0] == n_batch and M.shape[2:] == (n_state, length) and dim % M.shape[1] == 0:
        return np.repeat(M, dim // M.shape[1], axis=1)
    raise ValueError(f"selective_scan_ref: {name} must be (D, N) = {(dim, n_state)}, (B, N, L) = "
                     f"{(n_batch, n_state, length)} or (B, G, N, L) with G | D; got {M.shape}")


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    u = np.asarray(u, dtype=np.float64)
    delta = np.asarray(delta, dtype=np.float64)
    A = np.asarray(A)
    if np.iscomplexobj(A):
        raise ValueError("selective_scan_ref: only real A is supported (mamba's complex case is not "
                         "transcribed here)")
    A = A.astype(np.float64)
    if u.ndim != 3 or delta.shape != u.shape or A.ndim != 2 or A.shape[0] != u.shape[1]:
        raise ValueError(f"selective_scan_ref: expected u, delta (B, D, L) and A (D, N); got "
                         f"{u.shape}, {delta.shape}, {A.shape}")
    n_batch, dim, length = u.shape
    if delta_bias is not None:
        delta = delta + np.asarray(delta_bias, dtype=np.float64)[:, None]
    if delta_softplus:
        delta = softplus_torch(delta)
    Bx = _bc_per_channel(B, "B", n_batch, dim, A.shape[1], length)
    Cx = _bc_per_channel(C, "C", n_batch, dim, A.shape[1], length)
    return u, delta, A, Bx, Cx


def _finish(y, u, D, z):
    if D is not None:
        y = y + u * np.asarray(D, dtype=np.float64)[:, None]
    if z is not None:
        y = y * _silu(np.asarray(z, dtype=np.float64))
    return y


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False):
    """Mamba S6 selective scan, sequential recursion over L (mamba ``selective_scan_ref`` semantics).

        delta <- delta + delta_bias[d];  delta <- softplus(delta) if delta_softplus (torch threshold 20)
        x[b,d,:]_l = exp(delta[b,d,l] A[d,:]) * x[b,d,:]_{l-1} + delta[b,d,l] B_l[:] u[b,d,l],  x_{-1} = 0
        y[b,d,l]   = sum_n x[b,d,n]_l C_l[n]
        out = y + u * D[d];   out = out * silu(z) if z is given

    Shapes: u, delta, z (B, D, L); A (D, N) real; B, C (D, N) constant | (B, N, L) | (B, G, N, L);
    D, delta_bias (D,). Returns out (B, D, L), and the last state x_{L-1} (B, D, N) if return_last_state.
    """
    u, delta, A, Bx, Cx = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    n_batch, dim, length = u.shape
    x = np.zeros((n_batch, dim, A.shape[1]))
    y = np.zeros((n_batch, dim, length))
    for i in range(length):
        d_i = delta[:, :, i, None]                                  # (B, D, 1)
        x = np.exp(d_i * A) * x + d_i * Bx[..., i] * u[:, :, i, None]
        y[:, :, i] = np.sum(x * Cx[..., i], axis=-1)
    out = _finish(y, u, D, z)
    return (out, x) if return_last_state else out


def selective_scan_kernel_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The same map in closed (kernel) form, docs/theory.md §9, as an explicit double loop over (t, s):

        y[b,d,t] = sum_{s<=t} [ sum_n C_t[n] B_s[n] exp(A[d,n] * sum_{r=s+1}^{t} delta[b,d,r]) ]
                              * delta[b,d,s] * u[b,d,s]  +  D[d] u[b,d,t]

    (delta_s is the quadrature weight of the integral transform). The decay exponent is summed directly
    over r = s+1..t, never as a difference of cumulative sums. Same arguments/shapes as selective_scan_ref.
    """
    u, delta, A, Bx, Cx = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    length = u.shape[2]
    y = np.zeros(u.shape)
    for t in range(length):
        for s in range(t + 1):
            elapsed = np.sum(delta[:, :, s + 1:t + 1], axis=-1)[..., None]          # (B, D, 1)
            kernel = np.sum(Cx[..., t] * Bx[..., s] * np.exp(A * elapsed), axis=-1)  # (B, D)
            y[:, :, t] += kernel * delta[:, :, s] * u[:, :, s]
    return _finish(y, u, D, z)


def segsum_ref(A):
    """Stable segment sum over the last axis: out[..., t, s] = sum_{r=s+1}^{t} A[..., r] for t >= s
    (0 on the diagonal), -inf for t < s. Each entry is its own direct sum (explicit loop), never
    cumsum[t] - cumsum[s], which cancels catastrophically. A (..., L) -> (..., L, L).
    """
    A = np.asarray(A, dtype=np.float64)
    length = A.shape[-1]
    out = np.full(A.shape + (length,), -np.inf)
    for t in range(length):
        for s in range(t + 1):
            out[..., t, s] = np.sum(A[..., s + 1:t + 1], axis=-1)
    return out


def _check_ssd(X, A, B, C):
    X, A, B, C = (np.asarray(a, dtype=np.float64) for a in (X, A, B, C))
    if X.ndim != 4 or A.shape != X.shape[:3] or B.ndim != 4 or B.shape[:3] != X.shape[:3] or C.shape != B.shape:
        raise ValueError(f"ssd_ref: expected X (B, L, H, P), A (B, L, H), B and C (B, L, H, N); got "
                         f"{X.shape}, {A.shape}, {B.shape}, {C.shape}")
    return X, A, B, C


def ssd_ref(X, A, B, C, initial_state=None):
    """Mamba-2 SSD, quadratic ("attention") form, per batch b and head h:

        Y[t] = sum_{s<=t} L[t, s] (C_t . B_s) X[s],   L[t, s] = exp(segsum(A)[t, s]) = a_t ... a_{s+1}
             (+ exp(sum_{r=0}^{t} A_r) * h_init C_t   with an initial state)

    i.e. Y = (L o C B^T) X. Shapes: X (B, L, H, P) inputs (already dt-scaled, X*dt in Mamba-2),
    A (B, L, H) log decay per step (already dt-scaled: A*dt, so a_t = exp(A_t)), B and C (B, L, H, N)
    (groups already repeated to heads), initial_state (B, H, P, N) or None. Returns Y (B, L, H, P).
    """
    X, A, B, C = _check_ssd(X, A, B, C)
    decay = np.exp(segsum_ref(np.moveaxis(A, 1, 2)))                 # (B, H, L, L); 0 above diagonal
    scores = np.einsum("bthn,bshn->bhts", C, B)
    Y = np.einsum("bhts,bshp->bthp", decay * scores, X)
    if initial_state is not None:
        h0 = np.asarray(initial_state, dtype=np.float64)
        length = X.shape[1]
        from_start = np.stack([np.sum(A[:, :t + 1], axis=1) for t in range(length)], axis=1)  # (B, L, H)
        Y = Y + np.exp(from_start)[..., None] * np.einsum("bhpn,bthn->bthp", h0, C)
    return Y


def ssd_recurrent_ref(X, A, B, C, initial_state=None, return_final_state=False):
    """Mamba-2 SSD as its recurrence (the scalar-decay SSM), explicit loop over t:

        h_t = exp(A_t) h_{t-1} + X_t B_t^T     (h: P x N per batch and head, h_{-1} = initial_state or 0)
        Y_t = h_t C_t

    Shapes as ssd_ref. Returns Y (B, L, H, P), and h_{L-1} (B, H, P, N) if return_final_state.
    """
    X, A, B, C = _check_ssd(X, A, B, C)
    n_batch, length, heads, p = X.shape
    h = np.zeros((n_batch, heads, p, B.shape[-1]))
    if initial_state is not None:
        h = h + np.asarray(initial_state, dtype=np.float64)
    Y = np.zeros(X.shape)
    for t in range(length):
        h = np.exp(A[:, t])[..., None, None] * h + X[:, t, :, :, None] * B[:, t, :, None, :]
        Y[:, t] = np.einsum("bhpn,bhn->bhp", h, C[:, t])
    return (Y, h) if return_final_state else Y
