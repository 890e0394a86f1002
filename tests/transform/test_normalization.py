"""Normalisation edge cases on every path of the operator (dense, and numba: attention, MLP, stencil,
scan), each against the dense reference or an independent oracle:

- detect_anomaly() passes on clean input for every kernel family, normalisation, support (causal,
  strict, window, radius, explicit mask with all-masked rows), zero quadrature weights and -inf
  score biases, forward and backward, and changes no value (issue 7, defect 4);
- NaN weights propagate to every row the source contributes to, stay out of rows that exclude it,
  and raise under detect_anomaly (defect 12); negative weights under softmax raise ConfigError;
- 'sum' rows whose denominator is exactly 0 give 0 with derivative 0 on every path: the gradient
  equals the gradient of the same loss with those rows' cotangent removed (defect 8a).
"""
import numpy as np
import pytest

import itnet_np as itn
from itnet_np import transform as T
from itnet_np.errors import AnomalyError, ConfigError
from itnet_np.transform import sdpa as S

F64 = np.float64
NORMS = ("none", "sum", "softmax")
SUPPORTS = (("full", None, None), ("causal", None, None), ("strict_causal", None, None), ("full", 2, None),
            ("causal", None, 2.5))


def kernel(family, H=2, C=3):
    if family == "dot":
        return T.DotProductKernel(C, heads=H, head_dim=2, bias=True, rng=1, dtype=F64)
    if family == "alibi":
        return T.DotProductKernel(C, heads=H, head_dim=2, position_bias="alibi", rng=1, dtype=F64)
    if family == "mlp":
        return T.MLPKernel(C, heads=H, hidden=4, inputs=("dp", "dist2", "fi", "fj"), activation="relu",
                           rng=1, dtype=F64)
    if family == "lowrank":
        return T.LowRankKernel(C, heads=H, feature_dim=2, rng=1, dtype=F64)
    if family == "stencil":
        return T.StencilKernel([-2, -1, 0, 1], heads=H, rng=1, dtype=F64)
    if family == "decay":
        return T.DecayKernel(H, real_modes=1, complex_modes=1, rng=1, dtype=F64)
    return T.SelectiveKernel(C, H, state_dim=2, rng=1, dtype=F64)


# (family, normalisations the numba backend runs for it, whether it takes explicit masks / any support)
FUSED = {"dot": (NORMS, True), "alibi": (NORMS, True), "mlp": (NORMS, True), "stencil": (("none", "sum"), True),
         "decay": (("none",), False), "selective": (("none",), False)}
FAMILIES = tuple(FUSED) + ("lowrank",)


def operator(family, normalization, support=("full", None, None), backend="dense", C=3):
    kind, window, radius = support
    return T.IntegralTransform(C, 2, kernel(family, C=C), embed_dim=4, normalization=normalization,
                               support=kind, window=window, radius=radius, skip=True, value_bias=True,
                               backend=backend, rng=2, dtype=F64)


def call_args(rng, B=2, N=9, zero_weights=True, mask=True, H=2):
    x = rng.standard_normal((B, N, 3))
    args = {}
    if zero_weights:
        w = rng.uniform(0.5, 2.0, (B, H, N))
        w[:, :, ::3] = 0.0                                # zero quadrature weights
        args["weights"] = w
    if mask:
        keep = rng.uniform(size=(B, N, N)) < 0.7
        keep[:, 4] = False                                # an all-masked row
        args["mask"] = keep
    return x, args


def forward_backward(op, x, args, anomaly):
    """y and every gradient (x, weights, parameters), computed with or without detect_anomaly."""
    op.zero_grad()
    xt = itn.tensor(x, requires_grad=True)
    targs = {k: itn.tensor(v, requires_grad=True) if v.dtype.kind == "f" else v for k, v in args.items()}
    cot = np.random.default_rng(9).standard_normal((x.shape[0], x.shape[1], op.out_features))
    if anomaly:
        with itn.detect_anomaly():
            y = op(xt, **targs)
            y.backward(cot)
    else:
        y = op(xt, **targs)
        y.backward(cot)
    out = {"y": y.data, "x": xt.grad.data}
    out.update({k: t.grad.data for k, t in targs.items() if isinstance(t, itn.Tensor)})
    out.update({k: p.grad.data for k, p in op.named_parameters() if p.grad is not None})
    return out


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        assert np.isfinite(a[k]).all(), k


# ------------------------------------------------------------------------------------- anomaly mode

def dense_cases():
    for family in FAMILIES:
        for norm in NORMS:
            for support in SUPPORTS:
                yield family, norm, support


@pytest.mark.parametrize("family,normalization,support", list(dense_cases()))
def test_detect_anomaly_passes_on_the_dense_path(family, normalization, support):
    rng = np.random.default_rng(0)
    op = operator(family, normalization, support)
    x, args = call_args(rng)
    clean = forward_backward(op, x, args, anomaly=False)
    assert_same(forward_backward(op, x, args, anomaly=True), clean)
    skip = x[:, 4] @ op.W_skip.data.T + op.b.data           # the all-masked row: 0 before skip and bias
    np.testing.assert_allclose(clean["y"][:, 4], skip, rtol=1e-13, atol=1e-13)


