"""Test configuration: hypothesis profiles, markers, and the Agg backend for plots.

Profiles: ``ci`` (bounded examples, no deadline, derandomised) and ``dev`` (more examples).
Select with ``--hypothesis-profile=ci`` or ``HYPOTHESIS_PROFILE=ci``.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("MPLBACKEND", "Agg")

settings.register_profile("ci", max_examples=15, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU and cupy; skipped (with a reason) otherwise")
    config.addinivalue_line("markers", "slow: long-running; deselect with -m 'not slow'")


# A `gpu` test skips with a reason when CuPy sees no CUDA device; ITNET_REQUIRE_GPU=1 (set on GPU
# machines) turns that skip, and any other skip of a gpu test, into a failure.
REQUIRE_GPU = os.environ.get("ITNET_REQUIRE_GPU", "0") not in ("", "0")


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu") is not None:
        from itnet_np.autograd.backend import why_no_gpu
        why = why_no_gpu()
        if why:
            (pytest.fail if REQUIRE_GPU else pytest.skip)(f"gpu test: {why} (ITNET_REQUIRE_GPU=1 makes this fail)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_GPU and report.skipped and item.get_closest_marker("gpu") is not None:
        report.outcome = "failed"
        report.longrepr = f"ITNET_REQUIRE_GPU=1: gpu test skipped: {report.longrepr}"


@pytest.fixture
def rng():
    return np.random.default_rng(0)
