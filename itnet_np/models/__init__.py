"""Models: one ITNet with light modality encoders, specialist baselines, and the ablations.

    from itnet_np import models
    cfg = models.ITNetConfig.named("small")                      # or .ablation("no_fourier")
    net = models.itnet_for_images(1, 10, cfg, patch=2, rng=0)     # (B, 1, H, W) -> (B, 10)
    width, cnn = models.match_width(lambda w: models.ResNetCNN(1, 10, w, rng=0),
                                    models.count_parameters(net))
    print(models.parameter_table({"itnet": net, "cnn": cnn}))

config.py (ITNetConfig, SIZES, ABLATIONS), encoders.py (image / token / function -> features and
positions), itnet.py (the backbone), baselines.py (ResNet CNN, Transformer, GRU classifier, grid
CNN; their layers are nn.Conv1d / nn.Conv2d / nn.GRU), params.py (counting and width matching),
registry.py (which models fit which task, and how to build them: used by ``itnet train`` and
bench/experiments.py).
"""
from .baselines import GridCNN, GRUClassifier, ResNetCNN, Transformer  # noqa: F401
from .config import ABLATIONS, SIZES, ITNetConfig  # noqa: F401
from .encoders import FunctionEncoder, ImageEncoder, TokenEncoder  # noqa: F401
from .itnet import ITNet, ITNetBlock, itnet_for_functions, itnet_for_images, itnet_for_tokens  # noqa: F401
from .params import count_parameters, match_width, parameter_table, size_table  # noqa: F401
from .registry import TASKS, build_model, get_task  # noqa: F401
