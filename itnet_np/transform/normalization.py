"""Normalisation n_h over the sources j: how kernel scores s_ij and weights w_j become the matrix A.

With keep_ij the support (True = j in S(i); it may differ per head), the transform of head h is
y_i = sum_j A_ij v_j, where

    'none'     A_ij = keep_ij w_j s_ij                                  (a plain quadrature sum)
    'sum'      A_ij = keep_ij w_j s_ij / Z_i,  Z_i = sum_l keep_il w_l s_il   (Nadaraya-Watson)
    'softmax'  A_ij = keep_ij w_j e^{s_ij} / sum_l keep_il w_l e^{s_il} (s is a logit; needs w >= 0)

'softmax' is computed as exp(z_ij - m_i), z_ij = s_ij + log w_j, with m_i = max_l z_il over the kept
l, the stable log-sum-exp: m_i is a constant shift (softmax is invariant to it), so it is taken from
the raw data and every derivative, of any order, is exact. A weight w_j = 0 removes source j exactly
as the mask does; its derivative there (the one-sided e^{s_ij - m_i}(v_j - y_i)/sum...) is
reported as 0. Negative weights raise ConfigError (w e^s is taken in log space).

No non-finite intermediate. Masked pairs never go through -inf: their exponent is replaced by 0
before exp and their term by 0 after it (``where`` on both sides, so no gradient reaches them), so
``detect_anomaly()`` passes on every support, weight and empty row. NaN is never hidden: a NaN
weight or score of a kept pair propagates to the output (and raises under detect_anomaly); a
masked pair's NaN stays out here, while fused kernels, which multiply whole tiles, may spread it
further (0 * NaN = NaN, as in any masked attention matmul).

Zero denominators (empty rows; 'sum' rows whose Z_i is exactly 0, all weights zero or values that
cancel). The formula has no value there: y_i = N_i / Z_i has a pole on Z_i = 0 (or, when N_i = 0
too, the 0/0 limit depends on the direction of approach: y_i(t w) = y_i(w) for every t > 0, so
w -> 0 along different rays gives different limits). By convention such rows give A_i = 0, hence
y_i = 0 (never NaN); a value fixed by convention is a constant, so its derivative with respect to
everything (w, s, v) is 0, which is what ``ratio_or_zero`` computes and what every fused backend
computes. (Replacing Z by 1 instead would differentiate the unnormalised sum N_i: a gradient of a
function that is not the one evaluated.)
"""
import numpy as np

from ..autograd.backend import xp_of
from ..autograd.ops import exp, log, reshape, sum, where
from ..autograd.ops._util import raw
from ..errors import ConfigError

NORMALIZATIONS = ("none", "sum", "softmax")


def check_normalization(normalization):
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"normalization: unknown value {normalization!r}; expected one of "
                          f"{NORMALIZATIONS} ('sum' = Nadaraya-Watson, 'softmax' = attention)")
    return normalization


def check_softmax_weights(weights):
    """ConfigError unless every quadrature weight is >= 0 (NaN passes: it propagates)."""
    if weights is not None and bool((raw(weights) < 0).any()):
        raise ConfigError(f"weights: normalization='softmax' needs quadrature weights w >= 0 (w e^s is "
                          f"computed in log space), got a minimum of {float(raw(weights).min())!r}")


def ratio_or_zero(numerator, denominator):
    """numerator / denominator where the denominator is nonzero, else 0 with a zero derivative
    (the convention of the module docstring); NaN propagates."""
    nonzero = raw(denominator) != 0
    return where(nonzero, numerator / where(nonzero, denominator, 1.0), 0.0)


def _pair_view(weights):
    """(B|1, H|1, M) -> (B|1, H|1, 1, M) so it broadcasts over the query axis."""
    s = weights.shape
    return reshape(weights, (s[0], s[1], 1, s[2]))


def _and(a, b):
    return b if a is None else a & b


def transform_matrix(scores, weights=None, mask=None, normalization="none"):
    """A (B, H, N, M) from scores (B, H, N, M), weights (B|1, H|1, M) or None, mask (B|1, N, M),
    per head (B|1, H|1, N, M), or None.

    See the module docstring for the three formulas.
    """
    check_normalization(normalization)
    keep = None if mask is None else mask if mask.ndim == 4 else mask[:, None]
    if normalization == "softmax":
        z = scores
        if weights is not None:
            check_softmax_weights(weights)
            w = _pair_view(weights)
            present = raw(w) != 0                        # NaN counts as present: it must propagate
            z = z + where(present, log(where(present, w, 1.0)), 0.0)
            keep = _and(keep, present)
        zr = raw(z)
        xp = xp_of(zr)
        kept = zr if keep is None else xp.where(keep, zr, -np.inf)     # raw: no graph, no anomaly check
        shift = kept.max(axis=-1, keepdims=True)
        if not bool(xp.isfinite(shift).all()):        # empty rows (-inf) or NaN: shift by the finite max
            shift = xp.where(xp.isnan(kept), -np.inf, kept).max(axis=-1, keepdims=True)
            shift = xp.where(xp.isfinite(shift), shift, 0)
        shift = shift.astype(zr.dtype, copy=False)
        if keep is None:
            p = exp(z - shift)
        else:
            p = where(keep, exp(where(keep, z - shift, 0.0)), 0.0)
        return ratio_or_zero(p, sum(p, axis=-1, keepdims=True))
    a = scores if weights is None else scores * _pair_view(weights)
    if keep is not None:
        a = where(keep, a, 0.0)
    if normalization == "none":
        return a
    return ratio_or_zero(a, sum(a, axis=-1, keepdims=True))
