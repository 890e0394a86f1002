"""Optimisers (SGD, Adam, AdamW), learning-rate schedules and gradient clipping, torch-compatible.

    opt = itn.optim.AdamW(model.named_parameters(), lr=1e-3, weight_decay=1e-2)
    sched = itn.optim.LRScheduler(opt, itn.optim.LinearWarmup(100).then(itn.optim.Cosine(900)))
    loss.backward(); itn.optim.clip_grad_norm_(model.parameters(), 1.0); opt.step(); sched.step()
    opt.zero_grad()

Optimiser state is keyed by parameter name, so ``opt.state_dict()`` can be checkpointed with
``itn.save`` and restored into a freshly built model and optimiser.
"""
from .adam import Adam, AdamW  # noqa: F401
from .clip import clip_grad_norm_, clip_grad_value_  # noqa: F401
from .optimizer import Optimizer  # noqa: F401
from .schedules import Constant, Cosine, LinearWarmup, LRScheduler, Schedule, Sequence, StepDecay  # noqa: F401
from .sgd import SGD  # noqa: F401
