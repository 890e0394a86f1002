"""How a layer asks for Monte Carlo integration: ``IntegralTransform(..., integration=MonteCarlo(...))``.

The rule (one, documented on IntegralTransform.integration): a layer with a MonteCarlo integration
samples while it is in training mode (``layer.train()``, the default) and evaluates the integral
exactly in eval mode (``layer.eval()``); ``layer.integration = 'exact'`` turns sampling off for good.
So training steps are sampled and evaluation is exact without changing the layer.

Each sampled forward gets the next value of the layer's call counter; the draws of that forward are
a function of (seed, counter, query tile) only, so they are regenerated in the backward instead of
stored, and a run repeats exactly for a fixed seed.
"""
from dataclasses import dataclass

from ...errors import ConfigError
from .._config import choice, flag, integer, number

PROPOSALS = ("uniform", "locality", "proxy", "stratified")


@dataclass(frozen=True)
class MonteCarlo:
    """``MonteCarlo(samples=128, proposal='uniform', control_variate=False, seed=0, replace=True,
    tile=64, mix=0.25, locality_scale=None, rank=16)``.

    samples: S, draws per query tile of ``tile`` rows (a multiple of 64, the fused kernels' query
    tile), shared by the tile's queries, the batch and the heads. A tile whose support holds at most
    S sources is summed exactly. proposal: 'uniform' over the tile's support, 'locality' (mass
    decaying as exp(-d / locality_scale) with the distance d of p_j to the tile's bounding box),
    'proxy' (the integrand's magnitude at the tile's middle query), 'stratified' (S equal index
    strata of the support, one uniform draw in each). Non-uniform proposals are mixed with the
    uniform one, q = (1 - mix) q' + mix / n, so q > 0 on the whole support. replace: False draws
    without replacement (uniform only: the Horvitz-Thompson weights n / S). control_variate: the
    rank-``rank`` skeleton (CUR) approximation of the kernel is integrated exactly, Monte Carlo only
    estimates the residual ('none' and 'sum').
    """

    samples: int = 128
    proposal: str = "uniform"
    control_variate: bool = False
    seed: int = 0
    replace: bool = True
    tile: int = 64
    mix: float = 0.25
    locality_scale: float = None
    rank: int = 16

    def __post_init__(self):
        name = "MonteCarlo"
        integer(name, "samples", self.samples)
        choice(name, "proposal", self.proposal, PROPOSALS)
        flag(name, "control_variate", self.control_variate)
        integer(name, "seed", self.seed, 0)
        flag(name, "replace", self.replace)
        integer(name, "tile", self.tile)
        integer(name, "rank", self.rank)
        if self.tile % 64:
            raise ConfigError(f"{name}: tile must be a multiple of 64 (the fused kernels' query tile), "
                              f"got {self.tile}")
        mix = number(name, "mix", self.mix, minimum=0.0)
        if not 0 < mix <= 1:
            raise ConfigError(f"{name}: mix must be in (0, 1] (q > 0 on the whole support), got {self.mix!r}")
        if self.locality_scale is not None:
            number(name, "locality_scale", self.locality_scale, positive=True)
        if not self.replace and self.proposal != "uniform":
            raise ConfigError(f"{name}: replace=False needs proposal='uniform' (Horvitz-Thompson weights "
                              f"of a non-uniform scheme without replacement are not implemented), got "
                              f"proposal={self.proposal!r}")


@dataclass(frozen=True)
class Sampling:
    """What a TransformCall carries when it asks to be sampled: the method and the call counter."""

    method: MonteCarlo
    counter: int


def check_integration(value, owner="IntegralTransform"):
    """'exact' or a MonteCarlo (ConfigError otherwise)."""
    if value == "exact" or isinstance(value, MonteCarlo):
        return value
    raise ConfigError(f"{owner}: integration must be 'exact' or a MonteCarlo(...), got {value!r}")
