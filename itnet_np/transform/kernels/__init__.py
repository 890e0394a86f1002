"""Kernel families: one per module, all following the interface in :mod:`.base`."""
from .base import Kernel, Points, Projection  # noqa: F401
from .decay import DecayKernel  # noqa: F401
from .dot import DotProductKernel  # noqa: F401
from .lowrank import LowRankKernel  # noqa: F401
from .mlp import MLPKernel  # noqa: F401
from .relative import RelativeBias, alibi_slopes, t5_bucket  # noqa: F401
from .selective import SelectiveKernel  # noqa: F401
from .stencil import StencilKernel, conv_offsets  # noqa: F401
from .sum import SumKernel  # noqa: F401
