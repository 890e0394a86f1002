"""The 'cupy' backend's decisions (gpu/plan_cupy.py), on a machine without a GPU: it declines NumPy data
and non-float16 data in words (so 'auto' goes on to 'numba', 'dense' or 'cuda'), declines without a
device naming what to install, and, with a device faked by monkeypatching (``fake_device``), accepts
exactly the float16 softmax attention on an index band with head dim 64 / 128 and declines every other
option with its reason. Importing it loads no CuPy. (Runs of accepted plans: test_cupy_attention.py's
``gpu`` tests.)"""
import subprocess
import sys
import types
from dataclasses import replace

import numpy as np
import pytest
from _gpu_calls import captured_call, dot_op, not_numpy
from itnet_np.gpu import plan_cupy

import itnet_np as itn
from itnet_np import transform as T
from itnet_np.errors import ConfigError
from itnet_np.transform import planner
from itnet_np.transform.kernels.base import Projection

NUMPY_REASON = "the data are NumPy arrays; the 'cupy' backend needs CuPy float16 arrays on a GPU"
H100_SHARED = 232448          # bytes per block with the opt-in (sm_90); sm_80: 166912, sm_86 / sm_89: 101376


def half(call):
    """The same call with float16 q, k, values (and weights), presented as device data (on_numpy False)."""
    def f16(t):
        return None if t is None else np.asarray(getattr(t, "data", t)).astype(np.float16)
    proj = Projection({**call.proj.query, "q": f16(call.proj.query["q"])},
                      {**call.proj.source, "k": f16(call.proj.source["k"])})
    return not_numpy(replace(call, proj=proj, values=f16(call.values), weights=f16(call.weights)))


def attention(head_dim=64, heads=2, value_dim=None, normalization="softmax", **kw):
    kernel = T.DotProductKernel(8, heads=heads, head_dim=head_dim, rng=0, dtype=np.float32,
                                position_bias=kw.pop("position_bias", None))
    return T.IntegralTransform(8, 8, kernel, embed_dim=heads * (value_dim or head_dim), normalization=normalization,
                               backend="dense", rng=1, dtype=np.float32, **kw)


def x_of(n, b=1):
    return np.random.default_rng(n).standard_normal((b, n, 8)).astype(np.float32)


@pytest.fixture
def fake_device(monkeypatch):
    """A CUDA device of compute capability 9.0 with H100's shared memory, as far as the plan can tell."""
    monkeypatch.setattr(plan_cupy, "device_problem", lambda: "")
    monkeypatch.setattr(plan_cupy, "device_shared_limit", lambda: H100_SHARED)


def test_importing_the_plan_loads_no_cupy_and_auto_asks_it_before_cuda():
    code = ("import sys, itnet_np.gpu.plan_cupy; from itnet_np.transform import planner; "
            "names = planner.available_backends(); print('cupy' in sys.modules, names.index('cupy') < names.index('cuda'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]


def test_numpy_data_decline_and_auto_keeps_numba():
    x = np.random.default_rng(0).standard_normal((1, 64, 4))
    text = dot_op("auto", support="causal").explain(x)
    assert text.startswith("backend='auto' runs 'numba'"), text
    assert f"  - cupy: declines: {NUMPY_REASON}" in text
    with pytest.raises(ConfigError, match=r"backend='cupy' cannot run this call: the data are NumPy arrays"):
        dot_op("cupy")(x)


def test_float32_device_data_decline_naming_the_cuda_backend():
    call = not_numpy(captured_call(attention(), x_of(5)))
    answer = plan_cupy.plan(call)
    assert isinstance(answer, planner.Decline)
    assert answer.reason == ("float32 data: the tensor-core kernels take float16; backend 'cuda' runs float32 "
                             "and float64")


def test_without_cupy_a_float16_call_declines_naming_the_gpu_extra():
    from itnet_np.autograd.backend import gpu_available
    if gpu_available():
        pytest.skip("CuPy sees a GPU here")
    answer = plan_cupy.plan(half(captured_call(attention(), x_of(5))))
    assert isinstance(answer, planner.Decline)
    assert "pip install 'itnet-np[gpu]'" in answer.reason and "cupy" in answer.reason


def test_an_old_device_declines_naming_its_compute_capability(monkeypatch):
    device = types.SimpleNamespace(compute_capability="75")
    fake_cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(Device=lambda: device))
    from itnet_np.gpu import _rawmodule
    monkeypatch.setattr(_rawmodule, "cupy", lambda: fake_cupy)
    answer = plan_cupy.plan(half(captured_call(attention(), x_of(5))))
    assert isinstance(answer, planner.Decline)
    assert answer.reason.startswith("compute capability 7.5: the tensor-core kernels need 8.0 or newer")


