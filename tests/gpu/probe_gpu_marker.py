"""A gpu-marked test for test_gpu_marker.py to run in a child pytest (not collected on its own)."""
import pytest


@pytest.mark.gpu
def test_gpu_marked_probe():
    from itnet_np.autograd.backend import gpu_available
    assert gpu_available()
