"""Conv1d / Conv2d as ITNet layers (itnet_np.proofs.conv), against the independent reference.

Forward: == proofs.reference.conv1d_ref / conv2d_ref (doc-formula loops) to 1e-10 abs and rel, for both
constructions (stencil kernel, exact hat-MLP kernel), over stride, dilation, groups, padding kinds.
Gradients: engine VJP w.r.t. x, weight and bias vs central differences of the reference, and vs torch
autograd when torch is installed. Structure: the two kernels give the same 0/1 kernel matrix, bit for
bit, over the unpadded sources; the 2-D hat code needs its window. Reverse map: weights -> layer ->
impulse responses -> weights. Errors name the argument and the shapes.
"""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from itnet_np.proofs import conv as C
from itnet_np.proofs.reference import conv1d_ref, conv2d_ref, conv_output_size

import itnet_np as itn
from itnet_np.errors import ConfigError, ShapeError
from itnet_np.nn.module import Parameter
from itnet_np.transform import Points, Support
from itnet_np.verify import directional_gradient_error, run_suite

TOL = {"rtol": 1e-10, "atol": 1e-10}
BUILD = {1: C.conv1d_as_itnet, 2: C.conv2d_as_itnet}
REF = {1: conv1d_ref, 2: conv2d_ref}


