"""Runs the numba-CUDA kernel tests (sim_gpu_kernels.py, sim_gpu_scan.py, sim_gpu_stencil.py) and the 'cuda' plan's runs
(sim_gpu_plan.py) under numba's CUDA simulator, in a child process.

NUMBA_ENABLE_CUDASIM is read once, when numba loads, and replaces numba.cuda for the whole process;
setting it here would either come too late (numba already loaded by the CPU kernels' tests) or leak
into them. A child pytest with the variable set is robust whichever tests share this process. Not
marked ``gpu``: the simulator needs no device, so this runs in CI (about 70 s on 2 cores).
"""
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def test_gpu_kernels_pass_under_the_cuda_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    env.pop("ITNET_REQUIRE_GPU", None)          # the simulator is not a GPU
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(HERE / "sim_gpu_kernels.py"), str(HERE / "sim_gpu_plan.py"),
                           str(HERE / "sim_gpu_scan.py"), str(HERE / "sim_gpu_stencil.py")],
                          cwd=HERE.parent.parent, env=env, capture_output=True, text=True, timeout=900, check=False)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"simulator tests failed (exit {proc.returncode}):\n{tail}"
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.splitlines()[-1], tail
