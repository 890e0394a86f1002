"""Learning-rate schedules in closed form, and a torch-like scheduler that applies one.

A schedule is a pure function ``schedule(t, base_lr) -> lr`` of the step t = 0, 1, 2, ... (the
number of ``scheduler.step()`` calls so far). Closed forms (B = base_lr):

    Constant(factor)                 lr = factor * B
    StepDecay(step_size, gamma)      lr = B * gamma ** floor(t / step_size)
    MultiStep(milestones, gamma)     lr = B * gamma ** #{m in milestones : m <= t}
    Exponential(gamma)               lr = B * gamma ** t
    Cosine(T, eta_min)               lr = eta_min + (B - eta_min) (1 + cos(pi t / T)) / 2  for t <= T,
                                          eta_min afterwards (no restart)
    LinearWarmup(T, start_factor)    lr = B (s + (1 - s) min(t, T) / T),  s = start_factor
    OneCycle(T, pct_start, ...)      B / div_factor up to B, then down to B / (div_factor *
                                          final_div_factor) at t = T - 1 (see OneCycle)

A learning rate that follows a metric instead of the clock is ReduceLROnPlateau (plateau.py).

Schedules compose in time: ``a.then(b)`` runs ``a`` for its length (``a.length`` steps), then
``b`` with its clock restarted at 0. Warm-up then cosine decay over 1000 steps in all::

    sched = LRScheduler(opt, LinearWarmup(100).then(Cosine(900, eta_min=1e-5)))
    for batch in data:
        ...; opt.step(); sched.step()

The scheduler sets ``group['lr']`` of every param group from the group's base lr (its lr when the
scheduler was built); ``get_lr()`` gives the values for the current step.
"""
import bisect
import itertools
import math
import numbers

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


class MultiStep(Schedule):
    """Multiply the lr by ``gamma`` at each step in ``milestones`` (torch's MultiStepLR; a milestone
    listed twice applies gamma twice, as there)."""

    def __init__(self, milestones, gamma=0.1):
        milestones = sorted(milestones)
        if not all(isinstance(m, numbers.Integral) and not isinstance(m, bool) and m >= 1
                   for m in milestones):
            raise ConfigError(f"MultiStep: milestones must be integers >= 1, got {milestones}")
        self.milestones, self.gamma = [int(m) for m in milestones], float(gamma)

    def __call__(self, t, base_lr):
        return base_lr * self.gamma ** bisect.bisect_right(self.milestones, t)

    def __repr__(self):
        return f"MultiStep(milestones={self.milestones}, gamma={self.gamma})"


class Exponential(Schedule):
    """Multiply the lr by ``gamma`` every step (the closed form of torch's ExponentialLR)."""

    def __init__(self, gamma):
        if not gamma > 0:
            raise ConfigError(f"Exponential: gamma must be > 0, got {gamma}")
        self.gamma = float(gamma)

    def __call__(self, t, base_lr):
        return base_lr * self.gamma ** t

    def __repr__(self):
        return f"Exponential(gamma={self.gamma})"


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


class OneCycle(Schedule):
    """The 1cycle policy (Smith & Topin, 2017) as torch's OneCycleLR computes it, with the base lr B
    as the peak: warm up from initial = B / div_factor to B, then anneal down to min = initial /
    final_div_factor. Phases (last step of each, with P = pct_start * total_steps):

        two phases (default):  initial -> B up to P - 1,   B -> min up to total_steps - 1
        three_phase=True:      initial -> B up to P - 1,   B -> initial up to 2 P - 2,
                               initial -> min up to total_steps - 1

    Within a phase from step a to step b going from lr u to lr w, with x = (t - a) / (b - a):

        anneal='cos':     lr = w + (u - w) (1 + cos(pi x)) / 2
        anneal='linear':  lr = u + (w - u) x

    After step total_steps - 1 the lr stays at min (torch raises there). Only the lr is cycled
    (torch's cycle_momentum=False). A phase of no length (P <= 1, or P >= total_steps) is an error.
    """

    def __init__(self, total_steps, pct_start=0.3, div_factor=25.0, final_div_factor=1e4, three_phase=False,
                 anneal="cos"):
        if not (isinstance(total_steps, numbers.Integral) and total_steps >= 2):
            raise ConfigError(f"OneCycle: total_steps must be an integer >= 2, got {total_steps!r}")
        if not 0.0 <= pct_start <= 1.0:
            raise ConfigError(f"OneCycle: pct_start must be in [0, 1], got {pct_start}")
        if not (div_factor > 0 and final_div_factor > 0):
            raise ConfigError(f"OneCycle: div_factor and final_div_factor must be > 0, got {div_factor} "
                              f"and {final_div_factor}")
        if anneal not in ("cos", "linear"):
            raise ConfigError(f"OneCycle: anneal must be 'cos' or 'linear', got {anneal!r}")
        self.length, self.pct_start, self.anneal = int(total_steps), float(pct_start), anneal
        self.div_factor, self.final_div_factor = float(div_factor), float(final_div_factor)
        self.three_phase = bool(three_phase)
        peak_at, last = self.pct_start * self.length - 1, self.length - 1
        self.phases = ([(peak_at, "initial", "max"), (2 * self.pct_start * self.length - 2, "max", "initial"),
                        (last, "initial", "min")] if self.three_phase
                       else [(peak_at, "initial", "max"), (last, "max", "min")])
        ends = [0.0] + [end for end, _, _ in self.phases]
        if any(b <= a for a, b in itertools.pairwise(ends)):
            raise ConfigError(f"OneCycle: total_steps={total_steps} with pct_start={pct_start} gives a phase "
                              f"of no length (phases end at steps {ends[1:]})")

    def __call__(self, t, base_lr):
        initial = base_lr / self.div_factor
        lrs = {"max": base_lr, "initial": initial, "min": initial / self.final_div_factor}
        begin = 0.0
        for k, (end, u, w) in enumerate(self.phases):
            if t <= end or k == len(self.phases) - 1:
                x, u, w = min((t - begin) / (end - begin), 1.0), lrs[u], lrs[w]
                if self.anneal == "linear":
                    return u + (w - u) * x
                return w + (u - w) / 2 * (1 + math.cos(math.pi * x))
            begin = end

    def __repr__(self):
        return (f"OneCycle(total_steps={self.length}, pct_start={self.pct_start}, "
                f"div_factor={self.div_factor}, final_div_factor={self.final_div_factor}, "
                f"three_phase={self.three_phase}, "
                f"anneal={self.anneal!r})")


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
