"""Constructor arguments of IntegralTransform and of every kernel are validated up front, with a
ConfigError (DTypeError for a dtype) naming the argument, the value received and what is expected
(issue 7, defect 14); ``layer.backend`` is checked on assignment; and the operator pickles with every
kernel class, giving the same output after the round trip (issue 7: a lambda blocked it)."""
import pickle

import numpy as np
import pytest

import itnet_np as itn
from itnet_np import transform as T
from itnet_np.errors import ConfigError, DTypeError

F64 = np.float64


def dot(**kw):
    return T.DotProductKernel(4, heads=2, dtype=F64, **kw)


def op(**kw):
    kw = {"in_features": 4, "out_features": 4, "kernel": dot(), "dtype": F64, **kw}
    return T.IntegralTransform(kw.pop("in_features"), kw.pop("out_features"), kw.pop("kernel"), **kw)


BAD_OPERATOR = [
    ({"in_features": 0}, r"in_features must be an int >= 1, got 0"),             # was ZeroDivisionError
    ({"in_features": -3}, r"in_features must be an int >= 1, got -3"),           # was a math domain error
    ({"in_features": 2.7}, r"in_features must be an int >= 1, got 2\.7"),        # was truncated to 2
    ({"in_features": 4.0}, r"in_features must be an int >= 1, got 4\.0"),
    ({"in_features": True}, r"in_features must be an int >= 1, got True"),
    ({"in_features": "4"}, r"in_features must be an int >= 1, got '4'"),
    ({"out_features": 0}, r"out_features must be an int >= 1, got 0"),
    ({"query_features": 0}, r"query_features must be an int >= 1, got 0"),
    ({"embed_dim": 2.0}, r"embed_dim must be an int >= 1, got 2\.0"),
    ({"embed_dim": 5}, r"embed_dim=5 is not divisible by the kernel's heads=2"),
    ({"window": 2.5}, r"window must be an int >= 0, got 2\.5"),                  # was accepted
    ({"window": -1}, r"window must be an int >= 0, got -1"),
    ({"radius": -1.0}, r"radius must be a real number >= 0.0, got -1\.0"),
    ({"radius": float("nan")}, r"radius must be a real number >= 0.0, got nan"),
    ({"support": "future"}, r"support: unknown kind 'future'; expected one of"),
    ({"normalization": "mean"}, r"normalization: unknown value 'mean'; expected one of"),
    ({"quadrature": "gauss"}, r"quadrature: unknown value 'gauss'; expected one of"),
    ({"learned_weights_per_head": True}, r"learned_weights_per_head=True needs quadrature='learned'"),
    ({"skip": 1}, r"skip must be True or False, got 1"),
    ({"bias": "yes"}, r"bias must be True or False, got 'yes'"),
    ({"value_bias": None}, r"value_bias must be True or False, got None"),
    ({"backend": "no-such"}, r"backend: 'no-such' is not available; registered: .*'dense'"),
    ({"backend": None}, r"backend must be a string .* got None"),
    ({"rng": -1}, r"rng must be None, an int seed >= 0 or a numpy Generator, got -1"),
    ({"rng": 1.5}, r"rng must be None, an int seed >= 0 or a numpy Generator, got 1\.5"),
    ({"kernel": "dot"}, r"kernel must be a Kernel, got str"),
]


