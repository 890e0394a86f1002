"""The backend contract (planner.py): one call record, ``plan(call) -> Plan | Decline``, the 'auto'
rule, explicit backends that decline, and ``IntegralTransform.explain`` giving the reasons in words.
Each decision is checked against what actually runs (the graph's fused node, or its absence), and
each result against the dense reference."""
import re

import numpy as np
import pytest
from _graph_helpers import graph_nodes

import itnet_np as itn
from itnet_np import transform as T
from itnet_np.errors import ConfigError
from itnet_np.transform import planner
from itnet_np.transform.fused.engine_ops import ATTENTION_OP
from itnet_np.transform.fused.numba_plans import MIN_PAIRS

F64 = np.float64


def mlp_op(backend):
    kernel = T.MLPKernel(4, heads=2, hidden=4, rng=0, dtype=F64)
    return T.IntegralTransform(4, 4, kernel, normalization="softmax", backend=backend, rng=1, dtype=F64)


def dot_op(backend, **kw):
    kernel = T.DotProductKernel(4, heads=2, rng=0, dtype=F64, **{k: v for k, v in kw.items() if k == "position_bias"})
    return T.IntegralTransform(4, 4, kernel, normalization="softmax", backend=backend, rng=1, dtype=F64,
                               **{k: v for k, v in kw.items() if k != "position_bias"})


def x_of(n, seed=0):
    return np.random.default_rng(seed).standard_normal((2, n, 4))


def fused_ran(y):
    return ATTENTION_OP in {node.prim.name for node in graph_nodes(y)}


def big_n():
    return int(np.ceil(np.sqrt(MIN_PAIRS["dot", 8])))


def test_auto_takes_numba_when_it_pays_and_says_why_not_when_small():
    op = dot_op("auto", support="causal")
    small, big = x_of(8), x_of(big_n())
    assert not fused_ran(op(itn.tensor(small, requires_grad=True)))
    text = op.explain(small)
    assert text.startswith("backend='auto' runs 'dense'")
    assert "does not pay here: N M = 64 pairs <" in text and "the dense path is faster" in text
    assert fused_ran(op(itn.tensor(big, requires_grad=True)))
    text = op.explain(big)
    assert text.startswith("backend='auto' runs 'numba'") and "* numba: fused attention tiles" in text
    assert "the causal band j <= i" in text
    dense = dot_op("dense", support="causal")
    np.testing.assert_allclose(op(big).data, dense(big).data, rtol=1e-10, atol=1e-12)


def test_explicit_numba_runs_small_calls():
    op = dot_op("numba")
    assert fused_ran(op(itn.tensor(x_of(3), requires_grad=True)))
    assert op.explain(x_of(3)).startswith("backend='numba' runs 'numba'")


@pytest.mark.parametrize("case", ["lowrank", "t5", "per_head_mask", "score_bias", "cupy"])
def test_decline_reasons(case):
    """Every declined call: 'auto' runs dense (same numbers), explicit 'numba' raises ConfigError with
    the reason, and explain() gives the same reason."""
    n, args = big_n(), {}
    x = x_of(n)
    if case == "lowrank":
        kernel = T.LowRankKernel(4, feature_dim=2, rng=0, dtype=F64)
        make = lambda b: T.IntegralTransform(4, 4, kernel, normalization="softmax", backend=b, rng=1, dtype=F64)
        reason = "LowRankKernel (fused: DotProductKernel"
    elif case == "t5":
        make = lambda b: dot_op(b, position_bias="t5")
        reason = "position_bias='t5'"
    elif case == "per_head_mask":            # the attention kernel takes per-head masks; the MLP kernel not
        make = lambda b: mlp_op(b)
        args["mask"] = np.random.default_rng(1).random((1, 2, n, n)) < 0.7
        reason = "a per-head mask"
    elif case == "score_bias":               # likewise a score bias
        make = lambda b: mlp_op(b)
        args["score_bias"] = np.random.default_rng(2).standard_normal((n, n))
        reason = "a score_bias"
    else:                                     # a non-NumPy array type standing in for CuPy's
        class DeviceArray(np.ndarray):
            pass
        make = lambda b: dot_op(b)
        x = x.view(DeviceArray)
        reason = "arrays that are not NumPy arrays (CuPy?)"
    auto, dense = make("auto"), make("dense")
    y = auto(itn.tensor(x, requires_grad=True), **args)
    assert not fused_ran(y)
    np.testing.assert_array_equal(np.asarray(y.data), np.asarray(dense(x, **args).data))
    text = auto.explain(x, **args)
    assert text.startswith("backend='auto' runs 'dense'")
    assert any(line.startswith("  - numba: declines:") and reason in line for line in text.splitlines()), text
    explicit = make("numba")
    with pytest.raises(ConfigError, match=r"backend='numba' cannot run this call: .*" + re.escape(reason)):
        explicit(x, **args)
    assert "raises ConfigError" in explicit.explain(x, **args)


def test_registered_backend_sees_one_call_record():
    seen = []

    def backend(call):
        seen.append(call)
        if call.support.n < 5:
            return T.Decline("mine", "fewer than 5 queries")
        return T.Plan("mine", lambda: planner.dense(call).run() * 1.0, "the dense path, via a plan")
    T.register_backend("mine", backend)
    try:
        op = dot_op("mine", support="causal")
        x = x_of(6)
        np.testing.assert_array_equal(op(x).data, dot_op("dense", support="causal")(x).data)
        call = seen[-1]
        assert isinstance(call, T.TransformCall) and call.normalization == "softmax"
        assert call.support.index_band() == (True, None) and call.score_bias is None
        assert tuple(call.values.shape) == (2, 2, 6, 2) and call.pairs == 36
        with pytest.raises(ConfigError, match="backend='mine' cannot run this call: fewer than 5 queries"):
            op(x_of(3))
        assert "- mine: declines: fewer than 5 queries" in dot_op("auto").explain(x_of(3))
    finally:
        planner._BACKENDS.pop("mine")
    with pytest.raises(ConfigError, match="register_backend"):
        T.register_backend("auto", backend)
    with pytest.raises(ConfigError, match="not available"):
        dot_op("mine")


def test_explain_without_sources():
    op = T.IntegralTransform(4, 4, T.DotProductKernel(4, rng=0, dtype=F64), dtype=F64)
    assert "no sources" in op.explain(x_of(2), source=np.zeros((2, 0, 4)))