def fused_cases():
    for family, (norms, any_support) in FUSED.items():
        for norm in norms:
            for support in SUPPORTS if any_support else SUPPORTS[:3]:
                yield family, norm, support


@pytest.mark.parametrize("family,normalization,support", list(fused_cases()))
def test_detect_anomaly_passes_on_the_numba_path_and_matches_dense(family, normalization, support):
    rng = np.random.default_rng(1)
    op = operator(family, normalization, support, backend="numba")
    x, args = call_args(rng, mask=FUSED[family][1])
    fused = forward_backward(op, x, args, anomaly=True)
    assert_same(fused, forward_backward(op, x, args, anomaly=False))
    op.backend = "dense"
    dense = forward_backward(op, x, args, anomaly=True)
    for k in dense:
        np.testing.assert_allclose(fused[k], dense[k], rtol=1e-9, atol=1e-10, err_msg=k)


def test_detect_anomaly_with_score_bias_per_head_masks_and_volterra():
    rng = np.random.default_rng(2)
    op = operator("mlp", "softmax", ("causal", None, None))
    x = rng.standard_normal((2, 6, 3))
    bias = rng.standard_normal((1, 2, 6, 6))
    bias[0, 1, :, 2] = -np.inf                              # -inf logits exclude pairs
    bias[0, 0, 3, :] = -np.inf                              # and empty a row of head 0
    per_head = rng.uniform(size=(2, 2, 6, 6)) < 0.8
    for args in ({"score_bias": bias}, {"mask": per_head}, {"mask": per_head, "score_bias": bias}):
        clean = forward_backward(op, x, args, anomaly=False)
        assert_same(forward_backward(op, x, args, anomaly=True), clean)
    # -inf in the bias is the mask: same output and gradients as masking those pairs explicitly
    masked = forward_backward(op, x, {"mask": np.isfinite(bias) & np.ones((2, 2, 6, 6), bool),
                                      "score_bias": np.where(np.isfinite(bias), bias, 0.0)}, anomaly=True)
    with_inf = forward_backward(op, x, {"score_bias": bias}, anomaly=False)
    for k in ("y", "x"):
        np.testing.assert_allclose(with_inf[k], masked[k], rtol=1e-13, atol=1e-14)
    # an implicit (Volterra) solve: strictly causal masks inside, softmax transform
    solver = T.Volterra(T.IntegralTransform(3, 3, kernel("dot"), embed_dim=4, query_features=3,
                                            normalization="softmax", rng=0, dtype=F64), lambda z, x: itn.tanh(z + x))
    xt = itn.tensor(rng.standard_normal((1, 5, 3)), requires_grad=True)
    with itn.detect_anomaly():
        y = solver(xt, method="picard")
        y.sum().backward()
    assert np.isfinite(xt.grad.data).all()


@pytest.mark.parametrize("backend", ["dense", "numba"])
def test_detect_anomaly_passes_for_sdpa_masks(backend):
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((2, 2, n, 3)) for n in (5, 7, 7))
    keep = rng.uniform(size=(2, 2, 5, 7)) < 0.6
    keep[0, 1, 2] = False
    floats = np.where(keep, rng.standard_normal(keep.shape), -np.inf)
    for kw in ({"attn_mask": keep}, {"attn_mask": floats}, {"is_causal": True}):
        ts = [itn.tensor(a, requires_grad=True) for a in (q, k, v)]
        ref = S.scaled_dot_product_attention(q, k, v, backend=backend, **kw)
        with itn.detect_anomaly():
            out = S.scaled_dot_product_attention(*ts, backend=backend, **kw)
            out.sum().backward()
        np.testing.assert_array_equal(out.data, ref)
        assert all(np.isfinite(t.grad.data).all() for t in ts)


# --------------------------------------------------------------------------------------- NaN weights

def nan_cases():
    for family, (norms, any_support) in FUSED.items():
        for norm in norms:
            yield family, norm, "numba", any_support
    for family in FAMILIES:
        for norm in NORMS:
            yield family, norm, "dense", True


@pytest.mark.parametrize("family,normalization,backend,masked", list(nan_cases()))
def test_nan_weights_propagate_and_raise_under_anomaly(family, normalization, backend, masked):
    """Rows that source j0 contributes to (A_ij0 != 0 with a finite weight, from the dense
    kernel_matrix) become NaN on every path; on the dense path, rows whose support excludes j0 stay
    finite and unchanged (fused kernels may fold w into v and multiply whole tiles, where 0 * NaN
    is NaN, as in torch's masked attention: more NaN, never less)."""
    rng = np.random.default_rng(4)
    op = operator(family, normalization, ("causal", None, None), backend=backend)
    op.W_skip = None
    x, args = call_args(rng, zero_weights=False, mask=masked)
    B, N, j0 = x.shape[0], x.shape[1], 3
    w = rng.uniform(0.5, 2.0, (B, 2, N))
    finite_y = op(x, weights=w, **args).data
    A = op.kernel_matrix(x, weights=w, **args).data            # (B, H, N, M), the dense reference
    w_nan = w.copy()
    w_nan[:, :, j0] = np.nan
    y = op(x, weights=w_nan, **args).data
    hit = (A[..., j0] != 0).any(1)                              # (B, N): rows j0 contributes to
    excluded = np.broadcast_to(np.arange(N) < j0, (B, N))       # causal: rows before j0 never see it
    if "mask" in args:
        excluded = excluded | ~args["mask"][:, :, j0]
    assert hit.any() and excluded.any()
    assert np.isnan(y[hit]).all()
    if backend == "dense":
        np.testing.assert_array_equal(y[excluded], finite_y[excluded])
    with pytest.raises(AnomalyError), itn.detect_anomaly():
        op(itn.tensor(x), weights=w_nan, **args)


