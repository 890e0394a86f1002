"""Named elementwise activations for kernel networks and feature maps.

A kernel reports its activation by *name* to a fused backend, so each name fixes the formula:

    'identity' x          'relu'  max(x, 0)        'tanh'  tanh x        'sin'   sin x
    'sigmoid'  1/(1+e^-x) 'silu'  x sigmoid(x)     'softplus' log(1 + e^x) 'exp'   e^x
    'gelu'      x Phi(x), exact (erf)      'gelu_tanh' x/2 (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))
    'elu+1'     x + 1 (x > 0), e^x (x <= 0)

(the gelus are itnet_np.nn.functional.gelu with approximate='none' / 'tanh'; the fused Numba MLP
kernel implements 'relu', 'gelu_tanh', 'silu' and 'tanh').

A callable is accepted too (then ``name`` is None and only the dense backend can run it).
"""
from ...autograd import ops
from ...autograd.ops._util import raw
from ...errors import ConfigError


def _functional(name):
    from ...nn import functional as F
    return getattr(F, name)


def _elu1(x):
    # exp of min(x, 0): the unused branch of where() never overflows.
    return ops.where(raw(x) > 0, x + 1.0, ops.exp(ops.minimum(x, 0.0)))


ACTIVATIONS = {
    "identity": lambda x: x,
    "relu": lambda x: ops.maximum(x, 0.0),
    "tanh": ops.tanh,
    "sin": ops.sin,
    "exp": ops.exp,
    "sigmoid": lambda x: _functional("sigmoid")(x),
    "silu": lambda x: _functional("silu")(x),
    "softplus": lambda x: _functional("softplus")(x),
    "gelu": lambda x: _functional("gelu")(x),
    "gelu_tanh": lambda x: _functional("gelu")(x, approximate="tanh"),
    "elu+1": _elu1,
}


def resolve(activation, what="activation"):
    """(name or None, callable) for a name in ACTIVATIONS or a callable."""
    if callable(activation):
        return None, activation
    if activation not in ACTIVATIONS:
        raise ConfigError(f"{what}: unknown name {activation!r}; expected a callable or one of "
                          f"{sorted(ACTIVATIONS)}")
    return activation, ACTIVATIONS[activation]
