"""Optimisers (SGD, Adam, AdamW, RMSprop, Adagrad), learning-rate schedules and gradient clipping,
torch-compatible.

    opt = itn.optim.AdamW(model.named_parameters(), lr=1e-3, weight_decay=1e-2)
    sched = itn.optim.LRScheduler(opt, itn.optim.LinearWarmup(100).then(itn.optim.Cosine(900)))
    loss.backward(); itn.optim.clip_grad_norm_(model.parameters(), 1.0); opt.step(); sched.step()
    opt.zero_grad()

Closed-form schedules (Constant, StepDecay, MultiStep, Exponential, Cosine, LinearWarmup, OneCycle)
are applied by LRScheduler; ReduceLROnPlateau follows a metric instead. Optimiser state is keyed by
parameter name, so ``opt.state_dict()`` can be checkpointed with ``itn.save`` and restored into a
freshly built model and optimiser.
"""
from .adagrad import Adagrad  # noqa: F401
from .adam import Adam, AdamW  # noqa: F401
from .clip import clip_grad_norm_, clip_grad_value_  # noqa: F401
from .optimizer import Optimizer  # noqa: F401
from .plateau import ReduceLROnPlateau  # noqa: F401
from .rmsprop import RMSprop  # noqa: F401
from .schedules import (  # noqa: F401
    Constant,
    Cosine,
    Exponential,
    LinearWarmup,
    LRScheduler,
    MultiStep,
    OneCycle,
    Schedule,
    Sequence,
    StepDecay,
)
from .sgd import SGD  # noqa: F401
