"""Neural-network building blocks: Module and Parameter, conventional layers, initialisers.

    import itnet_np as itn
    model = itn.nn.MLP([2, 64, 64, 2], activation="relu", rng=0)
    logits = model(itn.tensor(x))
    model.state_dict()        # {'layers.0.weight': array, ...}

``itn.nn.functional_call(model, {'layers.0.weight': w}, x)`` runs a model with given parameters.
``itn.nn.functional`` holds the stateless functions the layers call; ``itn.nn.init`` the initialisers.
"""
from . import functional, init  # noqa: F401
from .conv import Conv1d, Conv2d  # noqa: F401
from .layers import MLP, Dropout, Embedding, LayerNorm, Linear, ModuleList, Sequential  # noqa: F401
from .module import Module, Parameter  # noqa: F401
from .normalization import BatchNorm1d, BatchNorm2d, GroupNorm  # noqa: F401
from .overrides import functional_call, override_parameters  # noqa: F401
from .pooling import AdaptiveAvgPool1d, AdaptiveAvgPool2d, AvgPool1d, AvgPool2d, MaxPool1d, MaxPool2d  # noqa: F401
from .recurrent import GRU, GRUCell  # noqa: F401
