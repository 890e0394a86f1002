"""The verification suite's checks, one module per family, apart from the constructions they exercise.

Each module registers its reductions with :func:`itnet_np.verify.reduction` when imported
(:func:`itnet_np.verify.load_reductions` imports them all). A check draws one random configuration
from the generator it is given, builds the ITNet construction of :mod:`itnet_np.proofs` and measures
it against the independent reference of :mod:`itnet_np.proofs.reference`: the forward error and the
directional gradient error. The proofs modules import nothing from here, from itnet_np.verify or
from the command line.
"""
