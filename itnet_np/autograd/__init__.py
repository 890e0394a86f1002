"""The autograd engine: Tensor, primitives, the backward pass, modes, hooks, transforms and checks."""
from .gradcheck import gradcheck, gradgradcheck  # noqa: F401
from .modes import detect_anomaly, enable_grad, is_grad_enabled, no_grad  # noqa: F401
from .primitive import Primitive, primitive  # noqa: F401
from .tensor import Tensor, get_default_dtype, set_default_dtype, tensor  # noqa: F401
from .transforms import grad, value_and_grad, vjp  # noqa: F401
