"""Elementwise ops. Each is a forward on raw arrays and its VJP; the engine undoes broadcasting.

Notation: x, y inputs, out the output, g = dL/d out.
"""
import math

import numpy as np

from ..backend import xp_of
from ..primitive import primitive
from ._util import raw


def _like(mask, x):
    """A 0/1 (or 0/½/1) float mask in x's dtype, used as a constant inside VJPs."""
    x = raw(x)
    return mask.astype(x.dtype) if hasattr(mask, "astype") else np.asarray(mask, dtype=x.dtype)


# d(x+y) = dx + dy
add = primitive(np.add, "add").defvjp(lambda g, out, x, y: g, lambda g, out, x, y: g)
# d(x-y) = dx - dy
subtract = primitive(np.subtract, "subtract").defvjp(lambda g, out, x, y: g, lambda g, out, x, y: -g)
# d(xy) = y dx + x dy
multiply = primitive(np.multiply, "multiply").defvjp(lambda g, out, x, y: g * y, lambda g, out, x, y: g * x)
# d(x/y) = dx / y - x/y^2 dy
divide = primitive(np.divide, "divide").defvjp(
    lambda g, out, x, y: g / y,
    lambda g, out, x, y: -g * x / (y * y))
negative = primitive(np.negative, "negative").defvjp(lambda g, out, x: -g)


def _power_dx(g, out, x, y):
    """y x^(y-1), and 0 where x = 0 and y = 0 (x^0 = 1 is flat; torch's value): the base is replaced
    by 1 there, so no 0 * inf = NaN appears, and none in the second derivatives either."""
    yr = raw(y)
    if not (type(yr) in (int, float) and yr != 0):
        flat = (raw(x) == 0) & (yr == 0)
        if flat.any():
            x = where(flat, 1, x)
    return g * y * power(x, y - 1)


def _power_dy(g, out, x, y):
    xr = raw(x)
    if type(xr) in (int, float):
        # A Python base stays a Python float: a numpy float64 log would upcast a float32 gradient.
        return g * power(x, y) * (math.log(xr) if xr > 0 else 0.0 if xr == 0 else math.nan)
    # x^y log x -> 0 as x -> 0+ (y > 0), and torch's 0 at y = 0: log(1) at x == 0 gives that value
    # instead of 0 * -inf = NaN, and keeps the second derivative finite too.
    zero = xr == 0
    return g * power(x, y) * log(where(zero, 1.0, x) if zero.any() else x)


# d(x^y) = y x^(y-1) dx + x^y log(x) dy
power = primitive(np.power, "power").defvjp(_power_dx, _power_dy)
# d exp(x) = exp(x) dx
exp = primitive(np.exp, "exp", save_output=True).defvjp(lambda g, out, x: g * out)
log = primitive(np.log, "log").defvjp(lambda g, out, x: g / x)
log1p = primitive(np.log1p, "log1p").defvjp(lambda g, out, x: g / (1 + x))
# d expm1(x) = e^x dx = (expm1(x) + 1) dx; expm1 keeps its relative accuracy where e^x - 1 cancels
expm1 = primitive(np.expm1, "expm1", save_output=True).defvjp(lambda g, out, x: g * (out + 1))
# d sqrt(x) = dx / (2 sqrt(x))
sqrt = primitive(np.sqrt, "sqrt", save_output=True).defvjp(lambda g, out, x: g / (2 * out))
sin = primitive(np.sin, "sin").defvjp(lambda g, out, x: g * cos(x))
cos = primitive(np.cos, "cos").defvjp(lambda g, out, x: -g * sin(x))
# atan2(y, x), the angle of the point (x, y): d = (x dy - y dx) / (x^2 + y^2)  (undefined at the origin)
arctan2 = primitive(np.arctan2, "arctan2").defvjp(
    lambda g, out, y, x: g * x / (x * x + y * y),
    lambda g, out, y, x: -g * y / (x * x + y * y))
# d tanh(x) = (1 - tanh(x)^2) dx
tanh = primitive(np.tanh, "tanh", save_output=True).defvjp(lambda g, out, x: g * (1 - out * out))
# sign is piecewise constant: its derivative is zero wherever it is defined.
sign = primitive(np.sign, "sign").defvjp(lambda g, out, x: g * 0)
# d|x| = sign(x) dx  (0 at x = 0)
abs = primitive(np.abs, "abs").defvjp(lambda g, out, x: g * sign(x))


def _max_mask(x, y):
    """1 where x wins, ½ on ties (the subgradient torch uses), 0 where y wins."""
    x, y = raw(x), raw(y)
    return _like((x > y) + 0.5 * (x == y), x if hasattr(x, "dtype") else y)


maximum = primitive(np.maximum, "maximum").defvjp(
    lambda g, out, x, y: g * _max_mask(x, y),
    lambda g, out, x, y: g * _max_mask(y, x))
minimum = primitive(np.minimum, "minimum").defvjp(
    lambda g, out, x, y: g * _max_mask(y, x),
    lambda g, out, x, y: g * _max_mask(x, y))


def _where(condition, x, y):
    return xp_of(x if hasattr(x, "dtype") else y).where(condition, x, y)


# where(c, x, y): the gradient goes to x where c holds, to y elsewhere.
where = primitive(_where, "where").defvjp(
    None,
    lambda g, out, c, x, y: where(raw(c), g, g * 0),
    lambda g, out, c, x, y: where(raw(c), g * 0, g))


def _clip(x, a_min=None, a_max=None):
    return xp_of(x).clip(x, a_min, a_max)


# clip(x, lo, hi) = minimum(maximum(x, lo), hi); x keeps the gradient on ties with a bound (as torch).
# d/dx: 1 where lo <= x <= hi; d/dlo: 1 where x < lo <= hi; d/dhi: 1 where maximum(x, lo) > hi.
def _clip_dx(g, out, x, a_min=None, a_max=None):
    x = raw(x)
    keep = ~xp_of(x).isnan(x)
    if a_min is not None:
        keep = keep & (x >= raw(a_min))
    if a_max is not None:
        keep = keep & (x <= raw(a_max))
    return g * _like(keep, x)


def _clip_dmin(g, out, x, a_min, a_max=None):
    x, lo = raw(x), raw(a_min)
    keep = x < lo
    if a_max is not None:
        keep = keep & (lo <= raw(a_max))
    return g * _like(keep, lo)


def _clip_dmax(g, out, x, a_min, a_max):
    x, hi = raw(x), raw(a_max)
    low = x if a_min is None else xp_of(x).maximum(x, raw(a_min))
    return g * _like(low > hi, hi)


clip = primitive(_clip, "clip").defvjp(_clip_dx, _clip_dmin, _clip_dmax)
