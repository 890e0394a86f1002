"""cross_entropy (ignore_index, label smoothing, class weights, probability targets, reductions,
(N, C, d...) layouts), nll_loss and mse_loss: forward and gradient against explicit per-position
loops, gradcheck, gradgradcheck, torch, errors."""
import numpy as np
import pytest
import scipy.special as sp
from hypothesis import given
from hypothesis import strategies as st

import itnet_np as itn
import itnet_np.nn.functional as F
from itnet_np.errors import ConfigError, DTypeError, ShapeError

IGNORE = -100


def ce_reference(logits, target, ignore_index=IGNORE, eps=0.0, reduction="mean"):
    """Loop over positions: l = -(1 - eps) log p[t] - eps/C sum_c log p[c]; ignored -> 0.

    Also returns dL/dlogits = (p - q) / count per position, q = (1 - eps) onehot + eps / C.
    """
    lg = np.moveaxis(logits, 1, -1)                     # (N, d..., C)
    C = lg.shape[-1]
    losses = np.zeros(target.shape)
    grads = np.zeros(lg.shape)
    kept = 0
    for pos in np.ndindex(*target.shape):
        t = target[pos]
        if t == ignore_index:
            continue
        kept += 1
        logp = lg[pos] - sp.logsumexp(lg[pos])
        losses[pos] = -(1 - eps) * logp[t] - eps / C * logp.sum()
        q = np.full(C, eps / C)
        q[t] += 1 - eps
        grads[pos] = np.exp(logp) - q
    grads = np.moveaxis(grads, -1, 1)
    if reduction == "none":
        return losses, grads
    if reduction == "sum":
        return losses.sum(), grads
    return losses.sum() / kept, grads / kept


@st.composite
def ce_case(draw):
    n = draw(st.integers(1, 4))
    c = draw(st.integers(1, 5))
    extra = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    seed = draw(st.integers(0, 2 ** 16))
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, c) + extra) * 3
    target = rng.integers(0, c, (n,) + extra)
    drop = rng.random(target.shape) < draw(st.sampled_from([0.0, 0.3]))
    target[drop] = IGNORE
    if not (target != IGNORE).any():
        target.flat[0] = 0
    eps = draw(st.sampled_from([0.0, 0.1, 0.7]))
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    return logits, target, eps, reduction


@given(ce_case())
def test_cross_entropy_matches_explicit_formula(case):
    logits, target, eps, reduction = case
    want, want_grad = ce_reference(logits, target, eps=eps, reduction=reduction)
    x = itn.tensor(logits, requires_grad=True)
    loss = F.cross_entropy(x, target, label_smoothing=eps, reduction=reduction)
    np.testing.assert_allclose(loss.numpy(), want, rtol=1e-12, atol=1e-13)
    # Seed dL/dloss = 1 everywhere: for 'none' the reference gradient is per position already.
    loss.backward(np.ones(loss.shape))
    np.testing.assert_allclose(x.grad.numpy(), want_grad, rtol=1e-11, atol=1e-13)


def test_custom_ignore_index_and_unbatched():
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((4, 3))
    target = np.array([2, 7, 0, 7])
    want, _ = ce_reference(logits, target, ignore_index=7, eps=0.2)
    np.testing.assert_allclose(F.cross_entropy(logits, target, ignore_index=7, label_smoothing=0.2), want,
                               rtol=1e-13)
    one, _ = ce_reference(logits[1:2], np.array([1]), eps=0.2)
    np.testing.assert_allclose(F.cross_entropy(logits[1], np.array(1), label_smoothing=0.2), one, rtol=1e-13)
    assert F.cross_entropy(logits[1], np.array(1), reduction="none").shape == ()


def test_all_ignored_mean_is_nan_sum_is_zero():
    logits = np.zeros((2, 3))
    target = np.array([IGNORE, IGNORE])
    assert np.isnan(F.cross_entropy(logits, target))
    assert F.cross_entropy(logits, target, reduction="sum") == 0.0


