"""All differentiable ops, one family per module; re-exported at ``itnet_np`` top level."""
from .convert import astype, copy, to_device  # noqa: F401
from .elementwise import (  # noqa: F401
    abs, add, arctan2, clip, cos, divide, exp, expm1, log, log1p, maximum, minimum, multiply, negative,
    power, sign, sin, sqrt, subtract, tanh, where)
from .index import getitem, index_put, scatter_add  # noqa: F401
from .linalg import einsum, matmul  # noqa: F401
from .order import argmax, argmin, sort, topk  # noqa: F401
from .reduce import cumprod, cumsum, logsumexp, max, mean, min, norm, prod, std, sum, var  # noqa: F401
from .shape import (  # noqa: F401
    broadcast_to, concatenate, expand_dims, flip, pad, reshape, split, squeeze, stack, swapaxes, take,
    take_along_axis, transpose, tril, triu)
