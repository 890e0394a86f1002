"""The `gpu` marker (tests/conftest.py): a gpu test skips with a reason when CuPy sees no device, and
ITNET_REQUIRE_GPU=1 turns that skip into a failure, so a GPU run cannot pass by skipping."""
import os
import subprocess
import sys
from pathlib import Path

from itnet_np.autograd.backend import gpu_available

HERE = Path(__file__).resolve().parent


def _run(require):
    env = dict(os.environ)
    env.pop("ITNET_REQUIRE_GPU", None)
    if require:
        env["ITNET_REQUIRE_GPU"] = "1"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           str(HERE / "probe_gpu_marker.py")], cwd=HERE.parent.parent, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_gpu_tests_skip_with_a_reason_and_fail_when_a_gpu_is_required():
    relaxed, strict = _run(False), _run(True)
    if gpu_available():
        assert relaxed.returncode == 0 and strict.returncode == 0, relaxed.stdout + strict.stdout
        return
    assert relaxed.returncode == 0 and "1 skipped" in relaxed.stdout, relaxed.stdout
    assert "gpu test: cupy" in relaxed.stdout
    assert strict.returncode != 0 and "skipped" not in strict.stdout.splitlines()[-1], strict.stdout
    assert "gpu test: cupy" in strict.stdout
