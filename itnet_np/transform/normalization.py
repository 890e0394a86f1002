"""Normalisation n_h over the sources j: how kernel scores s_ij and weights w_j become the matrix A.

With keep_ij the support (True = j in S(i); it may differ per head), the transform of head h is
y_i = sum_j A_ij v_j, where

    'none'     A_ij = keep_ij w_j s_ij                                  (a plain quadrature sum)
    'sum'      A_ij = keep_ij w_j s_ij / sum_l keep_il w_l s_il         (Nadaraya-Watson)
    'softmax'  A_ij = keep_ij w_j e^{s_ij} / sum_l keep_il w_l e^{s_il} (s is a logit)

'softmax' is computed as exp(s_ij + log w_j - m_i) with m_i = max_l (s_il + log w_l) over kept l,
the stable log-sum-exp: m_i is a constant shift (softmax is invariant to it), so it is taken from the
raw data and every derivative, of any order, is exact. Weights w_j <= 0 count as excluded there
(log w = -inf); their derivative at exactly w = 0 is reported as 0.

Empty rows: when no source is kept (or all weights vanish) the denominator is 0; it is replaced by 1,
so such rows give A_i = 0 and y_i = 0 (never NaN). For 'sum' the same happens for any exactly-zero
denominator (kernel values can be negative and cancel); that is a convention, not a limit.
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


def _pair_view(weights):
    """(B|1, H|1, M) -> (B|1, H|1, 1, M) so it broadcasts over the query axis."""
    s = weights.shape
    return reshape(weights, (s[0], s[1], 1, s[2]))


def _safe_log(weights):
    """log w where w > 0, -inf elsewhere, with no NaN in the gradient (double-where trick)."""
    positive = raw(weights) > 0
    return where(positive, log(where(positive, weights, 1.0)), -np.inf)


def _safe_divide(numerator, denominator, nonzero):
    return numerator / where(nonzero, denominator, 1.0)


def transform_matrix(scores, weights=None, mask=None, normalization="none"):
    """A (B, H, N, M) from scores (B, H, N, M), weights (B|1, H|1, M) or None, mask (B|1, N, M),
    per head (B|1, H|1, N, M), or None.

    See the module docstring for the three formulas.
    """
    check_normalization(normalization)
    keep = None if mask is None else mask if mask.ndim == 4 else mask[:, None]
    if normalization == "softmax":
        z = scores if weights is None else scores + _pair_view(_safe_log(weights))
        if keep is not None:
            z = where(keep, z, -np.inf)
        zr = raw(z)
        xp = xp_of(zr)
        shift = zr.max(axis=-1, keepdims=True)
        shift = xp.where(xp.isfinite(shift), shift, 0).astype(zr.dtype)
        p = exp(z - shift)
        den = sum(p, axis=-1, keepdims=True)
        return _safe_divide(p, den, raw(den) > 0)
    a = scores if weights is None else scores * _pair_view(weights)
    if keep is not None:
        a = where(keep, a, 0.0)
    if normalization == "none":
        return a
    den = sum(a, axis=-1, keepdims=True)
    return _safe_divide(a, den, raw(den) != 0)
