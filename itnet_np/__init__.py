"""itnet-np: the reference implementation of ITNet, the Integral Transform Network, in NumPy.

    import itnet_np as itn
    x = itn.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward();  x.grad  # -> tensor([2., 4.])
"""
from ._version import __version__  # noqa: F401
from .autograd import (  # noqa: F401
    Primitive, Tensor, detect_anomaly, enable_grad, get_default_dtype, grad, gradcheck,
    gradgradcheck, no_grad, primitive, set_default_dtype, tensor, value_and_grad, vjp)
from .autograd.ops import *  # noqa: F401,F403
from .autograd.ops import abs, sum  # noqa: F401  (shadow builtins on purpose, like numpy)
from . import io, nn, optim  # noqa: F401,E402
from .io import load, save  # noqa: F401
from .errors import (  # noqa: F401
    AnomalyError, CheckpointError, ConfigError, DeviceError, DTypeError, GraphError, ITNetError,
    ShapeError)
