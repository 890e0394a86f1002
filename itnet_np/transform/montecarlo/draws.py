"""The draws of one sampled evaluation, regenerated on demand from (seed, call counter, query tile).

Queries are cut into tiles of T rows. Tile t's rows attend to per-row source ranges [lo_i, hi_i)
(the support descriptor); their union [L_t, H_t) holds n_t sources. The tile draws S indices
j_1..j_S from a proposal q_t on [L_t, H_t), shared by its rows, the batch and the heads, and gives
each the coefficient c_s so that, for any f,

    E[ sum_s c_s f(j_s) ] = sum_{L_t <= j < H_t} f(j)                                        (1)

    with replacement, i.i.d. j_s ~ q_t:       c_s = 1 / (S q_t(j_s))
    uniform without replacement:              c_s = n_t / S   (Horvitz-Thompson, P(j drawn) = S / n_t)
    stratified (S equal index strata I_k, one uniform draw in each):  c_s = |I_k|

A tile with n_t <= S takes every source once (c = 1): it is exact. Row i keeps the draws inside its
own range; (1) with f(j) = 1[lo_i <= j < hi_i] g(j) makes that unbiased too. Draws are sorted, so
row i's draws are one contiguous slice [r_lo_i, r_hi_i) of the concatenated draw list: the fused
kernels take them as per-row source ranges and the gathers of b_j, y_j, k_j, v_j are row blocks.

Proposals. 'uniform' is q = 1 / n_t. 'locality' and 'proxy' are q = (1 - mix) m / sum m + mix / n_t
with m_j = exp(-d_j / l) (d_j: distance from p_j to the bounding box of the tile's query positions)
or m_j = the integrand's magnitude at the tile's middle query (``proxy(i, L, H)``); the uniform
part keeps q > 0 wherever the integrand can be nonzero, which (1) needs. Proposals read raw arrays
only: they are detached from the gradient (see plan.py for why the gradient stays unbiased).

Nothing is stored between forward and backward but this object, which holds the O(N + M) inputs of
the proposal; ``realise()`` recomputes the same draws from the generator seeded by
(seed, counter, t).
"""
import numpy as np

__all__ = ["Draws"]


class Draws:
    """``Draws(method, counter, lo, hi, positions=None, proxy=None)``: lo, hi int (N,) per-row source
    ranges; positions (query (N, D), source (M, D)) raw for 'locality'; proxy a callable
    ``(i, L, H) -> m (H - L,) >= 0`` for 'proxy'."""

    def __init__(self, method, counter, lo, hi, positions=None, proxy=None):
        self.method, self.counter = method, int(counter)
        self.lo, self.hi = np.asarray(lo, np.int64), np.asarray(hi, np.int64)
        self.positions, self.proxy = positions, proxy

    @property
    def n(self):
        return self.lo.shape[0]

    def realise(self):
        """(idx (L,) int64, coef (L,) float64, row_lo (N,), row_hi (N,)): the concatenated sorted draws
        of every tile and each row's slice [row_lo_i, row_hi_i) of them."""
        T, n = self.method.tile, self.n
        idx, coef = [np.zeros(0, np.int64)], [np.zeros(0)]          # (no queries: no draws)
        row_lo, row_hi = np.zeros(n, np.int64), np.zeros(n, np.int64)
        offset = 0
        for t, i0 in enumerate(range(0, n, T)):
            rows = slice(i0, min(i0 + T, n))
            lo, hi = self.lo[rows], self.hi[rows]
            live = hi > lo
            if live.any():
                J, c = self.tile(t, rows, int(lo[live].min()), int(hi[live].max()))
            else:
                J, c = np.zeros(0, np.int64), np.zeros(0)
            first = offset + np.searchsorted(J, lo, "left")
            row_lo[rows], row_hi[rows] = first, np.maximum(offset + np.searchsorted(J, hi, "left"), first)
            idx.append(J)
            coef.append(c)
            offset += J.shape[0]
        return np.concatenate(idx), np.concatenate(coef), row_lo, row_hi

    def tile(self, t, rows, L, H):
        """Sorted draws J (S,) in [L, H) and their coefficients c (S,) for tile t (exact when H - L <= S)."""
        m, S, n = self.method, self.method.samples, H - L
        if n <= S:
            return np.arange(L, H, dtype=np.int64), np.ones(n)
        rng = np.random.default_rng((m.seed, self.counter, t))
        if m.proposal == "stratified":
            edges = L + (np.arange(S + 1, dtype=np.int64) * n) // S
            width = np.diff(edges)
            J = edges[:-1] + np.minimum((rng.random(S) * width).astype(np.int64), width - 1)
            return J, width.astype(np.float64)
        if m.proposal == "uniform":
            J = L + (rng.integers(0, n, S) if m.replace else rng.choice(n, S, replace=False))
            return np.sort(J).astype(np.int64), np.full(S, n / S)
        weight = self._locality(rows, L, H) if m.proposal == "locality" else \
            np.asarray(self.proxy((rows.start + rows.stop - 1) // 2, L, H), np.float64)
        q = np.full(n, 1.0 / n)
        total = weight.sum()
        if np.isfinite(total) and total > 0:
            q = (1 - m.mix) * weight / total + m.mix / n
        cdf = np.cumsum(q)
        J = np.minimum(np.searchsorted(cdf, rng.random(S) * cdf[-1], "right"), n - 1)
        J.sort()
        return (L + J).astype(np.int64), 1.0 / (S * q[J])

    def _locality(self, rows, L, H):
        """m_j = exp(-d_j / l), d_j the distance from p_j to the box of the tile's query positions;
        l = locality_scale, by default the spread of the sources times (S / 2 M)^(1 / D): the box's
        neighbourhood then holds about S / 2 sources when they are spread evenly."""
        pq, ps = self.positions
        box_lo, box_hi = pq[rows].min(0), pq[rows].max(0)
        p = ps[L:H]
        gap = np.maximum(np.maximum(box_lo - p, p - box_hi), 0.0)
        d = np.sqrt((gap * gap).sum(-1))
        scale = self.method.locality_scale
        if scale is None:
            D = max(ps.shape[-1], 1)
            spread = float(np.mean(ps.max(0) - ps.min(0))) if ps.shape[0] else 0.0
            scale = max(spread, 1e-12) * (self.method.samples / (2.0 * ps.shape[0])) ** (1.0 / D)
        return np.exp(-d / scale)
