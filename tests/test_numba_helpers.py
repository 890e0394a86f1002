"""itnet_np._numba: run_tasks runs every task once on the thread pool, and holds the BLAS at one
thread only for kernels that call it (blas=True); the BLAS setting is restored afterwards."""
import numpy as np
import pytest

numba = pytest.importorskip("numba")

from itnet_np import _numba


@numba.njit(nogil=True)
def _mark(first, step, n_tasks, hits):
    for t in range(first, n_tasks, step):
        hits[t] += 1


class FakeBlas:
    """(get, set) thread-count calls standing in for OpenBLAS's, recording every set."""

    def __init__(self, threads):
        self.threads, self.sets = threads, []

    def get(self):
        return self.threads

    def set(self, n):
        self.sets.append(n)
        self.threads = n


@pytest.mark.parametrize("n_tasks", [1, 2, 7])
@pytest.mark.parametrize("blas", [False, True])
def test_run_tasks_runs_each_task_once_and_touches_the_blas_only_when_asked(monkeypatch, n_tasks, blas):
    fake = FakeBlas(threads=4)
    monkeypatch.setattr(_numba, "_blas_thread_control", lambda: (fake.get, fake.set))
    hits = np.zeros(n_tasks, np.int64)
    _numba.run_tasks(_mark, n_tasks, hits, family="test tasks", blas=blas)
    np.testing.assert_array_equal(hits, np.ones(n_tasks, np.int64))
    assert fake.sets == ([1, 4] if blas else [])       # held at 1 while running, then restored
    assert fake.threads == 4
