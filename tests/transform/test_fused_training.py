"""Training end to end on the fused backend: a two-transform model (causal ALiBi attention, then an
MLP-kernel transform with learned frequencies and a window) trained with Adam on backend='numba'
follows the parameter trajectory of backend='dense' from the same initialisation (float64, 1e-8),
its loss decreases, every step's graph holds exactly one fused node per transform call, and no array
of size N x M is recorded in it."""
import numpy as np
import pytest
from _graph_helpers import graph_nodes

import itnet_np as itn
from itnet_np import transform as T
from itnet_np.transform.fused.engine_ops import ATTENTION_OP, MLP_OP

F64 = np.float64
B, N, C = 2, 40, 4


class Model(itn.nn.Module):
    def __init__(self, backend):
        super().__init__()
        attn = T.DotProductKernel(C, heads=2, position_bias="alibi", rng=0, dtype=F64)
        mlp = T.MLPKernel(C, heads=2, hidden=8, inputs=("dp", "dist2", "fourier", "fi", "fj"), fourier=2,
                          learn_frequencies=True, activation="silu", rng=1, dtype=F64)
        self.attention = T.IntegralTransform(C, C, attn, normalization="softmax", support="causal", skip=True,
                                             backend=backend, rng=2, dtype=F64)
        self.mixer = T.IntegralTransform(C, 1, mlp, embed_dim=4, normalization="softmax", window=6,
                                         quadrature="mean", backend=backend, rng=3, dtype=F64)

    def forward(self, x):
        h = itn.tanh(self.attention(x))
        return self.mixer(h)


def data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, N, C))
    target = np.cumsum(x[..., :1], axis=1) / np.sqrt(np.arange(1, N + 1))[:, None]   # a causal target
    return x, target


def train(backend, steps=8):
    model = Model(backend)
    opt = itn.optim.Adam(model.parameters(), lr=2e-2)
    x, target = data()
    losses, trajectory = [], []
    for _ in range(steps):
        opt.zero_grad()
        loss = ((model(itn.tensor(x)) - target) ** 2).mean()
        nodes = graph_nodes(loss)
        names = [n.prim.name for n in nodes]
        if backend == "numba":
            assert names.count(ATTENTION_OP) == 1 and names.count(MLP_OP) == 1
            for node in nodes:                        # nothing of size N x M is recorded
                arrays = [a.data if isinstance(a, itn.Tensor) else a for a in node.inputs]
                arrays += [v for v in node.params.values() if isinstance(v, np.ndarray)]
                assert all(getattr(a, "size", 0) < N * N for a in arrays), node.prim.name
        else:
            assert ATTENTION_OP not in names and MLP_OP not in names
        loss.backward()
        opt.step()
        losses.append(loss.item())
        trajectory.append({k: p.data.copy() for k, p in model.named_parameters()})
    return losses, trajectory


def test_fused_training_follows_the_dense_trajectory():
    fused_losses, fused = train("numba")
    dense_losses, dense = train("dense")
    assert fused_losses[-1] < 0.8 * fused_losses[0]
    np.testing.assert_allclose(fused_losses, dense_losses, rtol=1e-10)
    assert len(fused[-1]) == 14                      # every parameter of both kernels and both operators
    for step_f, step_d in zip(fused, dense):
        for name, value in step_d.items():
            err = np.abs(step_f[name] - value).max() / max(np.abs(value).max(), 1e-12)
            assert err <= 1e-8, (name, err)


def test_fused_node_sees_the_kernel_projections_as_inputs():
    """The fused op's inputs are the kernel's per-point projections (engine Tensors), so the engine
    reaches the kernel parameters: every parameter of the model gets a nonzero gradient."""
    model = Model("numba")
    x, target = data()
    loss = ((model(itn.tensor(x)) - target) ** 2).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and np.abs(p.grad.data).max() > 0, name


if __name__ == "__main__":                          # pragma: no cover
    pytest.main([__file__, "-q"])
