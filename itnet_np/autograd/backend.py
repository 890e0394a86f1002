"""NumPy / CuPy dispatch, in one place.

Every difference between the two array libraries lives here. CuPy is imported lazily, on first
use, so that a CPU-only install never pays for it and never fails because of it.
"""
import numpy as np

from ..errors import DeviceError

_cupy = None
_cupy_checked = False


def cupy_module():
    """The ``cupy`` module, or None when it is not installed (imported once, lazily)."""
    global _cupy, _cupy_checked
    if not _cupy_checked:
        _cupy_checked = True
        try:
            import cupy
            _cupy = cupy
        except Exception:  # noqa: BLE001  ImportError, or a broken CUDA install
            _cupy = None
    return _cupy


def is_cupy(array):
    """True when ``array`` is a cupy.ndarray (checked without importing cupy)."""
    return type(array).__module__.split(".")[0] == "cupy"


def xp_of(array):
    """The array module (numpy or cupy) that owns ``array``."""
    if type(array) is np.ndarray or not is_cupy(array):
        return np
    return cupy_module()


def device_of(array):
    """'cuda' for a cupy array, 'cpu' for everything else."""
    return "cuda" if is_cupy(array) else "cpu"


def gpu_available():
    """True when cupy is importable and sees at least one CUDA device."""
    cp = cupy_module()
    if cp is None:
        return False
    try:
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001  a driver or runtime error means: no usable device
        return False


def why_no_gpu():
    """'' when a GPU is usable (gpu_available()), else why not, in words, with what to install."""
    if gpu_available():
        return ""
    return ("cupy is not installed (pip install 'itnet-np[gpu]': cupy-cuda12x and numba-cuda; "
            "'itnet-np[gpu13]' for CUDA 13)" if cupy_module() is None
            else "cupy is installed but sees no CUDA device")


def to_device(array, device):
    """Copy ``array`` to ``device`` ('cpu' or 'cuda'); the only place host/device copies happen."""
    if device not in ("cpu", "cuda"):
        raise DeviceError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device == device_of(array):
        return array
    if device == "cpu":
        return array.get()
    if not gpu_available():
        raise DeviceError("to('cuda') needs CuPy and a CUDA GPU; " + why_no_gpu())
    return cupy_module().asarray(array)


def scatter_add(target, indices, values):
    """In-place ``target[indices] += values`` that adds repeated indices correctly.

    ``values`` is broadcast to the indexed shape first: NumPy 2.4's ``np.add.at`` mis-sums when it
    has to broadcast values against a multi-dimensional index.
    """
    xp = xp_of(target)
    values = xp.broadcast_to(values, target[indices].shape)
    if is_cupy(target):
        import cupyx
        cupyx.scatter_add(target, indices, values)
    else:
        np.add.at(target, indices, values)
    return target


def default_rng(seed=None, device="cpu"):
    """A random generator for ``device``."""
    if device == "cuda":
        if not gpu_available():
            raise DeviceError("default_rng(device='cuda') needs CuPy and a CUDA GPU; " + why_no_gpu())
        return cupy_module().random.default_rng(seed)
    return np.random.default_rng(seed)


def rng_device(rng):
    """'cuda' for a CuPy Generator, 'cpu' for a NumPy one."""
    return "cuda" if is_cupy(rng) else "cpu"


def generator_to(rng, device):
    """A generator on ``device`` that continues ``rng``'s stream deterministically: the same rng
    state always gives the same new generator (seeded from one 63-bit draw of ``rng``), so seeded
    runs stay reproducible when a module moves (its masks differ from the other device's, as the
    two libraries' bit generators differ). ``rng`` itself when it is on ``device`` already."""
    if rng_device(rng) == device:
        return rng
    seed = rng.integers(0, 2 ** 63 - 1, dtype=np.int64)
    return default_rng(int(seed), device)
