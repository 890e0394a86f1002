"""The autograd engine: Tensor, primitives, the backward pass, transforms and gradient checks."""
from .engine import detect_anomaly, enable_grad, no_grad  # noqa: F401
from .gradcheck import gradcheck, gradgradcheck  # noqa: F401
from .primitive import Primitive, primitive  # noqa: F401
from .tensor import Tensor, get_default_dtype, set_default_dtype, tensor  # noqa: F401
from .transforms import grad, value_and_grad, vjp  # noqa: F401
