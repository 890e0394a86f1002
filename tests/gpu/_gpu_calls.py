"""Helpers for the 'cuda' plan tests: the call record an IntegralTransform hands its backend, and the
same record presented as if its arrays were CuPy (``on_numpy`` False), which is how the plan's
decisions, and under the simulator its runs, are exercised without CuPy."""
from dataclasses import dataclass, fields

import numpy as np

from itnet_np import transform as T
from itnet_np.transform import planner

F64 = np.float64


@dataclass(frozen=True)
class NotNumpyCall(planner.TransformCall):
    """A TransformCall whose arrays count as device arrays (the 'cuda' plan's precondition)."""

    @property
    def on_numpy(self):
        return False


def not_numpy(call):
    return NotNumpyCall(**{f.name: getattr(call, f.name) for f in fields(call)})


def dot_op(backend, **kw):
    kernel = T.DotProductKernel(4, heads=2, rng=0, dtype=F64)
    return T.IntegralTransform(4, 4, kernel, normalization=kw.pop("normalization", "softmax"), backend=backend,
                               rng=1, dtype=F64, **kw)


def mlp_op(backend, **kw):
    kernel = T.MLPKernel(4, heads=2, hidden=4, rng=0, dtype=F64)
    return T.IntegralTransform(4, 4, kernel, normalization=kw.pop("normalization", "softmax"), backend=backend,
                               rng=1, dtype=F64, **kw)


def selective_op(backend, **kw):
    kernel = T.SelectiveKernel(4, 2, state_dim=3, rng=0, dtype=F64)
    return T.IntegralTransform(4, 4, kernel, normalization="none", backend=backend, rng=1, dtype=F64, **kw)


def decay_op(backend, **kw):
    kernel = T.DecayKernel(heads=2, real_modes=2, complex_modes=1, rng=0, dtype=F64)
    return T.IntegralTransform(4, 4, kernel, normalization="none", backend=backend, rng=1, dtype=F64, **kw)


def captured_call(op, x, **kw):
    """The TransformCall ``op(x, **kw)`` hands its backend (through a recording backend)."""
    seen = []

    def record(call):
        seen.append(call)
        return planner.dense(call)
    T.register_backend("_record", record)
    old = op.backend
    try:
        op.backend = "_record"
        op(x, **kw)
    finally:
        op.backend = old
        planner._BACKENDS.pop("_record")       # registered for this capture only
    return seen[-1]
