"""GPU kernels for itnet-np, installed as ``itnet_np.gpu`` (the source lives in the top-level ``gpu/``).

One kernel per module: the CUDA source (a ``*.cu`` file loaded with CuPy's RawModule, or a
numba-CUDA function), its launch wrapper, and the dense reference it must match (tested under
``tests/``, marked ``gpu``, skipped with a reason when no CUDA device is present). Importing this
package never imports CuPy: wrappers import it lazily through :mod:`itnet_np.autograd.backend`, so
a CPU-only install can always ``import itnet_np.gpu``.
"""
