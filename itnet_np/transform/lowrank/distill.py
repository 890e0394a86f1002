"""Distillation: fit a LowRankKernel (the student) to a trained kernel's values (the teacher).

Two ways, which compose (``fit_output_layers`` first, then ``distill`` to fine-tune every parameter):

``fit_output_layers``: closed form, for a student with a hidden layer and identity feature maps
(phi_i = W_q h_i, psi_j = W_k g_j, h = act(U_q z_i + c_q), g = act(U_k z_j + c_k)). With the hidden
layers fixed, head h's scores are h_i^T M^h g_j with M^h = (W_q^h)^T W_k^h of rank <= r, and the best
M^h in least squares on a block of teacher values T^h (rows I, columns J) is reduced-rank regression:

    H = U_H S_H V_H^T,  G = U_G S_G V_G^T  (thin SVDs of the hidden features on I and J, directions
                                            with singular value below rcond * max dropped)
    C = U_H^T T^h U_G = sum_k sigma_k a_k b_k^T        (the teacher in the two feature bases)
    W_q^h = diag(sigma_<r)^(1/2) A_<r^T S_H^-1 V_H^T,   W_k^h = diag(sigma_<r)^(1/2) B_<r^T S_G^-1 V_G^T

so (W_q^h)^T W_k^h = V_H S_H^-1 A_r Sigma_r B_r^T S_G^-1 V_G^T and H M^h G^T = U_H (C truncated to rank r)
U_G^T: the projection of T^h onto the two feature spans, truncated by Eckart-Young within them (exact
when T^h lies in the spans with rank <= r). One SVD per head; no gradient steps.

``distill``: each step draws ``rows`` queries and ``cols`` sources uniformly (a block of rows x cols pairs, so the
teacher's scores come from one projection block and nothing N x M is formed), and takes an Adam step on

    L = mean_{b, h, i, j} (phi^h_i . psi^h_j - t^h_ij)^2 / mean t^2,      t = transform(s_teacher)

(relative squared error; transform e.g. np.exp to fit the softmax's e^s with positive feature maps
and evaluate under 'sum'). The teacher is only read (its projection once, raw), never trained.
"""
import numpy as np

from ...autograd import ops
from ...autograd.modes import no_grad
from ...autograd.tensor import Tensor
from ...optim import Adam
from ..kernels.base import Points
from .approx import kernel_entries

__all__ = ["distill", "fit_output_layers"]


def distill(student, teacher, query, source=None, *, steps=200, rows=64, cols=64, lr=1e-2, transform=None,
            rng=0):
    """Fit ``student`` to ``teacher`` on the Points ``query`` / ``source`` (self when None); returns the
    loss of every step (module docstring)."""
    source = query if source is None else source
    entries = kernel_entries(teacher, teacher.project(query, source), transform)
    n, m = query.features.shape[1], source.features.shape[1]
    rng = np.random.default_rng(rng)
    opt = Adam(list(student.parameters()), lr=lr)
    losses = []
    for _ in range(steps):
        i = np.sort(rng.choice(n, min(rows, n), replace=False))
        j = np.sort(rng.choice(m, min(cols, m), replace=False))
        target = entries(i, j).astype(_data(query.features).dtype)
        pred = student.scores(student.project(_subset(query, i), _subset(source, j)))
        loss = ops.mean((pred - target) ** 2) / float(np.mean(target ** 2))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.data))
    return losses


def fit_output_layers(student, teacher, query, source=None, *, rows=512, cols=512, transform=None, rcond=1e-8,
                      rng=0):
    """Set the student's W_q, W_k (its output layers) in closed form from a rows x cols block of the
    teacher's values (module docstring); returns the relative squared error on that block.

    Needs a student with ``hidden`` set, identity feature maps and no output bias, and one batch
    element (B = 1: the least-squares problem of several batch elements does not separate)."""
    from ...errors import ConfigError
    if student.hidden is None or student.feature_map_name != "identity" or \
            student.key_feature_map_name != "identity" or student.b_q is not None:
        raise ConfigError("fit_output_layers: the student must have hidden=... , feature_map='identity' (both "
                          f"sides) and bias=False; got hidden={student.hidden}, feature_map="
                          f"{student.feature_map_name!r}/{student.key_feature_map_name!r}, bias={student.b_q is not None}")
    source = query if source is None else source
    if _data(query.features).shape[0] != 1 or _data(source.features).shape[0] != 1:
        raise ConfigError(f"fit_output_layers: expected one batch element (features (1, n, C)), got "
                          f"{_data(query.features).shape} and {_data(source.features).shape}")
    entries = kernel_entries(teacher, teacher.project(query, source), transform)
    n, m = _data(query.features).shape[1], _data(source.features).shape[1]
    rng = np.random.default_rng(rng)
    i = np.sort(rng.choice(n, min(rows, n), replace=False))
    j = np.sort(rng.choice(m, min(cols, m), replace=False))
    target = entries(i, j)[0]                                                   # (H, |I|, |J|)
    with no_grad():
        hid_q = np.asarray(_data(student.hidden_features(_subset(query, i), "query"))[0], np.float64)
        hid_k = np.asarray(_data(student.hidden_features(_subset(source, j), "source"))[0], np.float64)
    basis_q, basis_k = _basis(hid_q, rcond), _basis(hid_k, rcond)
    r, heads = student.feature_dim, student.heads
    W_q, W_k = np.zeros(student.W_q.shape), np.zeros(student.W_k.shape)
    err = 0.0
    for h in range(heads):
        C = basis_q[0].T @ target[h] @ basis_k[0]
        a, sigma, bt = np.linalg.svd(C, full_matrices=False)
        k = min(r, sigma.shape[0])
        root = np.sqrt(sigma[:k])
        W_q[h * r:h * r + k] = (root[:, None] * a[:, :k].T) @ basis_q[1]
        W_k[h * r:h * r + k] = (root[:, None] * bt[:k]) @ basis_k[1]
        fit = hid_q @ W_q[h * r:(h + 1) * r].T @ W_k[h * r:(h + 1) * r] @ hid_k.T
        err += float(((fit - target[h]) ** 2).sum())
    student.W_q.data[...] = W_q.astype(student.W_q.dtype)
    student.W_k.data[...] = W_k.astype(student.W_k.dtype)
    return err / float((target ** 2).sum())


def _basis(features, rcond):
    """(U, S^-1 V^T) of the thin SVD of ``features`` (n, hidden), small directions dropped."""
    u, s, vt = np.linalg.svd(features, full_matrices=False)
    keep = s > rcond * s[0]
    return u[:, keep], vt[keep] / s[keep, None]


def _data(a):
    return a.data if isinstance(a, Tensor) else a


def _subset(points, index):
    return Points(_data(points.features)[:, index], _data(points.positions)[:, index])
