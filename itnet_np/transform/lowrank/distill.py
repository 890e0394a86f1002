"""Distillation: fit a LowRankKernel (the student) to a trained kernel's values (the teacher).

Each step draws ``rows`` queries and ``cols`` sources uniformly (a block of rows x cols pairs, so the
teacher's scores come from one projection block and nothing N x M is formed), and takes an Adam step on

    L = mean_{b, h, i, j} (phi^h_i . psi^h_j - t^h_ij)^2 / mean t^2,      t = transform(s_teacher)

(relative squared error; transform e.g. np.exp to fit the softmax's e^s with positive feature maps
and evaluate under 'sum'). The teacher is only read (its projection once, raw), never trained.
"""
import numpy as np

from ...autograd import ops
from ...autograd.tensor import Tensor
from ...optim import Adam
from ..kernels.base import Points
from .approx import kernel_entries

__all__ = ["distill"]


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


def _data(a):
    return a.data if isinstance(a, Tensor) else a


def _subset(points, index):
    return Points(_data(points.features)[:, index], _data(points.positions)[:, index])
