"""Parameter counts: ``count_parameters(model)``, a printable table, and width matching.

``match_width(build, target, widths)`` returns the width w (from the candidates, increasing) whose
``count_parameters(build(w))`` is nearest to ``target``, and raises ConfigError when even that one
is further than ``tolerance`` (relative) from it -- comparisons at "matched parameter counts" then
state how close they are.
"""
from ..errors import ConfigError


def count_parameters(model):
    """Number of trainable scalars (parameters that require grad; buffers excluded)."""
    return int(sum(p.size for p in model.parameters() if p.requires_grad))


def parameter_table(models):
    """A plain-text table ``name | parameters`` for a dict name -> model (or name -> count)."""
    rows = [(name, m if isinstance(m, int) else count_parameters(m)) for name, m in models.items()]
    width = max([len("model")] + [len(n) for n, _ in rows])
    lines = [f"{'model':<{width}} | parameters", f"{'-' * width}-|-----------"]
    lines += [f"{name:<{width}} | {count:>10,}" for name, count in rows]
    return "\n".join(lines)


def match_width(build, target, widths=range(2, 513), tolerance=0.1):
    """(width, model) with the parameter count nearest ``target`` over the increasing ``widths``;
    ConfigError if the relative gap |count - target| / target exceeds ``tolerance``."""
    if target < 1:
        raise ConfigError(f"match_width: target must be >= 1 parameter, got {target!r}")
    best = None
    for w in widths:
        model = build(w)
        gap = abs(count_parameters(model) - target)
        if best is None or gap < best[0]:
            best = (gap, w, model)
        if count_parameters(model) > target:           # counts grow with width: no closer one follows
            break
    if best is None:
        raise ConfigError("match_width: no candidate widths given")
    gap, w, model = best
    if gap > tolerance * target:
        raise ConfigError(f"match_width: the nearest width {w} has {count_parameters(model)} parameters, "
                          f"{gap / target:.1%} from the target {target} (tolerance {tolerance:.0%})")
    return w, model


def size_table(build):
    """parameter_table of ``build(ITNetConfig.named(size))`` for every named size, e.g.
    ``print(size_table(lambda cfg: itnet_for_images(1, 10, cfg)))``."""
    from .config import SIZES, ITNetConfig
    return parameter_table({size: build(ITNetConfig.named(size)) for size in SIZES})
