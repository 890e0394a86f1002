"""Reduce the learning rate when a metric stops improving (torch's ReduceLROnPlateau).

Unlike the closed-form schedules (schedules.py) the lr here follows a measured quantity, so the
scheduler has state. After each evaluation, ``step(metric)``:

    improved = metric < best (1 - threshold)   mode 'min', threshold_mode 'rel'
               metric < best - threshold        mode 'min', threshold_mode 'abs'
               metric > best (1 + threshold)   mode 'max', threshold_mode 'rel'
               metric > best + threshold        mode 'max', threshold_mode 'abs'
    improved: best <- metric, bad <- 0;  else bad <- bad + 1
    in cooldown (cooldown_left > 0): cooldown_left <- cooldown_left - 1, bad <- 0
    bad > patience: every group's lr <- max(lr factor, min_lr) (unless that changes it by <= eps),
                    cooldown_left <- cooldown, bad <- 0

best starts at +inf ('min') or -inf ('max'); a NaN metric never improves.

    sched = ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=3)
    for epoch in range(100):
        train(...); sched.step(validation_loss)
"""
import math
import numbers

from ..errors import CheckpointError, ConfigError


class ReduceLROnPlateau:
    """ReduceLROnPlateau(optimizer, mode='min', factor=0.1, patience=10, threshold=1e-4,
    threshold_mode='rel', cooldown=0, min_lr=0, eps=1e-8); ``min_lr`` may be one value per group."""

    _STATE = ("best", "num_bad_steps", "cooldown_left", "last_step")

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel",
                 cooldown=0, min_lr=0.0, eps=1e-8):
        groups = optimizer.param_groups
        min_lrs = list(min_lr) if isinstance(min_lr, (list, tuple)) else [min_lr] * len(groups)
        problems = []
        if mode not in ("min", "max"):
            problems.append(f"mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            problems.append(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        if not 0.0 <= factor < 1.0:
            problems.append(f"factor must be in [0, 1), got {factor}")
        for name, value in (("patience", patience), ("cooldown", cooldown)):
            if not (isinstance(value, numbers.Integral) and value >= 0):
                problems.append(f"{name} must be an integer >= 0, got {value!r}")
        if not (threshold >= 0 and eps >= 0):
            problems.append(f"threshold and eps must be >= 0, got {threshold} and {eps}")
        if len(min_lrs) != len(groups) or not all(m >= 0 for m in min_lrs):
            problems.append(f"min_lr must be one number >= 0 or {len(groups)} of them (one per param group), "
                            f"got {min_lr!r}")
        if problems:
            raise ConfigError("ReduceLROnPlateau: " + "; ".join(problems))
        self.optimizer, self.mode, self.threshold_mode = optimizer, mode, threshold_mode
        self.factor, self.threshold, self.eps = float(factor), float(threshold), float(eps)
        self.patience, self.cooldown, self.min_lrs = int(patience), int(cooldown), [float(m) for m in min_lrs]
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_steps = self.cooldown_left = self.last_step = 0

    def is_better(self, metric, best):
        """Whether ``metric`` improves on ``best`` by more than the threshold (see the module docstring)."""
        sign = 1.0 if self.mode == "min" else -1.0
        if self.threshold_mode == "rel":
            return sign * metric < sign * best * (1 - sign * self.threshold)
        return sign * metric < sign * best - self.threshold

    def step(self, metric):
        """Record one evaluation of the metric (a number or a one-element Tensor/array)."""
        try:
            metric = float(metric)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"ReduceLROnPlateau.step: the metric must be a number, got {metric!r:.80}") from e
        self.last_step += 1
        if self.is_better(metric, self.best):
            self.best, self.num_bad_steps = metric, 0
        else:
            self.num_bad_steps += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.num_bad_steps = 0  # bad evaluations during the cooldown do not count
        if self.num_bad_steps > self.patience:
            for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
                new = max(group["lr"] * self.factor, min_lr)
                if group["lr"] - new > self.eps:
                    group["lr"] = new
            self.cooldown_left, self.num_bad_steps = self.cooldown, 0

    def get_last_lr(self):
        """The lrs the optimiser holds now."""
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self):
        """The evaluation history (the lrs themselves live in the optimiser's state_dict)."""
        return {key: getattr(self, key) for key in self._STATE}

    def load_state_dict(self, state_dict):
        ok = isinstance(state_dict, dict) and set(state_dict) == set(self._STATE)
        if ok:
            best, counters = state_dict["best"], [state_dict[k] for k in self._STATE[1:]]
            ok = isinstance(best, numbers.Real) and all(
                isinstance(c, numbers.Integral) and not isinstance(c, bool) and c >= 0 for c in counters)
        if not ok:
            raise CheckpointError(f"ReduceLROnPlateau.load_state_dict: expected {{'best': number, "
                                  f"'num_bad_steps', 'cooldown_left', 'last_step': integers >= 0}}, "
                                  f"got {state_dict!r:.200}")
        self.best = float(best)
        self.num_bad_steps, self.cooldown_left, self.last_step = (int(c) for c in counters)

    def __repr__(self):
        return (f"ReduceLROnPlateau(mode={self.mode!r}, factor={self.factor}, patience={self.patience}, "
                f"threshold={self.threshold}, threshold_mode={self.threshold_mode!r}, cooldown={self.cooldown}, "
                f"min_lr={self.min_lrs}, eps={self.eps})")
