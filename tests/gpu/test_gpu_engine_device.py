"""The engine, the operator and the fused kernels on a CUDA device (CuPy arrays), against the CPU
float64 reference. Marked ``gpu``: skipped with a reason without a device, failures under
ITNET_REQUIRE_GPU=1 (bench/gpu.py runs them so on a GPU machine).

Hidden copies: over a full training step every host/device transfer is counted by wrapping
backend.to_device (the explicit ones), cupy.asarray / cupy.array (host -> device) and cupy.asnumpy
(device -> host) at module level; ``cupy.ndarray.get`` is a method of a compiled type and cannot be
wrapped, and CuPy itself refuses implicit NumPy conversion (TypeError), so array copies cannot hide.
Scalar read-backs (float(x) on a device array) are not counted: the operator's grid check
(positions.grid_shift) and SupportPlan.row_ranges still read a few scalars per call.
"""
import contextlib

import numpy as np
import pytest

import itnet_np as itn
from itnet_np import transform as T
from itnet_np.autograd import backend
from itnet_np.nn import functional as F

pytestmark = pytest.mark.gpu
F64 = np.float64


@pytest.fixture
def cp():
    return backend.cupy_module()


def host(x):
    return backend.to_device(x.data if isinstance(x, itn.Tensor) else x, "cpu")


def test_tensor_to_cuda_and_back_carries_the_gradient(cp):
    a = np.random.default_rng(0).standard_normal((3, 4))
    x = itn.tensor(a, requires_grad=True)
    y = x.to("cuda")
    assert y.device == "cuda" and isinstance(y.data, cp.ndarray)
    (y * y).sum().backward()
    assert x.grad.device == "cpu"
    np.testing.assert_allclose(x.grad.data, 2 * a, rtol=1e-12)
    assert y.to("cpu").device == "cpu"


OPS = {
    "matmul_softmax": (lambda a, b: F.softmax(itn.matmul(a, b), axis=-1), [(3, 5), (5, 4)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (6,), w, b), [(4, 6), (6,), (6,)]),
    "conv1d": (lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=1), [(2, 3, 11), (4, 3, 3), (4,)]),
    "conv2d": (lambda x, w: F.conv2d(x, w, padding=1, dilation=2), [(2, 2, 7, 6), (3, 2, 3, 3)]),
    "max_pool2d": (lambda x: F.max_pool2d(x, 2), [(2, 3, 6, 6)]),
    "avg_pool1d": (lambda x: F.avg_pool1d(x, 3, stride=2, padding=1), [(2, 3, 9)]),
    "adaptive_avg_pool1d": (lambda x: F.adaptive_avg_pool1d(x, 4), [(2, 3, 9)]),
    "gelu_silu": (lambda x: F.gelu(x, approximate="tanh") + F.silu(x) + F.gelu(x), [(5, 7)]),
    "reductions": (lambda x: itn.logsumexp(x, axis=1) + x.max(axis=1) + x.std(axis=1), [(4, 9)]),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_ops_forward_and_gradients_match_the_cpu(name, cp):
    fn, shapes = OPS[name]
    rng = np.random.default_rng(len(name))
    arrays = [rng.standard_normal(s) for s in shapes]
    outs = {}
    for device in ("cpu", "cuda"):
        xs = [itn.tensor(backend.to_device(a, device), requires_grad=True) for a in arrays]
        y = fn(*xs)
        g = backend.to_device(np.random.default_rng(1).standard_normal(y.shape), device)
        (y * g).sum().backward()
        assert y.device == device and all(x.grad.device == device for x in xs)
        outs[device] = [host(y)] + [host(x.grad) for x in xs]
    for got, want in zip(outs["cuda"], outs["cpu"]):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_cross_entropy_and_embedding_on_the_device(cp):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((10, 4))
    idx = rng.integers(0, 10, (3, 5))
    target = rng.integers(0, 4, 15)
    res = {}
    for device in ("cpu", "cuda"):
        wt = itn.tensor(backend.to_device(w, device), requires_grad=True)
        logits = itn.reshape(F.embedding(backend.to_device(idx, device), wt), (15, 4))
        loss = F.cross_entropy(logits, backend.to_device(target, device))
        loss.backward()
        res[device] = (host(loss), host(wt.grad))
    for got, want in zip(res["cuda"], res["cpu"]):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_gradcheck_runs_in_float64_on_the_device(cp):
    x = backend.to_device(np.random.default_rng(3).standard_normal((3, 4)), "cuda")
    w = backend.to_device(np.random.default_rng(4).standard_normal((4, 2)), "cuda")
    assert itn.gradcheck(lambda a, b: F.silu(itn.matmul(a, b)), [x, w])


