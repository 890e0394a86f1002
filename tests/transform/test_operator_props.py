"""IntegralTransform properties: gradients (features, positions, parameters, weights), causality,
all-masked rows, the matrix A, shape conventions, dtypes and error messages."""
import numpy as np
import pytest

import itnet_np as itn
from itnet_np import transform as T
from itnet_np.errors import ConfigError, DTypeError, ShapeError

F64 = np.float64


def mlp_op(normalization="softmax", support="full", D=2, **kw):
    k = T.MLPKernel(3, heads=2, hidden=4, inputs=("dp", "dist2", "fourier", "prod", "fi", "fj"),
                    position_dim=D, fourier=2, product_rank=2, activation="tanh", rng=1, dtype=F64)
    kw = {"embed_dim": 4, "skip": True, "value_bias": True, **kw}
    return T.IntegralTransform(3, 2, k, normalization=normalization, support=support, rng=2, dtype=F64, **kw)


@pytest.mark.parametrize("normalization", ["none", "sum", "softmax"])
def test_gradcheck_features_positions_and_kernel_parameters(normalization):
    rng = np.random.default_rng(0)
    op = mlp_op(normalization)
    x, p, w = rng.standard_normal((2, 4, 3)), rng.uniform(-1, 1, (4, 2)), rng.uniform(0.5, 2, (2, 4))
    if normalization == "sum":                       # keep the Nadaraya-Watson denominator away from 0
        op.kernel.b2.data[...] = 3.0
        op.kernel.W2.data[...] *= 0.1

    def f(x, p, W1, P, freq_free_W_V, w):
        return itn.nn.functional_call(op, {"kernel.W1": W1, "kernel.P": P, "W_V": freq_free_W_V},
                                      x, positions=p, weights=w)

    args = [x, p, op.kernel.W1.data.copy(), op.kernel.P.data.copy(), op.W_V.data.copy(), w]
    assert itn.gradcheck(f, args, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kernel", [
    lambda: T.DotProductKernel(3, heads=2, head_dim=2, position_bias="t5", num_buckets=6, max_distance=4,
                               rng=3, dtype=F64),
    lambda: T.SelectiveKernel(3, heads=2, state_dim=2, rng=3, dtype=F64),
    lambda: T.DecayKernel(2, real_modes=1, complex_modes=1, rng=3, dtype=F64),
    lambda: T.LowRankKernel(3, heads=2, rng=3, dtype=F64),
])
def test_gradcheck_every_parameter_of_other_families(kernel):
    k = kernel()
    op = T.IntegralTransform(3, 2, k, embed_dim=4, normalization="none", support="causal",
                             quadrature="learned", learned_weights_per_head=True, rng=4, dtype=F64)
    x = np.random.default_rng(1).standard_normal((2, 4, 3))
    for _, m in op.named_modules():                  # move learned quadrature off its flat init
        if isinstance(m, T.LearnedQuadrature):
            m.weight.data[...] = 0.3

    names = [n for n, _ in op.named_parameters()]

    def f(x, *params):
        return itn.nn.functional_call(op, dict(zip(names, params)), x)

    assert itn.gradcheck(f, [x] + [p.data.copy() for p in op.parameters()], atol=1e-6, rtol=1e-5)


def test_gradcheck_decay_kernel_wrt_positions_and_gradgradcheck_softmax():
    op = T.IntegralTransform(2, 2, T.DecayKernel(1, 1, 1, rng=0, dtype=F64), embed_dim=2, rng=0, dtype=F64)
    x = np.random.default_rng(2).standard_normal((1, 3, 2))
    p = np.array([[0.0], [0.7], [1.9]])
    assert itn.gradcheck(lambda x, p: op(x, positions=p), [x, p])
    soft = mlp_op("softmax", D=1)
    assert itn.gradgradcheck(lambda x: soft(x), [np.random.default_rng(3).standard_normal((1, 3, 3))])


@pytest.mark.parametrize("make", [
    lambda: mlp_op("softmax", "causal", D=1),
    lambda: mlp_op("sum", "strict_causal", D=1),
    lambda: T.IntegralTransform(3, 2, T.SelectiveKernel(3, 2, state_dim=2, rng=0, dtype=F64), embed_dim=2,
                                quadrature="learned", rng=0, dtype=F64),
    lambda: T.IntegralTransform(3, 2, T.DecayKernel(2, 1, 1, rng=0, dtype=F64), embed_dim=2, rng=0, dtype=F64),
    lambda: T.IntegralTransform(3, 2, T.StencilKernel([-2, -1, 0], rng=0, dtype=F64), embed_dim=3, rng=0,
                                dtype=F64),
])
def test_future_inputs_never_change_past_outputs(make):
    op = make()
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 6, 3))
    y = op(x).data
    for t in range(6):
        x2 = x.copy()
        x2[:, t:] += 10 * rng.standard_normal(x2[:, t:].shape)
        y2 = op(x2).data
        np.testing.assert_array_equal(y2[:, :t], y[:, :t])
        assert t == 5 or not np.allclose(y2[:, t:], y[:, t:])