@st.composite
def conv_case(draw, dims):
    """(x, weight, bias or None, hyper-parameters) with at least one output along every axis."""
    groups = draw(st.integers(1, 3))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    batch = draw(st.integers(1, 2))
    k = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    d = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    kind = draw(st.sampled_from(["int", "same", "valid"]))
    s = (1,) * dims if kind == "same" else tuple(draw(st.integers(1, 3)) for _ in range(dims))
    p = tuple(draw(st.integers(0, 2)) for _ in range(dims)) if kind == "int" else (0,) * dims
    sizes = tuple(draw(st.integers(1, 9 if dims == 1 else 6)) for _ in range(dims))
    for n, kk, dd, ss, pp in zip(sizes, k, d, s, p):
        assume(kind == "same" or conv_output_size(n, kk, ss, pp, pp, dd) >= 1)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = rng.standard_normal((batch, c_in) + sizes)
    w = rng.standard_normal((c_out, c_in // groups) + k)
    b = rng.standard_normal(c_out) if draw(st.booleans()) else None
    one = (lambda t: t) if dims == 2 else (lambda t: t[0])
    hyper = {"stride": one(s), "padding": kind if kind != "int" else one(p), "dilation": one(d),
             "groups": groups}
    return x, w, b, hyper


def any_case():
    return st.sampled_from([1, 2]).flatmap(lambda dims: st.tuples(st.just(dims), conv_case(dims)))


kinds = pytest.mark.parametrize("kind", C.KERNELS)


def grads(itn_fn, args, u):
    ts = [None if a is None else itn.tensor(a, requires_grad=True) for a in args]
    y = itn_fn(*ts)
    (y * u).sum().backward()
    return y.data, [None if t is None else t.grad.data for t in ts]


# --------------------------------------------------------------------------------------- forward

@kinds
@given(case=conv_case(1))
def test_conv1d_equals_reference(kind, case):
    x, w, b, hyper = case
    y = C.conv1d_as_itnet(w, b, kernel=kind, **hyper)(x)
    np.testing.assert_allclose(y.data, conv1d_ref(x, w, b, **hyper), **TOL)


@kinds
@given(case=conv_case(2))
def test_conv2d_equals_reference(kind, case):
    x, w, b, hyper = case
    y = C.conv2d_as_itnet(w, b, kernel=kind, **hyper)(x)
    np.testing.assert_allclose(y.data, conv2d_ref(x, w, b, **hyper), **TOL)


@kinds
@pytest.mark.parametrize("dims, ksize, dilation", [(1, 4, 1), (1, 2, 3), (2, (2, 3), (1, 2)), (2, (4, 1), 3)])
def test_same_padding_puts_the_odd_zero_on_the_right(kind, dims, ksize, dilation):
    rng = np.random.default_rng(1)
    k = (ksize,) if dims == 1 else ksize
    x = rng.standard_normal((2, 3) + (7,) * dims)
    w, b = rng.standard_normal((2, 3) + k), rng.standard_normal(2)
    layer = BUILD[dims](w, b, padding="same", dilation=dilation, kernel=kind)
    want = REF[dims](x, w, b, padding="same", dilation=dilation)
    assert want.shape == x.shape[:1] + (2,) + x.shape[2:]
    np.testing.assert_allclose(layer(x).data, want, **TOL)
    total = np.broadcast_to(dilation, (dims,)) * (np.array(k) - 1)
    assert layer.pads == tuple((t // 2, t - t // 2) for t in total)


def test_float32_layer_stays_float32():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 2, 9)).astype(np.float32)
    w = rng.standard_normal((4, 1, 3)).astype(np.float32)
    y = C.conv1d_as_itnet(w, None, groups=2, stride=2, padding=1, kernel="mlp")(x)
    assert y.dtype == np.float32
    want = conv1d_ref(x, w, None, groups=2, stride=2, padding=1)
    np.testing.assert_allclose(y.data, want, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- operator structure

@given(case=any_case())
def test_both_kernels_give_the_same_exact_0_1_matrix_over_unpadded_sources(case):
    dims, (x, w, b, hyper) = case
    stencil = BUILD[dims](w, b, kernel="stencil", **hyper)
    mlp = BUILD[dims](w, b, kernel="mlp", **hyper)
    A, A_mlp = stencil.kernel_matrix(x).data, mlp.kernel_matrix(x).data
    np.testing.assert_array_equal(A, A_mlp)
    # Sources are the L (or H W) real samples only: zero padding is the absence of a source.
    out = stencil.output_size(x.shape[2:])
    assert A.shape == (x.shape[0], int(np.prod(w.shape[2:])), int(np.prod(out)), int(np.prod(x.shape[2:])))
    # Head a, anchor i picks exactly the sample at q_i + d a when it exists, else nothing.
    taps = np.stack(np.meshgrid(*[np.arange(k) for k in w.shape[2:]], indexing="ij"), -1).reshape(-1, dims)
    anchors = np.stack(np.meshgrid(*[np.arange(n) for n in out], indexing="ij"), -1).reshape(-1, dims)
    anchors = anchors * stencil.stride - np.array([pl for pl, _ in stencil.pads])
    want = np.zeros(A.shape[1:])
    for a, tap in enumerate(taps):
        for i, q in enumerate(anchors):
            p = q + np.array(stencil.dilation) * tap
            if np.all(p >= 0) and np.all(p < x.shape[2:]):
                want[a, i, np.ravel_multi_index(tuple(p), x.shape[2:])] = 1.0
    np.testing.assert_array_equal(A[0], want)


def test_hat_units_are_exact_indicators_on_a_wide_integer_range():
    offsets = np.array([[0], [3], [-7], [250]])
    kernel, window = C.hat_kernel(offsets, in_features=1, dtype=np.float64)
    assert window is None
    q = np.zeros((1, 1, 1))
    p = np.arange(-1000, 1001, dtype=np.float64).reshape(1, -1, 1)
    s = kernel.scores(kernel.project(Points(np.zeros((1, 1, 1)), q), Points(np.zeros((1, p.shape[1], 1)), p)))
    want = (p[0, :, 0][None, :] == offsets[:, 0][:, None]).astype(float)   # p_j - q_i = o_a
    np.testing.assert_array_equal(s.data[0, :, 0, :], want)


def test_2d_hat_code_needs_its_window():
    """Without the window the linear code u = (2w+1) dp_row + dp_col collides on a wide image."""
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((1, 1, 5, 12)), rng.standard_normal((1, 1, 3, 3))
    layer = C.conv2d_as_itnet(w, kernel="mlp", padding=1)
    exact = C.conv2d_as_itnet(w, padding=1).kernel_matrix(x).data
    np.testing.assert_array_equal(layer.kernel_matrix(x).data, exact)
    layer.transform.support = Support("full")
    assert not np.array_equal(layer.kernel_matrix(x).data, exact)
    assert np.abs(layer(x).data - conv2d_ref(x, w, padding=1)).max() > 1e-3


# ------------------------------------------------------------------------------------- gradients

@kinds
@given(case=any_case(), seed=st.integers(0, 2**16))
def test_gradients_match_central_differences_of_the_reference(kind, case, seed):
    dims, (x, w, b, hyper) = case
    args = [x, w] if b is None else [x, w, b]

    def itnet_fn(x_, w_, b_=None):
        return BUILD[dims](w_, b_, kernel=kind, **hyper)(x_)

    def ref_fn(x_, w_, b_=None):
        return REF[dims](x_, w_, b_, **hyper)

    err = directional_gradient_error(itnet_fn, ref_fn, args, np.random.default_rng(seed))
    assert err <= 1e-6


@kinds
@pytest.mark.filterwarnings("ignore:Using padding='same'")
@given(case=any_case(), seed=st.integers(0, 2**16))
def test_forward_and_gradients_match_torch(kind, case, seed):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    dims, (x, w, b, hyper) = case
    u = np.random.default_rng(seed).standard_normal(REF[dims](x, w, b, **hyper).shape)
    y, g = grads(lambda x_, w_, b_: BUILD[dims](w_, b_, kernel=kind, **hyper)(x_), [x, w, b], u)
    tx, tw = (torch.tensor(a, requires_grad=True) for a in (x, w))
    tb = None if b is None else torch.tensor(b, requires_grad=True)
    ty = (F.conv1d if dims == 1 else F.conv2d)(tx, tw, tb, **hyper)
    (ty * torch.tensor(u)).sum().backward()
    np.testing.assert_allclose(y, ty.detach().numpy(), **TOL)
    for mine, theirs in zip(g, (tx, tw, tb)):
        if theirs is not None:
            np.testing.assert_allclose(mine, theirs.grad.numpy(), **TOL)


def test_array_weights_become_trainable_parameters_and_tensors_are_kept():
    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((2, 4, 6)), rng.standard_normal((2, 2, 3)), rng.standard_normal(2)
    u = rng.standard_normal((2, 2, 3))
    layer = C.conv1d_as_itnet(w, b, groups=2, stride=2, padding=1)
    assert isinstance(layer.weight, Parameter) and isinstance(layer.bias, Parameter)
    names = [n for n, _ in layer.named_parameters()]
    assert names[:2] == ["weight", "bias"] and not any(n.endswith(("W_O", "W_V")) for n in names)
    (layer(x) * u).sum().backward()
    _, (_, gw, gb) = grads(lambda x_, w_, b_: C.conv1d_as_itnet(w_, b_, groups=2, stride=2, padding=1)(x_),
                            [x, w, b], u)
    np.testing.assert_array_equal(layer.weight.grad.data, gw)
    np.testing.assert_array_equal(layer.bias.grad.data, gb)
    tw = itn.tensor(w, requires_grad=True)
    assert C.conv1d_as_itnet(tw).weight is tw
    # A changed weight changes the layer: W_O is derived at call time, not copied at build time.
    layer.weight.data[...] = 0.0
    np.testing.assert_allclose(layer(x).data, np.broadcast_to(b[None, :, None], (2, 2, 3)), **TOL)


# ------------------------------------------------------------------------------------ reverse map

@kinds
@given(case=any_case())
def test_extraction_round_trip(kind, case):
    dims, (x, w, b, hyper) = case
    layer = BUILD[dims](w, b, kernel=kind, **hyper)
    w2, b2 = C.extract_conv_weights(layer, x.shape[1], w.shape[2:])
    np.testing.assert_allclose(w2, w, rtol=0, atol=1e-12)
    np.testing.assert_allclose(b2, np.zeros(w.shape[0]) if b is None else b, rtol=0, atol=1e-12)


@given(case=any_case())
def test_extraction_reads_any_conv_like_function(case):
    """The reverse map relies on the impulse response only: it also inverts the reference itself."""
    dims, (x, w, b, hyper) = case
    w2, b2 = C.extract_conv_weights(lambda probe: REF[dims](probe, w, b, **hyper), x.shape[1], w.shape[2:],
                                    dilation=hyper["dilation"], groups=hyper["groups"],
                                    stride=hyper["stride"], padding=hyper["padding"])
    np.testing.assert_allclose(w2, w, rtol=0, atol=1e-12)
    np.testing.assert_allclose(b2, np.zeros(w.shape[0]) if b is None else b, rtol=0, atol=1e-12)


def test_extraction_follows_training():
    """After the stencil table is changed (taps 0 and 1 swapped), extraction sees the swapped conv."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((3, 2, 3))
    layer = C.conv1d_as_itnet(w, dilation=2, padding="same")
    layer.transform.kernel.table.data[...] = np.eye(3)[[1, 0, 2]]
    w2, _ = C.extract_conv_weights(layer, 2, 3)
    np.testing.assert_allclose(w2, w[:, :, [1, 0, 2]], rtol=0, atol=1e-12)


# ----------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("build, args, kwargs, error, words", [
    (C.conv1d_as_itnet, ((3, 2, 3),), {"groups": 2}, ConfigError, ["out_channels=3", "groups=2"]),
    (C.conv1d_as_itnet, ((4, 2, 3),), {"groups": 2, "in_channels": 3}, ConfigError,
     ["in_channels=3", "groups=2"]),
    (C.conv2d_as_itnet, ((4, 2, 3),), {}, ShapeError,
     ["weight", "(4, 2, 3)", "(C_out, C_in/groups, kh, kw)"]),
    (C.conv1d_as_itnet, ((4, 2, 3, 3),), {}, ShapeError,
     ["weight", "(4, 2, 3, 3)", "(C_out, C_in/groups, K)"]),
    (C.conv1d_as_itnet, ((4, 2, 3),), {"stride": 2, "padding": "same"}, ConfigError, ["same", "stride"]),
    (C.conv2d_as_itnet, ((4, 2, 3, 3),), {"stride": (1, 2), "padding": "same"}, ConfigError, ["same"]),
    (C.conv1d_as_itnet, ((4, 2, 3),), {"padding": "full"}, ConfigError, ["padding", "'full'"]),
    (C.conv1d_as_itnet, ((4, 2, 3),), {"dilation": 0}, ConfigError, ["dilation"]),
    (C.conv1d_as_itnet, ((4, 2, 3),), {"kernel": "dot"}, ConfigError, ["kernel", "'dot'"]),
    (C.conv1d_as_itnet, ((4, 2, 3), (3,)), {}, ShapeError, ["bias", "(4,)", "(3,)"]),
])
def test_construction_errors(build, args, kwargs, error, words):
    args = tuple(np.ones(a) for a in args)
    with pytest.raises(error) as info:
        build(*args, **kwargs)
    for word in words:
        assert word in str(info.value)


def test_call_errors():
    layer = C.conv1d_as_itnet(np.ones((4, 1, 3)), groups=2, dilation=2)
    with pytest.raises(ShapeError, match=r"x must have shape \(B, 2, L\), got shape \(1, 3, 9\)"):
        layer(np.ones((1, 3, 9)))
    with pytest.raises(ShapeError, match="too small"):
        layer(np.ones((1, 2, 4)))                     # L_out = (4 - 4 - 1) // 1 + 1 = 0
    layer(np.ones((1, 2, 5)))                         # L_out = 1 is fine
    with pytest.raises(ShapeError, match="too small"):
        C.conv2d_as_itnet(np.ones((1, 1, 3, 1)), stride=2)(np.ones((1, 1, 2, 5)))
    with pytest.raises(ConfigError, match="in_channels=3 must be divisible by groups=2"):
        C.extract_conv_weights(layer, 3, 3)


# ------------------------------------------------------------------------------------ suite entry

def test_registered_reductions_pass():
    mine = {"conv1d (stencil)", "conv1d (MLP hat kernel)", "conv2d (stencil)", "conv2d (MLP hat kernel)",
            "conv weight extraction round trip"}
    results = [r for r in run_suite(trials=3, only="conv", progress=False) if r["reduction"] in mine]
    assert {r["reduction"] for r in results} == mine
    assert all(r["passed"] for r in results), [r for r in results if not r["passed"]]
