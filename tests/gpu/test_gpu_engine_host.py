"""The engine's GPU entry points on a machine without CuPy: each refuses with a clear error instead of
copying silently or failing obscurely (the device runs are in test_gpu_engine_device.py)."""
import numpy as np
import pytest

import itnet_np as itn
from itnet_np.autograd import backend
from itnet_np.errors import DeviceError
from itnet_np.nn import functional as F


class FakeCupyGenerator:
    """Stands in for a cupy.random.Generator (backend.is_cupy looks at the type's module)."""

    def random(self, shape):
        return np.random.default_rng(0).random(shape)


FakeCupyGenerator.__module__ = "cupy.random._generator_api"


def test_dropout_refuses_a_generator_of_another_device():
    x = itn.tensor(np.ones((4, 5)))
    with pytest.raises(DeviceError, match=r"data live on cpu but rng is a cuda generator.*\.to\(device\)"):
        F.dropout(x, 0.5, rng=FakeCupyGenerator())
    rng = np.random.default_rng(1)
    out = F.dropout(x, 0.5, rng=rng)            # same device: as before
    keep = np.random.default_rng(1).random((4, 5)) >= 0.5
    np.testing.assert_array_equal(out.data, np.where(keep, 2.0, 0.0))


@pytest.mark.skipif(backend.gpu_available(), reason="CuPy sees a GPU here")
def test_cuda_generator_and_cuda_load_name_the_gpu_extra(tmp_path):
    with pytest.raises(DeviceError, match=r"itnet-np\[gpu\]"):
        backend.default_rng(0, "cuda")
    path = tmp_path / "c.npz"
    itn.save(path, {"w": np.arange(3.0)})
    with pytest.raises(DeviceError, match=r"itnet-np\[gpu\]"):
        itn.load(path, device="cuda")


def test_why_no_gpu_is_empty_exactly_when_a_gpu_is_usable(monkeypatch):
    """The one reason the engine, the gpu test marker and the device scripts give for a missing GPU."""
    if not backend.gpu_available():
        assert "cupy" in backend.why_no_gpu()
    monkeypatch.setattr(backend, "gpu_available", lambda: True)
    assert backend.why_no_gpu() == ""
    monkeypatch.setattr(backend, "gpu_available", lambda: False)
    monkeypatch.setattr(backend, "cupy_module", lambda: None)
    assert backend.why_no_gpu().startswith("cupy is not installed (pip install 'itnet-np[gpu]'")


def test_load_device_argument(tmp_path):
    path = tmp_path / "c.npz"
    itn.save(path, {"w": np.arange(3.0), "flags": np.array([True, False]), "name": "x"})
    tree = itn.load(path, device="cpu")
    np.testing.assert_array_equal(tree["w"], np.arange(3.0))
    assert tree["name"] == "x" and tree["flags"].dtype == bool
    with pytest.raises(DeviceError, match="load: device must be 'cpu' or 'cuda', got 'gpu'"):
        itn.load(path, device="gpu")


def test_generator_to_its_own_device_is_the_same_generator_and_module_to_cpu_keeps_it():
    rng = np.random.default_rng(3)
    assert backend.generator_to(rng, "cpu") is rng
    layer = itn.nn.Dropout(0.5, rng=rng)
    assert layer.to("cpu").rng is rng


class FakeCupyArray:
    """Stands in for a cupy.ndarray in the optimiser's state (backend.device_of looks at the type)."""

    shape = (3,)


FakeCupyArray.__module__ = "cupy._core.core"


def test_optimizer_state_on_another_device_raises_and_to_moves_it():
    p = itn.nn.Parameter(np.ones(3))
    opt = itn.optim.Adam([p], lr=0.1)
    p.grad = itn.tensor(np.ones(3))
    opt.step()
    assert opt.to("cpu") is opt
    saved = {k: v.copy() if hasattr(v, "copy") else v for k, v in next(iter(opt.state.values())).items()}
    next(iter(opt.state.values()))["exp_avg"] = FakeCupyArray()
    with pytest.raises(DeviceError, match=r"Adam: parameter 'param_0' is on cpu but its state 'exp_avg' is on cuda; "
                                          r"call optimizer.to\('cpu'\)"):
        opt.step()
    next(iter(opt.state.values())).update(saved)
    opt.step()