def _model(dtype, backend_name="dense"):
    class Net(itn.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = itn.nn.Linear(4, 8, dtype=dtype, rng=0)
            self.norm = itn.nn.LayerNorm(8, dtype=dtype)
            self.drop = itn.nn.Dropout(0.1, rng=1)
            kernel = T.DotProductKernel(8, heads=2, rng=2, dtype=dtype)
            self.op = T.IntegralTransform(8, 8, kernel, normalization="softmax", support="causal",
                                          backend=backend_name, rng=3, dtype=dtype)
            self.head = itn.nn.Linear(8, 3, dtype=dtype, rng=4)

        def forward(self, x):
            h = self.drop(self.norm(F.gelu(self.lin(x))))
            return self.head(self.op(h)).mean(axis=1)
    return Net()


@contextlib.contextmanager
def counted_copies(cp, monkeypatch):
    """Counts host/device transfers (see the module docstring); yields the counter dict."""
    counts = {"to_device": 0, "cupy.asarray": 0, "cupy.array": 0, "cupy.asnumpy": 0}

    def wrap(owner, attr, key, host_only=False):
        original = getattr(owner, attr)

        def counting(*args, **kwargs):
            # cupy.asarray / cupy.array on a device array (CuPy calls them internally) copies nothing
            if not (host_only and args and isinstance(args[0], cp.ndarray)):
                counts[key] += 1
            return original(*args, **kwargs)
        monkeypatch.setattr(owner, attr, counting)
    wrap(backend, "to_device", "to_device")
    wrap(cp, "asarray", "cupy.asarray", host_only=True)
    wrap(cp, "array", "cupy.array", host_only=True)
    wrap(cp, "asnumpy", "cupy.asnumpy")
    yield counts


@pytest.mark.parametrize("backend_name", ["dense", "auto"])
def test_a_training_step_on_the_device_makes_no_hidden_copies(cp, monkeypatch, backend_name):
    rng = np.random.default_rng(5)
    x = backend.to_device(rng.standard_normal((2, 37, 4)).astype(np.float32), "cuda")
    y = backend.to_device(rng.integers(0, 3, 2), "cuda")
    model = _model(np.float32, backend_name).to("cuda")
    assert backend.rng_device(model.drop.rng) == "cuda"
    opt = itn.optim.Adam(model.parameters(), lr=1e-2)
    loss = F.cross_entropy(model(x), y)      # warm-up: compiles kernels, allocates the state
    loss.backward()
    opt.step()
    opt.zero_grad()
    with counted_copies(cp, monkeypatch) as counts:
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert all(n == 0 for n in counts.values()), counts
    assert loss.device == "cuda"


def test_checkpoint_saved_from_the_device_loads_back_onto_it(cp, tmp_path):
    model = _model(F64).to("cuda")
    path = tmp_path / "m.npz"
    itn.save(path, model.state_dict())
    tree = itn.load(path, device="cuda")
    fresh = _model(F64).to("cuda")
    fresh.load_state_dict(tree)
    for (name, p), (_, q) in zip(model.named_parameters(), fresh.named_parameters()):
        assert isinstance(tree[name], cp.ndarray)
        np.testing.assert_array_equal(host(p), host(q))


def test_module_and_optimizer_to_move_parameters_state_and_generator(cp):
    model = _model(F64)
    opt = itn.optim.Adam(model.parameters(), lr=1e-2)
    x = np.random.default_rng(6).standard_normal((2, 9, 4))
    F.cross_entropy(model(x), np.array([0, 2])).backward()
    opt.step()
    model.to("cuda")
    opt.to("cuda")
    assert all(p.device == "cuda" for p in model.parameters())
    assert backend.rng_device(model.drop.rng) == "cuda"
    assert all(backend.device_of(v) == "cuda" for s in opt.state.values() for v in s.values()
               if hasattr(v, "shape"))
    model.zero_grad()
    F.cross_entropy(model(backend.to_device(x, "cuda")), backend.to_device(np.array([0, 2]), "cuda")).backward()
    opt.step()


def _transform(make, name, dtype, like=None):
    """An IntegralTransform (dot or MLP kernel, softmax, causal, mean quadrature); ``like``: copy its
    parameters (cast to ``dtype``), so float32 and float64 operators hold the same weights."""
    kernel = (T.DotProductKernel(8, heads=2, rng=0, dtype=dtype) if make == "dot"
              else T.MLPKernel(8, heads=2, hidden=16, rng=0, dtype=dtype))
    op = T.IntegralTransform(8, 8, kernel, normalization="softmax", support="causal", backend=name, rng=1,
                             dtype=dtype, quadrature="mean")
    if like is not None:
        for p, q in zip(op.parameters(), like.parameters()):
            p.data = backend.to_device(q.data, "cpu").astype(dtype)
    return op


@pytest.mark.parametrize("make", ["dot", "mlp"])
@pytest.mark.parametrize("dtype", [F64, np.float32])
def test_operator_cuda_backend_matches_dense_on_the_cpu(make, dtype, cp):
    """The fused GPU kernels through IntegralTransform(backend='cuda') against the CPU dense path:
    float64 tight (forward and input gradient); float32 within 2x the error of the dense path run in
    float32 on the device (both against the CPU float64 result), and no NaN."""
    a = np.random.default_rng(7).standard_normal((2, 301, 8))
    ref_op = _transform(make, "dense", F64)
    xc = itn.tensor(a, requires_grad=True)
    ref = ref_op(xc)
    ref.sum().backward()
    if dtype == F64:
        xg = itn.tensor(backend.to_device(a, "cuda"), requires_grad=True)
        y = _transform(make, "cuda", F64, ref_op).to("cuda")(xg)
        y.sum().backward()
        np.testing.assert_allclose(host(y), ref.data, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(host(xg.grad), xc.grad.data, rtol=1e-9, atol=1e-11)
        return
    a32 = itn.tensor(backend.to_device(a.astype(np.float32), "cuda"))
    fused = host(_transform(make, "cuda", dtype, ref_op).to("cuda")(a32))
    dense32 = host(_transform(make, "dense", dtype, ref_op).to("cuda")(a32))
    assert not np.isnan(fused).any()
    assert np.abs(fused - ref.data).max() <= 2 * np.abs(dense32 - ref.data).max() + 1e-6


@pytest.mark.parametrize("kind", ["selective", "decay"])
def test_operator_cuda_scans_match_dense_on_the_cpu(kind, cp):
    def op(name):
        kernel = (T.SelectiveKernel(8, 2, state_dim=4, rng=0, dtype=F64) if kind == "selective"
                  else T.DecayKernel(heads=2, real_modes=2, complex_modes=2, rng=0, dtype=F64))
        return T.IntegralTransform(8, 8, kernel, normalization="none", support="causal", backend=name, rng=1,
                                   dtype=F64)
    a = np.random.default_rng(8).standard_normal((2, 517, 8))
    xg = itn.tensor(backend.to_device(a, "cuda"), requires_grad=True)
    gpu_op = op("cuda").to("cuda")
    y = gpu_op(xg)
    y.sum().backward()
    xc = itn.tensor(a, requires_grad=True)
    cpu_op = op("dense")
    yc = cpu_op(xc)
    yc.sum().backward()
    np.testing.assert_allclose(host(y), yc.data, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(host(xg.grad), xc.grad.data, rtol=1e-8, atol=1e-10)
    for (name, p), (_, q) in zip(gpu_op.named_parameters(), cpu_op.named_parameters()):
        np.testing.assert_allclose(host(p.grad), q.grad.data, rtol=1e-8, atol=1e-10, err_msg=name)


def test_auto_chooses_cuda_for_device_data(cp):
    kernel = T.DotProductKernel(8, heads=2, rng=0, dtype=F64)
    op = T.IntegralTransform(8, 8, kernel, normalization="softmax", backend="auto", rng=1, dtype=F64)
    text = op.explain(backend.to_device(np.zeros((1, 64, 8)), "cuda"))
    assert text.startswith("backend='auto' runs 'cuda'"), text
