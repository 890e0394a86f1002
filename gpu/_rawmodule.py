"""CUDA C++ kernels of ``itnet_np.gpu`` (the ``*.cu`` files beside this module), compiled at run time
by NVRTC through CuPy's ``RawModule`` and cached.

    kernel = raw_kernel("attention_mma.cu", "attention_forward<__half, 64>", shared_bytes=72 * 1024)
    kernel(grid, block, (q, k, v, out, np.int32(n), np.float32(scale)), shared_mem=72 * 1024)

- One ``RawModule`` per (source file, kernel instantiation, compile options): the template arguments
  (dtype, head width, tile shape) are part of the name expression, so each shape compiles once per
  process and NVRTC's own cache keeps it across processes.
- ``shared_bytes`` above the 48 KiB every device grants by default is requested explicitly
  (``max_dynamic_shared_size_bytes``), as the CUDA programming guide requires for dynamic shared memory.
- Every ``.cu`` file must also compile on its own with ``nvcc -c`` (CI does, for sm_80 and sm_90,
  with ``-DITNET_INSTANTIATE``): a file instantiates its templates for the shapes it supports
  under ``#ifdef ITNET_INSTANTIATE``, so that a type error in a template body fails that compile even
  on a machine without a GPU. ``tests/gpu/nvcc_check.py`` runs it and reports registers, shared
  memory and spills per kernel.

Importing this module imports no CuPy: it loads when a kernel is first requested.
"""
import functools
from pathlib import Path

from itnet_np.errors import ConfigError

from ._cuda import INSTALL

SOURCE_DIR = Path(__file__).resolve().parent
DEFAULT_SHARED_BYTES = 48 * 1024
NVRTC_OPTIONS = ("--std=c++17",)


def cupy():
    """The ``cupy`` module with a usable CUDA device, else a ConfigError saying what to install."""
    try:
        import cupy as cp
    except Exception as exc:
        raise ConfigError(f"the CuPy kernels need cupy, which cannot be imported here "
                          f"({type(exc).__name__}: {exc}); {INSTALL}") from exc
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001  (no driver, no device)
        count = 0
    if count == 0:
        raise ConfigError("the CuPy kernels need a CUDA device (cupy sees none); " + INSTALL)
    return cp


def cuda_source(filename):
    """The text of ``gpu/<filename>`` (ConfigError naming the file when it is not there)."""
    path = SOURCE_DIR / filename
    if path.suffix != ".cu" or path.parent != SOURCE_DIR:
        raise ConfigError(f"cuda_source: expected the name of a .cu file in {SOURCE_DIR}, got {filename!r}")
    if not path.is_file():
        raise ConfigError(f"cuda_source: {path} does not exist (is the package installed with its *.cu files?)")
    return path.read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def _module(filename, name_expression, options):
    cp = cupy()
    return cp.RawModule(code=cuda_source(filename), options=NVRTC_OPTIONS + options,
                        name_expressions=(name_expression,))


@functools.lru_cache(maxsize=None)
def raw_kernel(filename, name_expression, options=(), shared_bytes=0):
    """The compiled kernel ``name_expression`` (for example ``"attention_forward<__half, 64, 64>"``) of
    ``gpu/<filename>``, allowed ``shared_bytes`` of dynamic shared memory."""
    if not isinstance(options, tuple) or not all(isinstance(o, str) for o in options):
        raise ConfigError(f"raw_kernel: options must be a tuple of strings, got {options!r}")
    if not isinstance(shared_bytes, int) or shared_bytes < 0:
        raise ConfigError(f"raw_kernel: shared_bytes must be a non-negative int, got {shared_bytes!r}")
    kernel = _module(filename, name_expression, options).get_function(name_expression)
    if shared_bytes > DEFAULT_SHARED_BYTES:
        kernel.max_dynamic_shared_size_bytes = shared_bytes
    return kernel