@pytest.mark.parametrize("backend", ["dense", "numba"])
def test_nan_scores_propagate_through_the_fused_softmax(backend):
    """A NaN logit must not be taken for an excluded pair (the fused exp flushed NaN to 0, and
    max() drops NaN): a NaN in the key map (dot) or the output layer of the MLP kernel makes every
    logit of head 0 NaN, values stay finite, and every output must be NaN (it was skip + bias)."""
    rng = np.random.default_rng(5)
    for family in ("dot", "mlp"):
        op = operator(family, "softmax", ("causal", None, None), backend=backend)
        (op.kernel.W_k if family == "dot" else op.kernel.W2).data[0, 0] = np.nan
        y = op(rng.standard_normal((1, 40, 3))).data
        assert np.isnan(y).all(), family


@pytest.mark.parametrize("backend", ["dense", "numba"])
def test_negative_weights_under_softmax_raise(backend):
    for family in ("dot", "mlp"):
        op = operator(family, "softmax", backend=backend)
        x = np.ones((1, 4, 3))
        with pytest.raises(ConfigError, match=r"softmax' needs quadrature weights w >= 0.*-0\.5"):
            op(x, weights=np.array([1.0, -0.5, 1.0, 1.0]))


# ------------------------------------------------------------------------ 'sum' with a zero denominator

def grads_with_cotangent(op, x, w, mask, cot):
    op.zero_grad()
    xt, wt = itn.tensor(x, requires_grad=True), itn.tensor(w, requires_grad=True)
    y = op(xt, weights=wt, mask=mask)
    y.backward(cot)
    out = {"y": y.data, "x": xt.grad.data, "w": wt.grad.data}
    out.update({k: p.grad.data for k, p in op.named_parameters() if p.grad is not None})
    return out


@pytest.mark.parametrize("backend", ["dense", "numba"])
@pytest.mark.parametrize("family", ["dot", "mlp", "stencil"])
def test_sum_rows_with_zero_denominator_have_zero_value_and_zero_derivative(family, backend):
    """Row 5 keeps only sources whose weights are 0, so Z_5 = 0: y_5 = 0 by convention, and as a
    constant it contributes nothing to any gradient. Oracle: the same backward with row 5's
    cotangent set to 0 must give identical gradients (it did not: dense dL/dw picked up s_5j g_5)."""
    rng = np.random.default_rng(6)
    op = operator(family, "sum", backend=backend)
    op.W_skip = op.b = None
    x = rng.standard_normal((1, 8, 3))
    w = rng.uniform(0.5, 2.0, (1, 8))
    w[0, [2, 3, 4]] = 0.0
    mask = np.ones((8, 8), bool)
    mask[5] = False
    mask[5, [2, 3, 4]] = True
    cot = rng.standard_normal((1, 8, 2))
    full = grads_with_cotangent(op, x, w, mask, cot)
    assert np.all(full["y"][0, 5] == 0)
    cut = cot.copy()
    cut[0, 5] = 0
    without = grads_with_cotangent(op, x, w, mask, cut)
    for k in full:
        np.testing.assert_allclose(full[k], without[k], rtol=1e-13, atol=1e-15, err_msg=k)


@pytest.mark.parametrize("backend", ["dense", "numba"])
def test_sum_denominator_cancelling_to_zero(backend):
    """A stencil with table (1, -1): Z_i = s_{i,i-1} + s_{ii} = 0 exactly for i >= 1 (uniform
    weights); only row 0 (one tap inside) has Z = -1. The gradients come from row 0 alone."""
    k = T.StencilKernel([-1, 0], heads=1, table=[[1.0, -1.0]], dtype=F64)
    op = T.IntegralTransform(2, 2, k, embed_dim=1, normalization="sum", bias=False, backend=backend,
                             rng=0, dtype=F64)
    rng = np.random.default_rng(7)
    x, w, cot = rng.standard_normal((1, 6, 2)), np.ones((1, 6)), rng.standard_normal((1, 6, 2))
    full = grads_with_cotangent(op, x, w, None, cot)
    assert np.all(full["y"][0, 1:] == 0) and np.any(full["y"][0, 0] != 0)
    cut = cot.copy()
    cut[0, 1:] = 0
    row0 = grads_with_cotangent(op, x, w, None, cut)
    for key in full:
        np.testing.assert_allclose(full[key], row0[key], rtol=1e-13, atol=1e-15, err_msg=key)
