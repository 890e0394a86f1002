"""Rank-R approximations of a kernel matrix E (B, H, N, M), given only as an oracle of its blocks:
``entries(rows, cols) -> (B, H, len(rows), len(cols))`` (index arrays). None forms E.

    skeleton (Nystrom / CUR):  E ~ E[:, J] E[I, J]^+ E[I, :],  I, J evenly spaced landmarks
    cross (randomly pivoted):  E ~ sum_r c_r g_r^T, each step samples a pivot row with probability
        proportional to the residual's squared row norm on the current column sample (the randomly
        pivoted Cholesky idea of Chen, Epperly, Tropp and Webber 2023, applied to a non-symmetric
        matrix as an adaptive cross approximation); O((N + M) R) entries
    performer (positive random features, Choromanski et al. 2021), for e^(q . k):
        phi(x) = exp(omega x - |x|^2 / 2) / sqrt(R),  omega ~ N(0, I):  E[phi(q) . phi(k)] = e^(q . k)

All return (phi (B, H, N, R), psi (B, H, M, R)) with E ~ phi psi^T. ``svd_mass(E, R)`` is the share of
||E||_F^2 that the best rank-R approximation keeps, sum_{r<R} sigma_r^2 / sum sigma^2 (from a dense E:
a diagnostic at small sizes). ``skeleton`` is also the control variate's G (montecarlo/control.py).
"""
import numpy as np

from ...autograd.modes import no_grad
from ...autograd.ops._util import raw
from ..kernels.base import Projection

__all__ = ["cross", "kernel_entries", "performer", "skeleton", "svd_mass"]


def kernel_entries(kernel, proj, transform=None):
    """The oracle of a kernel's scores s (or transform(s), e.g. np.exp) from its projection."""
    def entries(rows, cols):
        sub = Projection({k: raw(v)[:, rows] for k, v in proj.query.items()},
                         {k: raw(v)[:, cols] for k, v in proj.source.items()},
                         {k: raw(v) for k, v in proj.extra.items()})
        with no_grad():
            s = np.asarray(raw(kernel.scores(sub)), np.float64)
        return s if transform is None else transform(s)
    return entries


def skeleton(entries, n, m, rank):
    """(phi, psi): the CUR approximation on ``rank`` evenly spaced landmark rows and columns."""
    rows = np.unique(np.linspace(0, n - 1, min(rank, n)).round().astype(np.int64))
    cols = np.unique(np.linspace(0, m - 1, min(rank, m)).round().astype(np.int64))
    C, R = entries(np.arange(n), cols), entries(rows, np.arange(m))
    return C @ np.linalg.pinv(R[..., cols], rcond=1e-10), np.swapaxes(R, -1, -2)


def cross(entries, n, m, rank, rng=None, probe=64):
    """(phi, psi): randomly pivoted cross approximation (module docstring); ``probe`` columns estimate
    the residual row norms. Stops early when the sampled residual vanishes (rank reached)."""
    rng = np.random.default_rng(rng)
    cols = np.sort(rng.choice(m, min(probe, m), replace=False))
    resid = entries(np.arange(n), cols)                               # (B, H, n, probe), updated in place
    floor = 1e-24 * max(float((resid ** 2).sum()), 1e-300)
    phi = np.zeros(resid.shape[:2] + (n, 0))
    psi = np.zeros(resid.shape[:2] + (m, 0))
    for _ in range(min(rank, n, m)):
        weight = (resid ** 2).reshape(-1, n, len(cols)).sum((0, 2))
        if weight.sum() <= floor:
            break
        i = rng.choice(n, p=weight / weight.sum())
        row = entries(np.array([i]), np.arange(m))[..., 0, :] - np.einsum("bhr,bhmr->bhm", phi[:, :, i], psi)
        j = int(np.abs(row).reshape(-1, m).sum(0).argmax())
        col = entries(np.arange(n), np.array([j]))[..., 0] - np.einsum("bhnr,bhr->bhn", phi, psi[:, :, j])
        pivot = row[..., j]
        col = col / np.where(np.abs(pivot) > 1e-300, pivot, 1.0)[..., None]
        phi, psi = np.concatenate([phi, col[..., None]], -1), np.concatenate([psi, row[..., None]], -1)
        resid -= col[..., None] * row[..., None, cols]
    if not phi.shape[-1]:
        return np.zeros(phi.shape[:3] + (1,)), np.zeros(psi.shape[:3] + (1,))
    return phi, psi


def performer(q, k, rank, rng=None):
    """(phi, psi) for e^(q_i . k_j): q (B, H, N, d), k (B, H, M, d) (fold a scale into them)."""
    omega = np.random.default_rng(rng).standard_normal((q.shape[-1], rank))

    def features(x):
        return np.exp(x @ omega - 0.5 * (x * x).sum(-1, keepdims=True)) / np.sqrt(rank)
    return features(q), features(k)


def svd_mass(E, rank):
    """sum_{r<R} sigma_r^2 / sum_r sigma_r^2 of each (B, H) slice of a dense E (a diagnostic)."""
    sigma = np.linalg.svd(E, compute_uv=False)
    return (sigma[..., :rank] ** 2).sum(-1) / (sigma ** 2).sum(-1)