@pytest.mark.parametrize("eps,reduction", [(0.0, "mean"), (0.3, "sum"), (0.15, "none")])
def test_cross_entropy_gradcheck_and_gradgradcheck(eps, reduction):
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((3, 4, 2))
    target = np.array([[1, IGNORE], [0, 3], [2, 2]])
    f = lambda x: F.cross_entropy(x, target, label_smoothing=eps, reduction=reduction)
    assert itn.gradcheck(f, [logits])
    assert itn.gradgradcheck(f, [logits])


def test_cross_entropy_torch_cross_check():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    for shape in [(5, 4), (2, 3, 4, 2)]:
        logits = rng.standard_normal(shape)
        target = rng.integers(0, shape[1], shape[:1] + shape[2:])
        target.flat[1] = IGNORE
        for eps in (0.0, 0.25):
            for reduction in ("mean", "sum", "none"):
                tl = torch.tensor(logits, requires_grad=True)
                theirs = torch.nn.functional.cross_entropy(tl, torch.tensor(target), label_smoothing=eps,
                                                           reduction=reduction)
                theirs.sum().backward()
                x = itn.tensor(logits, requires_grad=True)
                ours = F.cross_entropy(x, target, label_smoothing=eps, reduction=reduction)
                ours.sum().backward()
                np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-12, atol=1e-14)
                np.testing.assert_allclose(x.grad.numpy(), tl.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_cross_entropy_errors():
    logits = np.zeros((3, 4))
    with pytest.raises(DTypeError, match="integer class indices"):
        F.cross_entropy(logits, np.zeros(3, bool))
    with pytest.raises(ShapeError, match=r"probability target must have the logits' shape \(3, 4\)"):
        F.cross_entropy(logits, np.zeros(3))
    with pytest.raises(DTypeError, match="target is float32 but the logits are float64"):
        F.cross_entropy(logits, np.zeros((3, 4), np.float32))
    with pytest.raises(ShapeError, match=r"weight has shape \(3,\), expected \(4,\)"):
        F.cross_entropy(logits, np.array([0, 1, 1]), weight=np.ones(3))
    with pytest.raises(ConfigError, match="weight is a constant"):
        F.cross_entropy(logits, np.array([0, 1, 1]), weight=itn.tensor(np.ones(4), requires_grad=True))
    with pytest.raises(DTypeError, match="must be a Tensor or an array, got list"):
        F.cross_entropy(logits, [0, 1, 1])
    with pytest.raises(ShapeError, match=r"target has shape \(2,\), expected \(3,\)"):
        F.cross_entropy(logits, np.zeros(2, dtype=int))
    with pytest.raises(ConfigError, match="target value 4 is out of range for 4 classes"):
        F.cross_entropy(logits, np.array([0, 4, 1]))
    with pytest.raises(ConfigError, match="target value -1"):
        F.cross_entropy(logits, np.array([0, -1, 1]))
    with pytest.raises(ConfigError, match="reduction"):
        F.cross_entropy(logits, np.array([0, 1, 1]), reduction="avg")
    with pytest.raises(ConfigError, match="label_smoothing"):
        F.cross_entropy(logits, np.array([0, 1, 1]), label_smoothing=1.5)
    with pytest.raises(DTypeError, match="logits must be floating"):
        F.cross_entropy(np.zeros((3, 4), dtype=int), np.array([0, 1, 1]))


@given(st.sampled_from([(3,), (2, 3), (2, 1, 4)]), st.sampled_from(["mean", "sum", "none"]),
       st.integers(0, 100))
def test_mse_loss_matches_numpy(shape, reduction, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(shape), rng.standard_normal(shape)
    sq = (a - b) ** 2
    want = {"mean": sq.mean(), "sum": sq.sum(), "none": sq}[reduction]
    ta, tb = itn.tensor(a, requires_grad=True), itn.tensor(b, requires_grad=True)
    loss = F.mse_loss(ta, tb, reduction=reduction)
    np.testing.assert_allclose(loss.numpy(), want, rtol=1e-13)
    loss.backward(np.ones(loss.shape))
    scale = 1.0 / a.size if reduction == "mean" else 1.0
    np.testing.assert_allclose(ta.grad.numpy(), 2 * (a - b) * scale, rtol=1e-13)
    np.testing.assert_allclose(tb.grad.numpy(), -2 * (a - b) * scale, rtol=1e-13)


def test_mse_loss_gradcheck_gradgradcheck_and_errors():
    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    assert itn.gradcheck(F.mse_loss, [a, b])
    assert itn.gradgradcheck(lambda x, y: F.mse_loss(x, y, reduction="none"), [a, b])
    with pytest.raises(ShapeError, match=r"\(2, 3\) and target \(3,\)"):
        F.mse_loss(a, b[0])
    with pytest.raises(ConfigError, match="reduction"):
        F.mse_loss(a, b, reduction="max")


# ----- class weights, nll_loss, probability targets ---------------------------------------------------
def weighted_reference(logp, target, weight, ignore_index=IGNORE, eps=0.0, reduction="mean"):
    """torch's weighted loss by loops over positions: l = -sum_c w_c q_c logp_c with
    q = (1 - eps) onehot + eps / C; 'mean' divides by the sum of w[t] over kept positions.
    Also returns d(reduced loss)/d logp (seed 1 per position for 'none')."""
    lp = np.moveaxis(logp, 1, -1)
    C = lp.shape[-1]
    losses, grads, denominator = np.zeros(target.shape), np.zeros(lp.shape), 0.0
    for pos in np.ndindex(*target.shape):
        t = target[pos]
        if t == ignore_index:
            continue
        denominator += weight[t]
        for c in range(C):
            q = (1 - eps) * (c == t) + eps / C
            losses[pos] -= weight[c] * q * lp[pos][c]
            grads[pos][c] = -weight[c] * q
    grads = np.moveaxis(grads, -1, 1)
    if reduction == "none":
        return losses, grads
    if reduction == "sum":
        return losses.sum(), grads
    return losses.sum() / denominator, grads / denominator


@given(ce_case())
def test_cross_entropy_with_class_weights_matches_loops(case):
    logits, target, eps, reduction = case
    weight = np.random.default_rng(logits.size).uniform(0.2, 3.0, logits.shape[1])
    logp = logits - sp.logsumexp(logits, axis=1, keepdims=True)
    want, dlogp = weighted_reference(logp, target, weight, eps=eps, reduction=reduction)
    x = itn.tensor(logits, requires_grad=True)
    loss = F.cross_entropy(x, target, weight=weight, label_smoothing=eps, reduction=reduction)
    np.testing.assert_allclose(loss.numpy(), want, rtol=1e-12, atol=1e-13)
    loss.backward(np.ones(loss.shape))
    # Through log_softmax: dlogits = dlogp - softmax * sum_c dlogp.
    want_grad = dlogp - np.exp(logp) * dlogp.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(x.grad.numpy(), want_grad, rtol=1e-11, atol=1e-13)


@given(ce_case(), st.booleans())
def test_nll_loss_matches_loops(case, weighted):
    logits, target, _, reduction = case
    logp = logits - sp.logsumexp(logits, axis=1, keepdims=True)
    weight = np.random.default_rng(3).uniform(0.2, 3.0, logits.shape[1]) if weighted else None
    want, dlogp = weighted_reference(logp, target, np.ones(logits.shape[1]) if weight is None else weight,
                                     reduction=reduction)
    x = itn.tensor(logp, requires_grad=True)
    loss = F.nll_loss(x, target, weight=weight, reduction=reduction)
    np.testing.assert_allclose(loss.numpy(), want, rtol=1e-12, atol=1e-13)
    loss.backward(np.ones(loss.shape))
    np.testing.assert_allclose(x.grad.numpy(), dlogp, rtol=1e-12, atol=1e-13)
    # cross_entropy is nll_loss of log_softmax
    np.testing.assert_allclose(F.cross_entropy(logits, target, weight=weight, reduction=reduction), want,
                               rtol=1e-12, atol=1e-13)


def test_nll_loss_unbatched_errors_and_gradgradcheck():
    logp = np.log(np.array([0.2, 0.5, 0.3]))
    np.testing.assert_allclose(F.nll_loss(logp, np.array(1)), -np.log(0.5), rtol=1e-14)
    assert F.nll_loss(logp, np.array(2), reduction="none").shape == ()
    with pytest.raises(DTypeError, match="nll_loss: target must hold integer class indices"):
        F.nll_loss(logp, np.array(1.0))
    with pytest.raises(ConfigError, match="nll_loss: target value 3 is out of range"):
        F.nll_loss(logp, np.array(3))
    with pytest.raises(ConfigError, match="nll_loss: reduction"):
        F.nll_loss(logp, np.array(0), reduction="avg")
    rng = np.random.default_rng(9)
    x, target, w = rng.standard_normal((4, 3, 2)), np.array([[0, 2], [1, IGNORE], [2, 2], [0, 1]]), rng.uniform(1, 2, 3)
    f = lambda a: F.nll_loss(a, target, weight=w)
    assert itn.gradcheck(f, [x]) and itn.gradgradcheck(f, [x])


def soft_reference(logits, q, weight, eps, reduction):
    """-sum_c w_c q'_c log_softmax_c per position, q' = (1 - eps) q + eps / C; 'mean' over positions."""
    C = logits.shape[1]
    logp = logits - sp.logsumexp(logits, axis=1, keepdims=True)
    qq = (1 - eps) * q + eps / C
    w = (np.ones(C) if weight is None else weight).reshape((1, C) + (1,) * (logits.ndim - 2))
    losses = -(w * qq * logp).sum(axis=1)
    return {"none": losses, "sum": losses.sum(), "mean": losses.sum() / losses.size}[reduction]


@given(ce_case(), st.booleans())
def test_cross_entropy_with_probability_targets(case, weighted):
    logits, _, eps, reduction = case
    rng = np.random.default_rng(logits.size)
    q = sp.softmax(rng.standard_normal(logits.shape), axis=1)
    weight = rng.uniform(0.2, 3.0, logits.shape[1]) if weighted else None
    x, tq = itn.tensor(logits, requires_grad=True), itn.tensor(q, requires_grad=True)
    loss = F.cross_entropy(x, tq, weight=weight, label_smoothing=eps, reduction=reduction)
    np.testing.assert_allclose(loss.numpy(), soft_reference(logits, q, weight, eps, reduction), rtol=1e-12,
                               atol=1e-13)
    f = lambda a, b: F.cross_entropy(a, b, weight=weight, label_smoothing=eps, reduction=reduction)
    assert itn.gradcheck(f, [logits, q]) and itn.gradgradcheck(f, [logits, q])
    # A one-hot probability target is the class-index target (no smoothing, no ignored positions).
    index = np.argmax(q, axis=1)
    onehot = np.moveaxis(np.eye(logits.shape[1])[index], -1, 1)
    np.testing.assert_allclose(F.cross_entropy(logits, onehot, weight=None, reduction="none"),
                               F.cross_entropy(logits, index, reduction="none"), rtol=1e-13, atol=1e-14)


def test_probability_target_unbatched_and_float32():
    logits = np.array([0.5, -1.0, 2.0], np.float32)
    q = np.array([0.2, 0.3, 0.5], np.float32)
    x = itn.tensor(logits, requires_grad=True)
    loss = F.cross_entropy(x, q)
    want = -(q.astype(np.float64) * (logits - sp.logsumexp(logits.astype(np.float64)))).sum()
    np.testing.assert_allclose(loss.numpy(), want, rtol=1e-6)
    assert F.cross_entropy(logits, q, reduction="none").shape == ()
    loss.backward()
    assert loss.dtype == x.grad.dtype == np.float32


@pytest.mark.parametrize("kwargs", [{}, {"weight": np.array([1.0, 2.0, 0.5], np.float32)},
                                    {"label_smoothing": 0.1}, {"reduction": "sum"}])
def test_cross_entropy_float32_logits_give_float32(kwargs):
    # On NumPy 1.26 the mean's count (a Python int) used to turn the loss into float64.
    x = itn.tensor(np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32), requires_grad=True)
    target = np.array([0, 2, 1, 1])
    for logits in (x, x.data):
        assert F.cross_entropy(logits, target, **kwargs).dtype == np.float32
        assert F.nll_loss(logits, target).dtype == np.float32
    loss = F.cross_entropy(x, target, **kwargs)
    loss.backward()
    assert x.grad.dtype == np.float32
    one = F.cross_entropy(x[0], np.array(1), **kwargs)   # unbatched: a 0-d result all along
    assert one.dtype == np.float32