@pytest.mark.parametrize("kwargs,message", BAD_OPERATOR)
def test_integral_transform_arguments(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        op(**kwargs)


def test_dtype_argument():
    for bad in ("int32", np.float16, "complex128", "nope"):
        with pytest.raises(DTypeError, match=r"dtype must be None, float32 or float64"):
            op(dtype=bad)
    assert op(dtype=np.float32).W_V.dtype == np.float32


BAD_KERNELS = [
    (lambda: T.DotProductKernel(4, heads=0), r"DotProductKernel: heads must be an int >= 1, got 0"),
    (lambda: T.DotProductKernel(4, heads=2.0), r"DotProductKernel: heads must be an int >= 1, got 2\.0"),
    (lambda: T.DotProductKernel(4.5), r"DotProductKernel: in_features must be an int >= 1, got 4\.5"),
    (lambda: T.DotProductKernel(4, head_dim=0), r"DotProductKernel: head_dim must be an int >= 1, got 0"),
    (lambda: T.DotProductKernel(4, scale="big"), r"DotProductKernel: scale must be a real number, got 'big'"),
    (lambda: T.DotProductKernel(4, scale=float("inf")), r"DotProductKernel: scale must be finite, got inf"),
    (lambda: T.DotProductKernel(4, bias=1), r"DotProductKernel: bias must be True or False, got 1"),
    (lambda: T.DotProductKernel(4, position_bias="rope"), r"position_bias: unknown kind 'rope'"),
    (lambda: T.DotProductKernel(4, position_bias="t5", num_buckets=3),
     r"RelativeBias\('t5'\): num_buckets must be an int >= 4, got 3"),
    (lambda: T.DotProductKernel(4, position_bias="t5", num_buckets=16, max_distance=4),
     r"max_distance must exceed the 4 exact buckets .* got 4"),                   # was a division by 0
    (lambda: T.DotProductKernel(4, position_bias="learned", max_distance=2.5),
     r"RelativeBias\('learned'\): max_distance must be an int >= 0, got 2\.5"),
    (lambda: T.DotProductKernel(4, position_bias="t5", bidirectional="yes"),
     r"bidirectional must be True or False, got 'yes'"),
    (lambda: T.MLPKernel(3, hidden=0), r"MLPKernel: hidden must be an int >= 1, got 0"),
    (lambda: T.MLPKernel(3, hidden=8.5), r"MLPKernel: hidden must be an int >= 1, got 8\.5"),
    (lambda: T.MLPKernel(3, position_dim=0), r"MLPKernel: position_dim must be an int >= 1, got 0"),
    (lambda: T.MLPKernel(3, inputs=("dp", "dp")), r"MLPKernel: inputs must be a non-empty subset"),
    (lambda: T.MLPKernel(3, inputs=()), r"MLPKernel: inputs must be a non-empty subset"),
    (lambda: T.MLPKernel(3, activation="swish"),
     r"MLPKernel activation: unknown name 'swish'; expected a callable or one of \[.*'relu'"),
    (lambda: T.MLPKernel(3, activation=3), r"MLPKernel activation: unknown name 3"),
    (lambda: T.MLPKernel(3, inputs=("fourier",)), r"'fourier' input needs fourier=F >= 1"),
    (lambda: T.MLPKernel(3, inputs=("fourier",), fourier=2.5), r"MLPKernel: fourier must be an int >= 0"),
    (lambda: T.MLPKernel(3, inputs=("fourier",), frequencies=np.zeros((0, 1))),
     r"frequencies must be \(F, 1\) with F >= 1"),
    (lambda: T.MLPKernel(3, frequency_scale=-1.0), r"frequency_scale must be a real number >= 0.0"),
    (lambda: T.MLPKernel(3, product_rank=0), r"MLPKernel: product_rank must be an int >= 1, got 0"),
    (lambda: T.MLPKernel(3, learn_frequencies="no"), r"learn_frequencies must be True or False"),
    (lambda: T.LowRankKernel(3, feature_dim=1.5), r"LowRankKernel: feature_dim must be an int >= 1, got 1\.5"),
    (lambda: T.LowRankKernel(3, feature_map="elu"), r"LowRankKernel feature_map: unknown name 'elu'"),
    (lambda: T.StencilKernel([0.5]), r"StencilKernel: offsets must be integers"),
    (lambda: T.StencilKernel([]), r"StencilKernel: offsets must be integers"),
    (lambda: T.StencilKernel(["a"]), r"StencilKernel: offsets must be integers"),
    (lambda: T.StencilKernel([0, 1], heads=1.0), r"StencilKernel: heads must be an int >= 1, got 1\.0"),
    (lambda: T.DecayKernel(1, real_modes=1.5), r"DecayKernel: real_modes must be an int >= 0, got 1\.5"),
    (lambda: T.DecayKernel(1, real_modes=0, complex_modes=0), r"DecayKernel: needs at least one mode"),
    (lambda: T.DecayKernel(1, strict=0), r"DecayKernel: strict must be True or False, got 0"),
    (lambda: T.SelectiveKernel(3, 2, state_dim=0), r"SelectiveKernel: state_dim must be an int >= 1, got 0"),
    (lambda: T.SelectiveKernel(3, 1, state_dim=2, A=[[np.nan, -1.0]]), r"SelectiveKernel: A must be .*finite"),
    (lambda: T.SelectiveKernel(3, 1, direct_A=1), r"SelectiveKernel: direct_A must be True or False, got 1"),
    (lambda: T.SumKernel(), r"SumKernel: give one or more Kernel instances"),
    (lambda: T.SumKernel(T.DecayKernel(1), T.DecayKernel(2)), r"SumKernel: every summand needs the same"),
    (lambda: T.LearnedQuadrature(0), r"LearnedQuadrature: in_features must be an int >= 1, got 0"),
    (lambda: T.shift_transform(2, lag=1.5), r"shift_transform: lag \(>= 1: strictly causal\) must be an int"),
    (lambda: T.grid_positions((3, 2.5)), r"grid_positions: shape entry must be an int >= 1, got 2\.5"),
    (lambda: T.Support("causal", window=1.5), r"support: window must be an int >= 0, got 1\.5"),
    (lambda: T.MLPKernel(3, rng="seed"), r"MLPKernel: rng must be None, an int seed >= 0"),
]


@pytest.mark.parametrize("make,message", BAD_KERNELS)
def test_kernel_and_helper_arguments(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_volterra_call_arguments():
    solver = T.Volterra(T.shift_transform(2, dtype=F64), lambda z, x: z + x)
    x = np.ones((1, 3, 2))
    with pytest.raises(ConfigError, match=r"Volterra: iterations must be an int >= 0, got 2\.5"):
        solver(x, method="picard", iterations=2.5)
    with pytest.raises(ConfigError, match=r"Volterra: method must be one of \('substitution', 'picard'\), got 'x'"):
        solver(x, method="x")


def test_backend_is_checked_on_assignment_and_works_after_it():
    layer = op(normalization="softmax", support="causal")
    x = np.random.default_rng(0).standard_normal((1, 5, 4))
    dense = layer(x).data
    layer.backend = "numba"                  # raised KeyError at forward time before
    assert layer.backend == "numba"
    np.testing.assert_allclose(layer(x).data, dense, rtol=1e-12, atol=1e-13)
    with pytest.raises(ConfigError, match=r"backend: 'numbaa' is not available"):
        layer.backend = "numbaa"
    assert layer.backend == "numba"          # a failed assignment changes nothing
    assert "backend='numba'" in repr(layer)


# ------------------------------------------------------------------------------------------ pickling

def every_kernel():
    C = 3
    return {
        "dot": (T.DotProductKernel(C, heads=1, bias=True, position_bias="t5", num_buckets=8, max_distance=6,
                                   rng=0, dtype=F64), "softmax"),
        "alibi": (T.DotProductKernel(4, heads=2, position_bias="alibi", rng=0, dtype=F64), "softmax"),
        "mlp": (T.MLPKernel(C, heads=2, hidden=4, inputs=("dp", "fourier", "prod", "fi"), fourier=2,
                            learn_frequencies=True, activation="gelu_tanh", rng=0, dtype=F64), "softmax"),
        "mlp-relu": (T.MLPKernel(C, heads=1, activation="relu", rng=0, dtype=F64), "sum"),
        "lowrank": (T.LowRankKernel(C, heads=1, feature_map="elu+1", key_feature_map="softplus", rng=0,
                                    dtype=F64), "sum"),
        "stencil": (T.StencilKernel([-1, 0, 1], rng=0, dtype=F64), "none"),
        "decay": (T.DecayKernel(2, real_modes=1, complex_modes=1, rng=0, dtype=F64), "none"),
        "selective": (T.SelectiveKernel(C, 2, state_dim=2, rng=0, dtype=F64), "none"),
        "sum": (T.SumKernel(T.DecayKernel(1, rng=0, dtype=F64), T.StencilKernel([0], heads=1, dtype=F64)), "sum"),
    }


@pytest.mark.parametrize("name", list(every_kernel()))
def test_operator_pickles_with_every_kernel(name):
    kernel, normalization = every_kernel()[name]
    C = getattr(kernel, "in_features", 3)
    layer = T.IntegralTransform(C, 2, kernel, embed_dim=2 * kernel.heads, normalization=normalization,
                                quadrature="learned", support="causal", skip=True, rng=1, dtype=F64)
    x = np.random.default_rng(2).standard_normal((2, 6, C))
    copy = pickle.loads(pickle.dumps(layer))
    assert copy is not layer and type(copy.kernel) is type(kernel)
    np.testing.assert_array_equal(copy(x).data, layer(x).data)
    for (n, p), (m, q) in zip(layer.named_parameters(), copy.named_parameters()):
        assert n == m and p is not q
        np.testing.assert_array_equal(p.data, q.data)
    # the copy trains on its own: a gradient step on it leaves the original untouched
    before = layer(x).data.copy()
    y = copy(itn.tensor(x))
    (y * y).sum().backward()
    assert all(p.grad is not None for p in copy.parameters())
    np.testing.assert_array_equal(layer(x).data, before)


def add_cell(z, x):
    return z + x


def test_volterra_with_a_module_level_cell_pickles():
    solver = T.Volterra(T.shift_transform(2, query_features=2, dtype=F64), add_cell)
    x = np.random.default_rng(3).standard_normal((1, 4, 2))
    copy = pickle.loads(pickle.dumps(solver))
    np.testing.assert_array_equal(copy(x).data, solver(x).data)
