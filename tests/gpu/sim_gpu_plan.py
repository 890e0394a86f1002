"""The 'cuda' plan end to end under numba's CUDA simulator: an IntegralTransform whose backend hands
its call record to gpu.plan as if the arrays were CuPy (_gpu_calls.not_numpy), against the same
operator on backend='dense': output and every gradient (input and parameters), float64.

Run by test_gpu_kernels_sim.py in a child process with NUMBA_ENABLE_CUDASIM=1 (see there)."""
import os
from dataclasses import replace

import numpy as np
import pytest
from _gpu_calls import captured_call, decay_op, dot_op, mlp_op, not_numpy, selective_op

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("run through test_gpu_kernels_sim.py (needs NUMBA_ENABLE_CUDASIM=1 before numba loads)",
                allow_module_level=True)

from itnet_np.gpu import plan as gpu_plan

import itnet_np as itn
from itnet_np import transform as T
from itnet_np.transform import planner

T.register_backend("cuda_sim", lambda call: gpu_plan.plan(not_numpy(call)))

CASES = [
    (dot_op, {"support": "causal"}, 37),
    (dot_op, {"normalization": "sum", "quadrature": "mean"}, 35),
    (dot_op, {"normalization": "none", "window": 4, "quadrature": "mean"}, 41),
    (dot_op, {"quadrature": "mean"}, 33),                 # softmax with weights: the log w key column
    (mlp_op, {"support": "causal"}, 34),
    (mlp_op, {"normalization": "none", "quadrature": "mean"}, 39),
    (selective_op, {"support": "causal"}, 71),            # crosses the scan's 64-step chunk
    (selective_op, {"support": "strict_causal", "quadrature": "mean"}, 33),
    (decay_op, {"support": "causal"}, 67),
]


def _run(make, kw, n, backend):
    op = make(backend, **kw)
    x = itn.tensor(np.random.default_rng(n).standard_normal((2, n, 4)), requires_grad=True)
    y = op(x)
    (y * np.random.default_rng(1).standard_normal(y.shape)).sum().backward()
    return y.data, x.grad.data, {name: p.grad.data for name, p in op.named_parameters()}


@pytest.mark.parametrize("make, kw, n", CASES)
def test_cuda_plan_matches_dense_forward_and_gradients(make, kw, n):
    text = make("cuda_sim", **kw).explain(np.zeros((2, n, 4)))
    assert text.startswith("backend='cuda_sim' runs 'cuda'"), text
    got, want = _run(make, kw, n, "cuda_sim"), _run(make, kw, n, "dense")
    np.testing.assert_allclose(got[0], want[0], rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-11)
    assert got[2].keys() == want[2].keys()
    for name in want[2]:
        np.testing.assert_allclose(got[2][name], want[2][name], rtol=1e-10, atol=1e-11, err_msg=name)


def test_cuda_plan_declines_kernels_it_does_not_cover():
    call = not_numpy(captured_call(dot_op("dense"), np.ones((1, 5, 4))))
    assert isinstance(gpu_plan.plan(call), planner.Plan)
    answer = gpu_plan.plan(replace(call, kernel=object()))
    assert isinstance(answer, planner.Decline) and "GPU kernels so far" in answer.reason
    answer = gpu_plan.plan(replace(call, kernel=T.MLPKernel(4, heads=2, hidden=4, activation="sin", rng=0)))
    assert isinstance(answer, planner.Decline) and "activation 'sin'" in answer.reason
