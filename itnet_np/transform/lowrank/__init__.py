"""Low-rank evaluation of the operator: the 'lowrank' backend (plan.py, O((N + M) r d) for a
LowRankKernel), rank-R approximations of a given kernel to compare with (approx.py: skeleton /
Nystrom landmarks, randomly pivoted Cholesky, Performer positive random features, the singular-value
mass captured at R) and distillation of a trained MLPKernel into a LowRankKernel (distill.py).
"""
