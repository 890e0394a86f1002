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


@pytest.fixture
def rng():
    return np.random.default_rng(0)
