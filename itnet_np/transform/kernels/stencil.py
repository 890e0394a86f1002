"""StencilKernel: a table over integer offsets, zero elsewhere. This is convolution.

    s^h_ij = sum_t table[h, t] 1[p_j - p_i = o_t]          offsets o_t (T, D), table (H, T)

Offsets are source minus query, the cross-correlation convention of torch's conv: with query
positions q_i = s i - P (stride s, padding P), sources p_j = j and offsets o_a = d a (dilation d),

    y_i = sum_a W_a x_{s i + d a - P},

and positions outside [0, L) simply have no source (zero padding for free). With one head per tap
(``table`` = identity, the default when heads is None) head a picks x_{q_i + o_a}; the value/output
maps of the operator then carry the conv weight W[:, :, a]. A lag-1 shift, s_ij = 1[p_j = p_i - 1],
is ``StencilKernel([-1])``: strictly causal, the T_K of a recurrence.
"""
import numpy as np

from ...autograd import ops
from ...autograd.backend import xp_of
from ...errors import ConfigError
from .._config import integer
from ..positions import relative_offsets
from .base import Kernel, Projection, generator, new_parameter


def conv_offsets(kernel_size, dilation=1):
    """Offsets d * a for every tap a of a kernel of ``kernel_size`` (int or tuple), shape (T, D), in
    C order of the tap multi-index (the order of torch's weight[:, :, a_1, ..., a_D] flattened)."""
    size = (int(kernel_size),) if np.isscalar(kernel_size) else tuple(int(k) for k in kernel_size)
    dil = np.broadcast_to(np.asarray(dilation, dtype=np.int64), (len(size),))
    axes = np.meshgrid(*[np.arange(k) for k in size], indexing="ij")
    return np.stack([a.reshape(-1) for a in axes], axis=-1) * dil


class StencilKernel(Kernel):
    """``StencilKernel(offsets, heads=None, table=None, rng=None, dtype=None)``.

    offsets: ints (T,) for 1-D or (T, D). heads=None gives one head per tap with the identity
    table; otherwise ``table`` (H, T) is the given values or U(-1/sqrt(T), 1/sqrt(T)). Parameter
    ``table``; buffer ``offsets`` (T, D) in the parameter dtype.
    """

    def __init__(self, offsets, heads=None, table=None, rng=None, dtype=None):
        name = "StencilKernel"
        offsets = np.asarray(offsets)
        if offsets.ndim == 1:
            offsets = offsets[:, None]
        if offsets.dtype.kind not in "iuf" or offsets.ndim != 2 or 0 in offsets.shape \
                or np.any(offsets != np.rint(offsets)):
            raise ConfigError(f"{name}: offsets must be integers of shape (T,) or (T, D), T, D >= 1, "
                              f"got {offsets.tolist()!r}")
        taps = offsets.shape[0]
        if table is None and heads is None:
            table = np.eye(taps)
        heads = integer(name, "heads", heads) if heads is not None else np.shape(table)[0]
        super().__init__(heads)
        self.position_dim = offsets.shape[1]
        self.table = new_parameter((heads, taps), generator(rng, name), dtype, value=table,
                                   fan_in=None if table is not None else taps)
        self.register_buffer("offsets", offsets.astype(self.table.dtype))

    def extra_repr(self):
        return f"offsets={self.offsets.astype(np.int64).tolist()}, heads={self.heads}"

    def project(self, query, source):
        return Projection({"p": query.positions}, {"p": source.positions})

    def indicator(self, proj):
        """1[p_j - p_i = o_t] as a constant (1|B, N, M, T) array in the table's dtype."""
        delta = relative_offsets(proj.query["p"], proj.source["p"])
        if delta.shape[-1] != self.position_dim:
            raise ConfigError(f"StencilKernel: offsets are {self.position_dim}-D but positions have "
                              f"D = {delta.shape[-1]}")
        hit = xp_of(delta).abs(delta[:, :, :, None, :] - self.offsets).max(axis=-1) <= 1e-6
        return hit.astype(self.table.dtype)

    def scores(self, proj):
        return ops.einsum("bnmt,ht->bhnm", self.indicator(proj), self.table)
