"""All differentiable ops, one family per module; re-exported at ``itnet_np`` top level."""
from .convert import astype, to_device  # noqa: F401
from .elementwise import (  # noqa: F401
    abs, add, clip, cos, divide, exp, log, log1p, maximum, minimum, multiply, negative, power,
    sign, sin, sqrt, subtract, tanh, where)
from .index import getitem, index_put  # noqa: F401
from .linalg import matmul  # noqa: F401
from .reduce import mean, sum  # noqa: F401
from .shape import broadcast_to, concatenate, reshape, swapaxes, transpose  # noqa: F401
