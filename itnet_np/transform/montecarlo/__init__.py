"""Monte Carlo integration of the operator: ``IntegralTransform(..., integration=MonteCarlo(...))``.

config.py (MonteCarlo, the train/eval rule), draws.py (proposals and regenerable draws),
engine_ops.py (the sampled fused ops), plan.py (the 'montecarlo' backend and the estimators),
control.py (the low-rank control variate). The theory is in docs/theory.md, "Monte Carlo integration".
"""
from .config import PROPOSALS, MonteCarlo, Sampling  # noqa: F401