@pytest.mark.parametrize("normalization", ["none", "sum", "softmax"])
def test_all_masked_rows_give_zeros_and_finite_gradients(normalization):
    op = mlp_op(normalization, skip=False, bias=False, D=1)
    op.kernel.b2.data[...] = 800.0                   # huge logits: exp would overflow unshifted
    x = itn.tensor(np.random.default_rng(0).standard_normal((2, 4, 3)), requires_grad=True)
    mask = np.ones((2, 4, 4), bool)
    mask[:, 1] = False
    mask[1, 3] = False
    w = np.ones((2, 4))
    w[0, 2] = 0.0
    with np.errstate(all="raise"):
        y = op(x, mask=mask, weights=w)
        (y * y).sum().backward()
    assert np.all(y.data[:, 1] == 0) and np.all(y.data[1, 3] == 0)
    assert np.isfinite(y.data).all() and np.isfinite(x.grad.data).all()
    # Strict causality empties row 0; with no kept source at all the output is exactly the skip.
    strict = mlp_op(normalization, "strict_causal", D=1, bias=False)
    np.testing.assert_array_equal(strict(x.data).data[:, 0], x.data[:, 0] @ strict.W_skip.data.T)


def test_kernel_matrix_rows_and_support():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 3))
    A = mlp_op("softmax", "causal", D=1, window=2).kernel_matrix(x)
    assert A.shape == (2, 2, 5, 5)
    np.testing.assert_allclose(A.data.sum(-1), 1.0, rtol=1e-12)
    i, j = np.indices((5, 5))
    assert np.all(A.data[..., (j > i) | (i - j > 2)] == 0)
    R = mlp_op("none", radius=0.5, D=2).kernel_matrix(x, positions=rng.uniform(0, 1, (5, 2)))
    assert R.shape == (2, 2, 5, 5)


def test_positions_shared_or_per_batch_and_cross_mode_agree():
    rng = np.random.default_rng(1)
    op = mlp_op("softmax")
    x, p = rng.standard_normal((2, 4, 3)), rng.uniform(-1, 1, (4, 2))
    np.testing.assert_array_equal(op(x, positions=p).data, op(x, positions=np.stack([p, p])).data)
    np.testing.assert_allclose(op(x, positions=p).data,
                               op(x, positions=p, source=x, source_positions=p).data, rtol=1e-13, atol=1e-14)


def test_zero_sources_give_skip_plus_bias():
    op = mlp_op("softmax", D=1)
    x = np.random.default_rng(0).standard_normal((2, 3, 3))
    y = op(x, source=np.zeros((2, 0, 3)))
    np.testing.assert_allclose(y.data, x @ op.W_skip.data.T + op.b.data, rtol=1e-14)
    assert op.kernel_matrix(x, source=np.zeros((2, 0, 3))).shape == (2, 2, 3, 0)


def test_float32_end_to_end_and_no_silent_upcast():
    k = T.DotProductKernel(4, heads=2, position_bias="alibi", rng=0, dtype=np.float32)
    op = T.IntegralTransform(4, 4, k, normalization="softmax", support="causal", rng=0, dtype=np.float32)
    x = np.random.default_rng(0).standard_normal((2, 5, 4)).astype(np.float32)
    assert op(x).dtype == np.float32
    with pytest.raises(DTypeError):
        op(x.astype(F64))


def test_backend_selection():
    assert "dense" in T.available_backends()
    op = mlp_op("softmax", backend="auto")
    x = np.random.default_rng(0).standard_normal((1, 3, 3))
    np.testing.assert_array_equal(op(x, positions=np.zeros((3, 2))).data,
                                  mlp_op("softmax")(x, positions=np.zeros((3, 2))).data)
    with pytest.raises(ConfigError, match="no-such-backend"):
        mlp_op(backend="no-such-backend")


