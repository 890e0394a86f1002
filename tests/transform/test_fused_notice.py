"""The one-line stderr notice before a fused kernel compiles (issue 7): printed once per kernel family
and dtype per process, and not when numba's on-disk cache already holds the kernel.

The notice and the compile check are tested on their own (a fresh, uncached Numba function), then
end to end: a second call in a process prints nothing, and a second process (the cache now written
by the first) prints nothing either, whatever the cache held before the test.
"""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

numba = pytest.importorskip("numba")

from itnet_np import _numba as _notice

LINE = "itnet-np: compiling fused kernels"


def test_notice_is_printed_once_per_family_and_dtype(capsys):
    assert _notice.notice("test family a", np.dtype(np.float32))
    assert not _notice.notice("test family a", np.dtype(np.float32))
    assert _notice.notice("test family a", np.dtype(np.float64))
    err = capsys.readouterr().err.splitlines()
    assert err == [f"{LINE} (test family a, float32), first use only; cached afterwards",
                   f"{LINE} (test family a, float64), first use only; cached afterwards"]


def test_will_compile_and_announce_on_a_fresh_function(capsys):
    @numba.njit(cache=False)
    def twice(x):
        return 2 * x

    args = (np.ones(3),)
    assert _notice.will_compile(twice, args)
    assert _notice.announce("test family b", twice, args)
    twice(*args)
    assert not _notice.will_compile(twice, args)             # compiled in this process now
    assert _notice.will_compile(twice, (np.ones(3, np.int64),))   # another signature would compile
    assert not _notice.announce("test family b", twice, args)
    err = capsys.readouterr().err.splitlines()
    assert err == [f"{LINE} (test family b, float64), first use only; cached afterwards"]


SCRIPT = textwrap.dedent("""
    import numpy as np
    import itnet_np as itn
    from itnet_np import transform as T
    op = T.IntegralTransform(2, 2, T.StencilKernel([-1, 0], dtype=np.float64), normalization="sum",
                             backend="numba", rng=0, dtype=np.float64)
    x = itn.tensor(np.random.default_rng(0).standard_normal((1, 9, 2)), requires_grad=True)
    for _ in range(2):
        op(x).sum().backward()
        print("call done", flush=True)
""")


def run_script():
    return subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600, check=False)


def test_no_notice_on_a_second_call_nor_from_the_disk_cache():
    first = run_script()
    assert first.returncode == 0, first.stderr
    # within a process: at most one notice per kernel (the second call compiles nothing)
    assert first.stderr.count("(stencil forward, float64)") <= 1
    assert first.stderr.count("(stencil backward, float64)") <= 1
    assert first.stdout.count("call done") == 2
    second = run_script()                        # the first process left the kernels in numba's cache
    assert second.returncode == 0, second.stderr
    assert LINE not in second.stderr
