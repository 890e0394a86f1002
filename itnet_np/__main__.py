"""``python -m itnet_np`` runs the ``itnet`` command line (see :mod:`itnet_np.cli`)."""
import sys

from .cli import main

sys.exit(main())