def test_error_messages_name_argument_and_shapes():
    op = mlp_op("softmax", D=2)
    x = np.zeros((2, 4, 3))
    p = np.zeros((4, 2))
    cases = [
        (ShapeError, r"x must be \(B, N, 3\), got shape \(2, 4, 5\)", lambda: op(np.zeros((2, 4, 5)), positions=p)),
        (ShapeError, r"positions: expected shape \(4, 2\) or \(2, 4, 2\), got shape \(4, 3\)",
         lambda: op(x, positions=np.zeros((4, 3)))),
        (ShapeError, r"must be given explicitly", lambda: op(x)),
        (ShapeError, (r"mask: expected shape \(4, 4\), \(2, 4, 4\) or per head \(2, 2, 4, 4\), got "
                     r"shape \(4, 3\)"), lambda: op(x, positions=p, mask=np.ones((4, 3), bool))),
        (ShapeError, r"mask: .*got shape \(2, 3, 4, 4\)",
         lambda: op(x, positions=p, mask=np.ones((2, 3, 4, 4), bool))),
        (ShapeError, (r"score_bias: expected shape \(4, 4\), \(2, 4, 4\) or \(2, 2, 4, 4\), got "
                     r"shape \(3, 4, 4\)"), lambda: op(x, positions=p, score_bias=np.zeros((3, 4, 4)))),
        (DTypeError, r"score_bias: expected a float64 array",
         lambda: op(x, positions=p, score_bias=np.zeros((4, 4), np.float32))),
        (ShapeError, r"mask: expected a bool array", lambda: op(x, positions=p, mask=np.ones((4, 4)))),
        (ShapeError, r"weights: expected shape \(4,\), \(2, 4\) or \(2, 2, 4\), got shape \(3,\)",
         lambda: op(x, positions=p, weights=np.ones(3))),
        (ShapeError, r"source must be \(2, M, 3\), got shape \(2, 4, 2\)",
         lambda: op(x, positions=p, source=np.zeros((2, 4, 2)))),
        (ConfigError, r"embed_dim=5 is not divisible by the kernel's heads=2", lambda: mlp_op(embed_dim=5)),
        (ConfigError, r"normalization: unknown value 'mean'", lambda: mlp_op("mean")),
        (ConfigError, r"support: unknown kind 'future'", lambda: mlp_op(support="future")),
        (ConfigError, r"quadrature: unknown value 'gauss'", lambda: mlp_op(quadrature="gauss")),
        (ConfigError, r"support 'causal' needs 1-D positions", lambda: mlp_op(support="causal")(x, positions=p)),
        (ConfigError, r"in_features=3 is not divisible by heads=2", lambda: T.DotProductKernel(3, heads=2)),
        (ConfigError, r"inputs must be a non-empty subset", lambda: T.MLPKernel(3, inputs=("dx",))),
        (ConfigError, r"unknown name 'swish'", lambda: T.MLPKernel(3, activation="swish")),
        (ConfigError, r"works on one sequence only", lambda: T.IntegralTransform(
            3, 2, T.SelectiveKernel(3, 2, dtype=F64), embed_dim=2, dtype=F64)(x, source=x)),
        (ConfigError, r"relative positions must be integers", lambda: T.IntegralTransform(
            3, 2, T.DotProductKernel(3, position_bias="t5", dtype=F64), dtype=F64)(x, positions=[[0.0], [0.5], [1.0], [2.0]])),
        (ConfigError, r"every entry < 0", lambda: T.SelectiveKernel(3, 1, state_dim=2, A=[[1.0, -1.0]])),
        (ConfigError, r"unknown kind 'rope'", lambda: T.DotProductKernel(2, position_bias="rope")),
    ]
    for err, pattern, call in cases:
        with pytest.raises(err, match=pattern):
            call()


def test_per_head_mask_and_score_bias_gradients_and_the_dense_path():
    rng = np.random.default_rng(5)
    op = mlp_op("softmax", D=1, support="causal")
    x, bias = rng.standard_normal((2, 4, 3)), rng.standard_normal((1, 2, 4, 4))
    mask = rng.uniform(size=(2, 2, 4, 4)) < 0.7
    mask[0, 1, 2] = False                                      # an empty row in one head only
    assert itn.gradcheck(lambda x, c: op(x, mask=mask, score_bias=c), [x, bias], atol=1e-6, rtol=1e-5)
    assert itn.gradgradcheck(lambda x, c: op(x, mask=mask, score_bias=c), [x, bias], atol=1e-5, rtol=1e-4)
    # A per-head mask equals masking that head's scores with -inf (softmax), head by head via kernel_matrix.
    A = op.kernel_matrix(x, mask=mask, score_bias=bias).data
    B = op.kernel_matrix(x, score_bias=np.where(mask, bias, -np.inf)).data
    np.testing.assert_allclose(A, B, rtol=1e-14, atol=1e-15)
    assert not A[0, 1, 2].any() and A[0, 0, 2].any()
    # a head axis of 1 is a plain mask: same result as (B, N, M)
    np.testing.assert_array_equal(op(x, mask=mask[:, :1]).data, op(x, mask=mask[:, 0]).data)
    # every call goes through the planner: a backend sees the per-head mask and the score bias in the
    # call record (here: a spy that accepts everything and evaluates densely)
    calls = []

    def spy(call):
        mask = call.support.mask
        calls.append((None if mask is None else mask.shape, call.score_bias is not None))
        return T.planner.dense(call)
    T.register_backend("test-spy", spy)
    try:
        spied = mlp_op("softmax", D=1, support="causal", backend="test-spy")
        np.testing.assert_array_equal(spied(x, mask=mask, score_bias=bias).data,
                                      op(x, mask=mask, score_bias=bias).data)
        spied(x, mask=mask)
        spied(x, score_bias=bias)
        spied(x, mask=mask[:, 0])
        assert calls == [(mask.shape, True), (mask.shape, False), (None, True), ((2, 4, 4), False)]
    finally:
        T.planner._BACKENDS.pop("test-spy")
