"""The 'cuda' backend's decisions on a CPU-only machine: it declines NumPy data in words (so 'auto'
keeps choosing 'numba' or 'dense'), an explicit backend='cuda' raises ConfigError with that reason,
without a device it declines naming what to install, and importing it loads neither CuPy nor
numba.cuda. (Runs of the plan: sim_gpu_kernels.py under the simulator, test_gpu_device.py on a GPU.)"""
import subprocess
import sys

import numpy as np
import pytest
from _gpu_calls import captured_call, dot_op, mlp_op, not_numpy

import itnet_np as itn
from itnet_np.errors import ConfigError
from itnet_np.transform import planner
from itnet_np.transform.fused.numba_plans import MIN_PAIRS

NUMPY_REASON = "the data are NumPy arrays; the 'cuda' backend needs CuPy arrays"


def _no_device():
    try:
        from numba import cuda
        return not cuda.is_available()
    except Exception:  # noqa: BLE001
        return True


def test_importing_the_cuda_plan_loads_neither_cupy_nor_numba_cuda():
    code = ("import sys, itnet_np.gpu, itnet_np.gpu.plan; from itnet_np.transform import planner; "
            "planner.available_backends(); print(sorted(m for m in ('cupy', 'numba.cuda') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert "cuda" in planner.available_backends()


@pytest.mark.parametrize("make", [dot_op, mlp_op])
def test_cuda_declines_numpy_data_and_auto_keeps_numba(make):
    n = int(np.ceil(np.sqrt(max(MIN_PAIRS.values()))))
    x = np.random.default_rng(0).standard_normal((1, n, 4))
    auto = make("auto", support="causal")
    text = auto.explain(x)
    assert text.startswith("backend='auto' runs 'numba'"), text
    assert f"  - cuda: declines: {NUMPY_REASON}" in text
    np.testing.assert_allclose(auto(x).data, make("dense", support="causal")(x).data, rtol=1e-10, atol=1e-12)
    with pytest.raises(ConfigError, match=r"backend='cuda' cannot run this call: " + NUMPY_REASON):
        make("cuda")(x)


@pytest.mark.skipif(not _no_device(), reason="a CUDA device (or the simulator) is present here")
def test_without_a_device_the_plan_declines_naming_the_gpu_extra():
    from itnet_np.gpu.plan import plan
    call = not_numpy(captured_call(dot_op("dense"), np.ones((1, 5, 4))))
    answer = plan(call)
    assert isinstance(answer, planner.Decline)
    assert "pip install 'itnet-np[gpu]'" in answer.reason and "cupy-cuda12x" in answer.reason
    assert "numba-cuda" in answer.reason and "cupy-cuda13x" in answer.reason
    from itnet_np.gpu.attention import attention_forward
    q = np.ones((1, 1, 3, 2))
    with pytest.raises(ConfigError, match=r"need a CUDA device.*itnet-np\[gpu\]"):
        attention_forward(q, q, q, 1.0)


def test_to_cuda_without_cupy_names_the_extra():
    from itnet_np.autograd.backend import gpu_available
    if gpu_available():
        pytest.skip("CuPy sees a GPU here")
    with pytest.raises(itn.DeviceError, match=r"itnet-np\[gpu\]"):
        itn.tensor([1.0]).to("cuda")
