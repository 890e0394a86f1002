"""The GPU banded stencil (gpu/stencil.py) under numba's CUDA simulator (run by test_gpu_kernels_sim.py
in a child process with NUMBA_ENABLE_CUDASIM=1).

Kernel level: forward and the gradients of table, w and v against the dense float64 transform written
from the formula with the engine's ops (indicator 1[p_j - q_i = o_a] found by brute force over all
pairs, einsum, matmul; its backward gives every gradient), for 1-D and 2-D integer positions, sources
in shuffled order, strided / padded queries with taps falling off the grid, a mask, odd sizes (not
multiples of the 32-row tile), broadcast and full w; float32 stays float32. Plan level: the 'cuda'
plan (gpu/plan.py through stencil_plan.plan_stencil) inside an IntegralTransform against the same
operator on backend='dense': 'none' and 'sum', 1-D and 2-D, supports, weights; output and every
gradient (features, source features, weights, the kernel's table and the other parameters).
"""
import os

import numpy as np
import pytest
from _gpu_calls import not_numpy

if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1":
    pytest.skip("run through test_gpu_kernels_sim.py (needs NUMBA_ENABLE_CUDASIM=1 before numba loads)",
                allow_module_level=True)

from itnet_np.gpu import plan as gpu_plan
from itnet_np.gpu.stencil import stencil_backward, stencil_forward

import itnet_np as itn
from itnet_np import transform as T
from itnet_np.transform.fused.stencil_plan import stencil_indices

F64 = np.float64
BACKEND = "cuda_sim_stencil"
T.register_backend(BACKEND, lambda call: gpu_plan.plan(not_numpy(call)))


