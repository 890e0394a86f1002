"""The banded StencilKernel on a CUDA device: IntegralTransform(backend='cuda') (gpu/stencil.py through
stencil_plan.plan_stencil) against the CPU dense float64 path, forward and every gradient; float32
within 2x the error of the dense path run in float32 on the device; no hidden host/device copies over
a forward and backward. Marked ``gpu``: skipped without a device, failures under ITNET_REQUIRE_GPU=1.
(Without a device the same code runs under the simulator: sim_gpu_stencil.py.)"""
import numpy as np
import pytest
from test_gpu_engine_device import counted_copies, host

import itnet_np as itn
from itnet_np import transform as T
from itnet_np.autograd import backend

pytestmark = pytest.mark.gpu
F64 = np.float64


@pytest.fixture
def cp():
    return backend.cupy_module()


def _op(kind, name, dtype):
    if kind == "1d":
        kernel = T.StencilKernel([-3, -1, 0, 2], heads=2, rng=0, dtype=dtype)
        kernel.table.data[...] = np.abs(kernel.table.data) + 0.5           # 'sum': rows away from 0
        return T.IntegralTransform(8, 8, kernel, normalization="sum", support="causal", quadrature="mean",
                                   backend=name, rng=1, dtype=dtype), None
    kernel = T.StencilKernel(T.conv_offsets((3, 3)) - 1, heads=3, rng=0, dtype=dtype)
    return (T.IntegralTransform(8, 9, kernel, normalization="none", backend=name, rng=1, dtype=dtype),
            T.grid_positions((17, 19), dtype=dtype)[None])


def _float32(kind, name, like):
    """The float32 operator on the device holding ``like``'s parameters."""
    op = _op(kind, name, np.float32)[0]
    for p, q in zip(op.parameters(), like.parameters()):
        p.data = q.data.astype(np.float32)
    return op.to("cuda")


@pytest.mark.parametrize("kind", ["1d", "2d"])
def test_operator_cuda_stencil_matches_dense_on_the_cpu(kind, cp):
    n = 301 if kind == "1d" else 17 * 19
    a = np.random.default_rng(9).standard_normal((2, n, 8))
    cpu_op, pos = _op(kind, "dense", F64)
    xc = itn.tensor(a, requires_grad=True)
    yc = cpu_op(xc, positions=pos)
    yc.sum().backward()
    gpu_op, _ = _op(kind, "cuda", F64)
    gpu_op = gpu_op.to("cuda")
    gpos = None if pos is None else backend.to_device(pos, "cuda")
    assert gpu_op.explain(backend.to_device(a, "cuda"), positions=gpos).startswith("backend='cuda' runs 'cuda'")
    xg = itn.tensor(backend.to_device(a, "cuda"), requires_grad=True)
    y = gpu_op(xg, positions=gpos)
    y.sum().backward()
    np.testing.assert_allclose(host(y), yc.data, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(host(xg.grad), xc.grad.data, rtol=1e-9, atol=1e-11)
    for (name, p), (_, q) in zip(gpu_op.named_parameters(), cpu_op.named_parameters()):
        np.testing.assert_allclose(host(p.grad), q.grad.data, rtol=1e-9, atol=1e-11, err_msg=name)
    a32 = backend.to_device(a.astype(np.float32), "cuda")
    p32 = None if pos is None else backend.to_device(pos.astype(np.float32), "cuda")
    fused = host(_float32(kind, "cuda", cpu_op)(a32, positions=p32))
    dense32 = host(_float32(kind, "dense", cpu_op)(a32, positions=p32))
    assert not np.isnan(fused).any()
    assert np.abs(fused - yc.data).max() <= 2 * np.abs(dense32 - yc.data).max() + 1e-6


def test_cuda_stencil_makes_no_hidden_copies(cp, monkeypatch):
    op = _op("1d", "cuda", np.float32)[0].to("cuda")
    x = itn.tensor(backend.to_device(np.ones((2, 97, 8), np.float32), "cuda"), requires_grad=True)
    op(x).sum().backward()                       # warm-up: compiles the kernels
    with counted_copies(cp, monkeypatch) as counts:
        op(x).sum().backward()
    assert all(c == 0 for c in counts.values()), counts