@pytest.mark.parametrize("support, window, words", [
    ("full", None, "every pair"),
    ("causal", None, "the causal band j <= i"),
    ("full", 3, "the window |i - j| <= 3"),
    ("causal", 2, "the causal band j <= i and the window |i - j| <= 2"),
])
@pytest.mark.parametrize("head_dim", [64, 128])
def test_float16_softmax_attention_on_an_index_band_is_accepted(fake_device, support, window, words, head_dim):
    answer = plan_cupy.plan(half(captured_call(attention(head_dim, support=support, window=window), x_of(9))))
    assert isinstance(answer, planner.Plan), answer
    assert answer.backend == "cupy" and answer.pays
    assert answer.note == f"tensor-core FlashAttention-2 (mma.sync, float16, 128 x 64 tiles) over {words}"


def _decline(call):
    answer = plan_cupy.plan(call)
    assert isinstance(answer, planner.Decline), answer
    return answer.reason


@pytest.mark.usefixtures("fake_device")
def test_every_option_the_attention_kernel_lacks_is_declined_in_words():
    x = x_of(6)
    assert _decline(half(captured_call(attention(normalization="sum"), x))).startswith(
        "normalization='sum': the tensor-core attention runs 'softmax' only")
    assert _decline(half(captured_call(attention(normalization="none"), x))).startswith("normalization='none'")
    assert _decline(half(captured_call(attention(position_bias="alibi"), x))).startswith(
        "DotProductKernel with position_bias='alibi'")
    assert _decline(half(captured_call(attention(support="strict_causal"), x))).startswith(
        "a support that is not an index band on the integer grid")
    assert _decline(half(captured_call(attention(), x, mask=np.tril(np.ones((6, 6), bool))))).startswith("a user mask")
    assert _decline(half(captured_call(attention(quadrature="mean"), x))).startswith(
        "quadrature weights: under softmax they fold into a log-weight key column")
    bias = np.zeros((6, 6), np.float32)
    assert _decline(half(captured_call(attention(), x, score_bias=bias))).startswith("a score_bias")
    assert _decline(half(captured_call(attention(head_dim=32), x))) == "head dim 32 (the tensor-core tiles take 64 or 128)"
    assert _decline(half(captured_call(attention(value_dim=32), x))) == (
        "values of width 32 with head dim 64 (the kernels' V tile has the q, k width)")


def test_a_device_with_too_little_shared_memory_declines_with_the_tile_sizes(monkeypatch):
    monkeypatch.setattr(plan_cupy, "device_problem", lambda: "")
    monkeypatch.setattr(plan_cupy, "device_shared_limit", lambda: 48 * 1024)
    call = half(captured_call(attention(head_dim=128), x_of(6)))
    assert _decline(call) == ("attention_tiles: the backward at head_dim=128 needs at least 74240 bytes of shared "
                              "memory per block (tiles 64 x 64, 1 stage(s)); this device allows 49152")
    assert isinstance(plan_cupy.plan(half(captured_call(attention(head_dim=64), x_of(6)))), planner.Plan)


def mlp(**kw):
    kernel = T.MLPKernel(8, heads=2, hidden=16, rng=0, dtype=np.float32, activation=kw.pop("activation", "silu"))
    return T.IntegralTransform(8, 8, kernel, normalization=kw.pop("normalization", "softmax"), backend="dense", rng=1,
                               dtype=np.float32, **kw)


def half_mlp(call):
    """An MLPKernel call with float16 values: the plan's dtype test reads the values."""
    return not_numpy(replace(call, values=np.asarray(call.values.data).astype(np.float16)))


