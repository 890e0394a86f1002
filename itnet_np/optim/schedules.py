"""Learning-rate schedules in closed form, and a torch-like scheduler that applies one.

A schedule is a pure function ``schedule(t, base_lr) -> lr`` of the step t = 0, 1, 2, ... (the
number of ``scheduler.step()`` calls so far). Closed forms (B = base_lr):

    Constant(factor)                 lr = factor * B
    StepDecay(step_size, gamma)      lr = B * gamma ** floor(t / step_size)
    Cosine(T, eta_min)               lr = eta_min + (B - eta_min) (1 + cos(pi t / T)) / 2  for t <= T,
                                          eta_min afterwards (no restart)
    LinearWarmup(T, start_factor)    lr = B (s + (1 - s) min(t, T) / T),  s = start_factor

Schedules compose in time: ``a.then(b)`` runs ``a`` for its length (``a.length`` steps), then
``b`` with its clock restarted at 0. Warm-up then cosine decay over 1000 steps in all::

    sched = LRScheduler(opt, LinearWarmup(100).then(Cosine(900, eta_min=1e-5)))
    for batch in data:
        ...; opt.step(); sched.step()

The scheduler sets ``group['lr']`` of every param group from the group's base lr (its lr when the
scheduler was built); ``get_lr()`` gives the values for the current step.
"""
import math

from ..errors import CheckpointError, ConfigError


class Schedule:
    """Base class. ``length``: the steps after which a ``.then(...)`` successor takes over (None: never)."""

    length = None

    def __call__(self, t, base_lr):
        raise NotImplementedError

    def then(self, other, after=None):
        """This schedule for ``after`` steps (default: its own length), then ``other``."""
        after = self.length if after is None else after
        if after is None:
            raise ConfigError(f"{self!r} never ends; pass after=<steps> to .then()")
        return Sequence((self, after), other)


class Constant(Schedule):
    def __init__(self, factor=1.0):
        self.factor = float(factor)

    def __call__(self, t, base_lr):
        return self.factor * base_lr

    def __repr__(self):
        return f"Constant({self.factor})"


class StepDecay(Schedule):
    """Multiply the lr by ``gamma`` every ``step_size`` steps (torch's StepLR)."""

    def __init__(self, step_size, gamma=0.1):
        if step_size < 1:
            raise ConfigError(f"StepDecay: step_size must be >= 1, got {step_size}")
        self.step_size, self.gamma = int(step_size), float(gamma)

    def __call__(self, t, base_lr):
        return base_lr * self.gamma ** (t // self.step_size)

    def __repr__(self):
        return f"StepDecay(step_size={self.step_size}, gamma={self.gamma})"


class Cosine(Schedule):
    """Half a cosine from base_lr down to ``eta_min`` over ``total_steps`` steps (the closed form of
    torch's CosineAnnealingLR), then held at ``eta_min``."""

    def __init__(self, total_steps, eta_min=0.0):
        if total_steps < 1:
            raise ConfigError(f"Cosine: total_steps must be >= 1, got {total_steps}")
        self.length, self.eta_min = int(total_steps), float(eta_min)

    def __call__(self, t, base_lr):
        t = min(t, self.length)
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.length)) / 2

    def __repr__(self):
        return f"Cosine(total_steps={self.length}, eta_min={self.eta_min})"


class LinearWarmup(Schedule):
    """Ramp linearly from ``start_factor * base_lr`` at t = 0 to base_lr at t = ``warmup_steps``,
    then hold (torch's LinearLR with end_factor = 1)."""

    def __init__(self, warmup_steps, start_factor=0.0):
        if warmup_steps < 1:
            raise ConfigError(f"LinearWarmup: warmup_steps must be >= 1, got {warmup_steps}")
        if not 0.0 <= start_factor <= 1.0:
            raise ConfigError(f"LinearWarmup: start_factor must be in [0, 1], got {start_factor}")
        self.length, self.start_factor = int(warmup_steps), float(start_factor)

    def __call__(self, t, base_lr):
        s = self.start_factor
        return base_lr * (s + (1 - s) * min(t, self.length) / self.length)

    def __repr__(self):
        return f"LinearWarmup({self.length}, start_factor={self.start_factor})"


class Sequence(Schedule):
    """Schedules one after another: ``Sequence((a, n_a), (b, n_b), c)`` runs a for n_a steps, b for
    n_b steps, then c forever; each piece sees its own clock starting at 0."""

    def __init__(self, *pieces):
        if not pieces:
            raise ConfigError("Sequence needs at least one schedule")
        self.pieces, start = [], 0
        for k, piece in enumerate(pieces):
            schedule, steps = piece if isinstance(piece, tuple) else (piece, None)
            if steps is None and k < len(pieces) - 1:
                steps = schedule.length
                if steps is None:
                    raise ConfigError(f"Sequence: piece {k} ({schedule!r}) needs a length: pass ({schedule!r}, n)")
            if steps is not None and steps < 1:
                raise ConfigError(f"Sequence: piece {k} must last >= 1 step, got {steps}")
            self.pieces.append((start, schedule))
            start = None if steps is None else start + int(steps)
        last = self.pieces[-1][1].length
        self.length = None if last is None else self.pieces[-1][0] + last

    def __call__(self, t, base_lr):
        for start, schedule in reversed(self.pieces):
            if t >= start:
                return schedule(t - start, base_lr)
        return self.pieces[0][1](t, base_lr)

    def __repr__(self):
        return "Sequence(" + ", ".join(f"{sch!r}@{s}" for s, sch in self.pieces) + ")"


class LRScheduler:
    """Applies ``schedule`` to an optimiser: ``step()`` advances the clock and sets every group's lr.

    On construction the groups' current lrs become ``base_lrs`` and the lr for t = 0 is applied.
    """

    def __init__(self, optimizer, schedule, last_step=-1):
        if not isinstance(schedule, Schedule):
            raise ConfigError(f"LRScheduler: expected a Schedule, got {type(schedule).__name__}")
        self.optimizer, self.schedule = optimizer, schedule
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.last_step = int(last_step)
        self.step()

    def get_lr(self):
        """The lr of each group at the current step ``last_step``."""
        return [self.schedule(self.last_step, base) for base in self.base_lrs]

    def get_last_lr(self):
        """The lrs the optimiser holds now."""
        return [g["lr"] for g in self.optimizer.param_groups]

    def step(self):
        self.last_step += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr

    def state_dict(self):
        return {"last_step": self.last_step, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state_dict):
        if set(state_dict) != {"last_step", "base_lrs"} or \
                len(state_dict["base_lrs"]) != len(self.optimizer.param_groups):
            raise CheckpointError(
                f"LRScheduler.load_state_dict: expected {{'last_step', 'base_lrs'}} with "
                f"{len(self.optimizer.param_groups)} base lrs, got {state_dict!r}")
        self.last_step = int(state_dict["last_step"])
        self.base_lrs = [float(b) for b in state_dict["base_lrs"]]
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
