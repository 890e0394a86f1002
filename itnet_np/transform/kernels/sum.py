"""SumKernel: s^h_ij = sum_k s^{h,(k)}_ij, the sum of kernels with the same number of heads.

A summand that contributes quadrature weights (a SelectiveKernel) has them folded into its own
scores, w_j s_ij, so the sum is exact for normalization 'none' and 'sum'; under 'softmax' a
folded weight would multiply a logit, so the combination is refused there by the operator.
The projection of a sum keeps each summand's arrays under the prefix ``'<k>.'``.
"""
from ...errors import ConfigError
from .base import Kernel, Projection


class SumKernel(Kernel):
    """``SumKernel(*kernels)``; the summands are sub-modules ``k0``, ``k1``, ..."""

    def __init__(self, *kernels):
        if len(kernels) == 1 and isinstance(kernels[0], (list, tuple)):
            kernels = tuple(kernels[0])
        if not kernels or not all(isinstance(k, Kernel) for k in kernels):
            raise ConfigError("SumKernel: give one or more Kernel instances")
        heads = {k.heads for k in kernels}
        if len(heads) != 1:
            raise ConfigError(f"SumKernel: every summand needs the same number of heads, got "
                              f"{[k.heads for k in kernels]}")
        super().__init__(heads.pop())
        dims = {k.position_dim for k in kernels} - {None}
        if len(dims) > 1:
            raise ConfigError(f"SumKernel: summands need different position dimensions {sorted(dims)}")
        self.position_dim = dims.pop() if dims else None
        self.self_only = any(k.self_only for k in kernels)
        self.count = len(kernels)
        for i, k in enumerate(kernels):
            setattr(self, f"k{i}", k)

    @property
    def kernels(self):
        return [getattr(self, f"k{i}") for i in range(self.count)]

    @property
    def has_source_weights(self):
        return any(k.has_source_weights for k in self.kernels)

    def project(self, query, source):
        q, s, extra = {}, {}, {}
        for i, k in enumerate(self.kernels):
            p = k.project(query, source)
            for mine, theirs in ((q, p.query), (s, p.source), (extra, p.extra)):
                mine.update({f"{i}.{name}": v for name, v in theirs.items()})
        return Projection(q, s, extra)

    def part(self, proj, i):
        """Summand i's own projection."""
        prefix = f"{i}."

        def pick(d):
            return {name[len(prefix):]: v for name, v in d.items() if name.startswith(prefix)}
        return Projection(pick(proj.query), pick(proj.source), pick(proj.extra))

    def scores(self, proj):
        total = None
        for i, k in enumerate(self.kernels):
            part = self.part(proj, i)
            s = k.scores(part)
            w = k.source_weights(part)
            if w is not None:
                s = s * w[:, :, None, :]
            total = s if total is None else total + s
        return total