@pytest.mark.usefixtures("fake_device")
def test_mlp_kernel_goes_to_the_mlp_module_when_it_imports(monkeypatch):
    call = half_mlp(captured_call(mlp(support="causal"), x_of(7)))
    monkeypatch.setitem(sys.modules, plan_cupy.MLP_MODULE, None)            # import raises ImportError
    reason = _decline(call)
    assert reason.startswith("the tensor-core MLP kernel is not available (itnet_np.gpu.mlp_cupy.cupy_mlp: ")
    assert reason.endswith("; backend 'cuda' runs MLPKernel")
    monkeypatch.setitem(sys.modules, plan_cupy.MLP_MODULE, types.ModuleType("mlp_cupy"))   # no cupy_mlp
    assert _decline(call).startswith("the tensor-core MLP kernel is not available")
    module = types.ModuleType("mlp_cupy")
    module.cupy_mlp = lambda *args, **kw: ("ran", args, kw)
    module.problem = lambda R, K, heads, dv, **kw: f"no {K} hidden units" if K == 16 else ""
    monkeypatch.setitem(sys.modules, plan_cupy.MLP_MODULE, module)
    assert _decline(call) == "MLPKernel: no 16 hidden units"           # the module's own limits
    del module.problem
    answer = plan_cupy.plan(call)
    assert isinstance(answer, planner.Plan) and answer.note == "tensor-core MLP-kernel tiles (mma.sync, float16)"
    ran, args, kw = answer.run()                    # the arguments of gpu.engine_ops.cuda_mlp
    assert ran == "ran" and len(args) == 9 and kw["causal"] is True and kw["normalization"] == "softmax"
    assert set(kw) == {"act", "causal", "window", "mask", "normalization", "ranges"}
    assert _decline(half_mlp(captured_call(mlp(activation=lambda z: itn.tanh(z)), x_of(7)))).startswith("MLPKernel activation 'a callable'")


@pytest.mark.usefixtures("fake_device")
def test_other_kernels_decline():
    kernel = T.SelectiveKernel(8, 2, state_dim=3, rng=0, dtype=np.float32)
    op = T.IntegralTransform(8, 8, kernel, normalization="none", backend="dense", rng=1, dtype=np.float32,
                             support="causal")
    call = not_numpy(captured_call(op, x_of(5)))
    assert _decline(call) == "SelectiveKernel (tensor-core kernels: DotProductKernel, MLPKernel)"


@pytest.mark.usefixtures("fake_device")
def test_the_real_mlp_module_is_asked_with_its_own_signature():
    """With gpu/mlp_cupy.py present, the plan calls its problem(...) as declared there: an accepted plan
    or a Decline in its words, never a TypeError."""
    try:
        import itnet_np.gpu.mlp_cupy  # noqa: F401
    except ImportError:
        pytest.skip("gpu/mlp_cupy.py is not importable here")
    for kw in ({"support": "causal"}, {"window": 3}, {"normalization": "sum"}):
        answer = plan_cupy.plan(half_mlp(captured_call(mlp(**kw), x_of(7))))
        assert isinstance(answer, planner.Plan) or answer.reason.startswith("MLPKernel: "), answer


@pytest.mark.gpu
def test_sdpa_on_float16_cupy_arrays_runs_on_the_tensor_cores():
    """transform.scaled_dot_product_attention with CuPy float16 q, k, v: 'auto' picks 'cupy', and the
    output is within the derived float16 bound of the float64 reference (attention_cupy)."""
    import cupy as cp

    from itnet_np.gpu import attention_cupy
    from itnet_np.transform import sdpa
    rng = np.random.default_rng(3)
    q, k, v, dout = (cp.asarray(rng.standard_normal((1, 2, 70, 64)), dtype=cp.float16) for _ in range(4))
    text = sdpa.explain(q, k, v, is_causal=True)
    assert text.startswith("backend='auto' runs 'cupy'"), text
    out = sdpa.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert out.dtype == cp.float16
    want, bounds, slack = attention_cupy.reference(q, k, v, dout, 1 / 8, causal=True)
    assert attention_cupy.error_problems({"out": cp.asarray(out, dtype=cp.float64)}, want, bounds, slack,
                                         "float16") == []
