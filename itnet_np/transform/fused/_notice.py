"""A one-line notice on stderr before a fused kernel compiles: the first call of a kernel family
compiles for 8 to 45 s (numba), which otherwise looks like a hang.

``announce(family, dispatcher, args)`` is called just before ``dispatcher(*args)``. It prints

    itnet-np: compiling fused kernels (<family>, <dtype>), first use only; cached afterwards

at most once per (family, dtype) per process, and only when the call will really compile: the
dispatcher holds no overload for these argument types yet AND numba's on-disk cache (cache=True)
holds none either. Reading the cache index uses numba internals (``_cache._index_key`` and the index
file); if they are unavailable the notice errs on the side of being printed.
"""
import sys
import threading

import numpy as np

_checked = set()
_lock = threading.Lock()


def notice(family, dtype):
    """Print the notice for (family, dtype) once per process; True when it was printed now."""
    key = (family, str(dtype))
    with _lock:
        if key in _checked:
            return False
        _checked.add(key)
    print(f"itnet-np: compiling fused kernels ({family}, {dtype}), first use only; cached afterwards",
          file=sys.stderr, flush=True)
    return True


def will_compile(dispatcher, args):
    """Whether ``dispatcher(*args)`` compiles: no in-process overload matches the argument types and
    numba's disk cache has no entry for them (True when that cannot be told)."""
    try:
        sig = tuple(dispatcher.typeof_pyval(a) for a in args)
    except Exception:  # noqa: BLE001  (numba internals moved: compiles if nothing is compiled yet)
        return not dispatcher.signatures
    if sig in dispatcher.overloads:
        return False
    try:
        cache = dispatcher._cache
        key = cache._index_key(sig, dispatcher.targetctx.codegen())
        return key not in cache._cache_file._load_index()
    except Exception:  # noqa: BLE001  (no disk cache, or its internals moved: it will compile)
        return True


def announce(family, dispatcher, args):
    """The notice for ``family`` when ``dispatcher(*args)`` is about to compile (module docstring)."""
    dtype = next((a.dtype for a in args if isinstance(a, np.ndarray) and a.dtype.kind == "f"), None)
    if (family, str(dtype)) in _checked:          # fast path: one set lookup per call afterwards
        return False
    if will_compile(dispatcher, args):
        return notice(family, dtype)
    with _lock:
        _checked.add((family, str(dtype)))
    return False