def _rel(a, b):
    a, b = np.asarray(a, F64), np.asarray(b, F64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def _dense(table, w, v, qpos, spos, offsets, keep):
    """Tensors table (H, T), w (1|B, 1|H, M), v (B, H, M, d) -> y Tensor (B, H, N, d), from
    s^h_ij = sum_a table[h, a] 1[p_j - q_i = o_a] (all N x M x T pairs) and y_i = sum_j s_ij w_j v_j."""
    delta = spos[:, None, :, :] - qpos[:, :, None, :]                       # (1|B, N, M, D)
    hit = np.all(delta[:, :, :, None, :] == offsets[None, None, None], axis=-1)   # (1|B, N, M, T)
    if keep is not None:
        hit = hit & keep[..., None]
    scores = itn.einsum("bnmt,ht->bhnm", hit.astype(F64), table)
    return itn.matmul(scores * itn.reshape(w, (w.shape[0], w.shape[1], 1, w.shape[2])), v)


def _case_1d(rng):
    """N = 37 strided, padded queries q_i = 2 i - 3 over M = 41 shuffled sources, five taps."""
    qpos = (2.0 * np.arange(37) - 3)[None, :, None]
    spos = rng.permutation(41).astype(F64)[None, :, None]
    offsets = np.array([[-2], [0], [1], [3], [5]])
    return qpos, spos, offsets, None, 2, 2, (2, 2, 41)


def _case_2d(rng):
    """N = 3 x 5 anchors (spacing 2, origin -1) over a 5 x 7 grid of shuffled sources (M = 35), 3 x 2
    taps with dilation (1, 2), a random mask (B, N, M), broadcast w (1, 1, M), H = 3."""
    qpos = T.grid_positions((3, 5), spacing=2, origin=-1, dtype=F64)[None]
    spos = T.grid_positions((5, 7), dtype=F64)[rng.permutation(35)][None]
    offsets = T.conv_offsets((3, 2), (1, 2))
    keep = rng.random((2, 15, 35)) < 0.8
    return qpos, spos, offsets, keep, 2, 3, (1, 1, 35)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("make", [_case_1d, _case_2d])
def test_stencil_kernels_match_the_dense_transform(make, dtype):
    rng = np.random.default_rng(3)
    qpos, spos, offsets, keep, B, H, wshape = make(rng)
    M, d, taps = spos.shape[1], 3, offsets.shape[0]
    idx = stencil_indices(qpos, spos, offsets, keep)
    assert (idx >= 0).any() and (idx < 0).any()          # taps hit sources and fall off the grid
    table = itn.Tensor(rng.standard_normal((H, taps)), requires_grad=True)
    w = itn.Tensor(rng.uniform(0.5, 1.5, wshape), requires_grad=True)
    v = itn.Tensor(rng.standard_normal((B, H, M, d)), requires_grad=True)
    want = _dense(table, w, v, qpos, spos, offsets, keep)
    gy = rng.standard_normal(want.shape)
    (want * gy).sum().backward()
    args = [a.data.astype(dtype) for a in (table, w, v)]
    got = stencil_forward(idx, *args)
    dtable, dw, dv = stencil_backward(idx, *args, gy.astype(dtype))
    tol = 1e-12 if dtype == np.float64 else 2e-6
    for name, g, ref in (("y", got, want.data), ("table", dtable, table.grad.data), ("w", dw, w.grad.data),
                         ("v", dv, v.grad.data)):
        assert g.dtype == dtype and g.shape == ref.shape, name
        assert _rel(g, ref) <= tol, (name, _rel(g, ref))
    assert stencil_backward(idx, *args, gy.astype(dtype), want_w=False)[1] is None


def _transform(kind, normalization):
    """(op, call kwargs): conv-like 1-D cross mode, 1-D self mode with a causal support and weights,
    2-D self mode with a window."""
    rng = np.random.default_rng(11)
    if kind == "1d_cross":
        kernel = T.StencilKernel(T.conv_offsets(3, 2), rng=4, dtype=F64)
        op = T.IntegralTransform(3, 4, kernel, embed_dim=6, query_features=2, skip=True,
                                 normalization=normalization, rng=5, dtype=F64)
        anchors = T.grid_positions((7,), spacing=2, origin=-2, dtype=F64)
        kw = {"x": rng.standard_normal((2, 7, 2)), "positions": anchors, "source": rng.standard_normal((2, 13, 3)),
              "source_positions": T.grid_positions((13,), dtype=F64)}
    elif kind == "1d_causal":
        kernel = T.StencilKernel([-2, -1, 0, 1], heads=2, rng=4, dtype=F64)
        op = T.IntegralTransform(3, 4, kernel, embed_dim=6, normalization=normalization, support="causal",
                                 quadrature="mean", rng=5, dtype=F64)
        kw = {"x": rng.standard_normal((2, 29, 3))}
    else:
        kernel = T.StencilKernel(T.conv_offsets((3, 3)) - 1, heads=3, rng=4, dtype=F64)
        op = T.IntegralTransform(3, 4, kernel, embed_dim=6, normalization=normalization, window=1, rng=5,
                                 dtype=F64)
        kw = {"x": rng.standard_normal((1, 35, 3)), "positions": T.grid_positions((5, 7), dtype=F64)}
    if normalization == "sum":                        # row sums away from 0
        kernel.table.data[...] = np.abs(kernel.table.data) + 0.5
    return op, kw


def _run(op, kw, backend):
    op.backend = backend
    op.zero_grad()
    tens = {k: itn.Tensor(a, requires_grad=True) for k, a in kw.items() if k in ("x", "source")}
    y = op(**dict(kw, **tens))
    (y * np.random.default_rng(7).standard_normal(y.shape)).sum().backward()
    grads = {k: t.grad.data for k, t in tens.items()}
    grads.update({name: p.grad.data for name, p in op.named_parameters() if p.grad is not None})
    return y.data, grads


@pytest.mark.parametrize("normalization", ["none", "sum"])
@pytest.mark.parametrize("kind", ["1d_cross", "1d_causal", "2d_window"])
def test_cuda_plan_runs_the_stencil_kernel_like_dense(kind, normalization):
    op, kw = _transform(kind, normalization)
    op.backend = BACKEND
    text = op.explain(**kw)
    assert text.startswith(f"backend='{BACKEND}' runs 'cuda'") and "banded gather" in text, text
    y1, g1 = _run(op, kw, BACKEND)
    y0, g0 = _run(op, kw, "dense")
    assert _rel(y1, y0) <= 1e-10
    assert g1.keys() == g0.keys() and {"x", "kernel.table"} <= g0.keys()
    for name in g0:
        assert _rel(g1[name], g0[name]) <= 1e-10, name


def test_cuda_plan_declines_what_the_banded_stencil_cannot_do():
    op, kw = _transform("1d_causal", "none")
    op.normalization = "softmax"
    op.backend = BACKEND
    assert "softmax weighs off-tap pairs" in op.explain(**kw)
    op, kw = _transform("2d_window", "none")
    op.backend = BACKEND
    text = op.explain(**dict(kw, positions=kw["positions"] + 0.25))
    assert "positions that are not integer-valued" in text, text


def test_stencil_kernels_name_bad_arguments():
    from itnet_np.errors import DTypeError, ShapeError
    idx, table = np.zeros((1, 5, 2), np.int64), np.ones((2, 2))
    w, v = np.ones((1, 1, 3)), np.ones((1, 2, 3, 4))
    with pytest.raises(DTypeError, match=r"table is float32 but values are float64"):
        stencil_forward(idx, table.astype(np.float32), w, v)
    with pytest.raises(ShapeError, match=r"expected table \(2, T\), idx \(1\|1, N, T\)"):
        stencil_forward(idx[:, :, :1], table, w, v)
    with pytest.raises(ShapeError, match=r"g must have shape \(1, 2, 5, 4\), got \(1, 2, 4, 4\)"):
        stencil_backward(idx, table, w, v, np.ones((1, 2, 4, 4)))
    with pytest.raises(DTypeError, match=r"g is float32 but values are float64"):
        stencil_backward(idx, table, w, v, np.ones((1, 2, 5, 4), np.float32))
