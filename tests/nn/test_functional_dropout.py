"""dropout: identity in eval and at p = 0, zeros at p = 1, inverted scaling, keep rate,
reproducibility with a Generator, gradient = mask, gradcheck with a fixed mask, errors."""
import numpy as np
import pytest

import itnet_np as itn
import itnet_np.nn.functional as F
from itnet_np.errors import ConfigError


def test_identity_cases():
    x = itn.tensor(np.arange(6.0), requires_grad=True)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    np.testing.assert_array_equal(F.dropout(x, 1.0).numpy(), np.zeros(6))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_values_and_keep_rate(p):
    n = 200_000
    x = np.full(n, 2.0)
    out = F.dropout(x, p, rng=np.random.default_rng(0))
    kept = out != 0
    # Survivors are scaled to keep the expectation: 2 / (1 - p) exactly.
    np.testing.assert_allclose(out[kept], 2.0 / (1 - p), rtol=1e-15)
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs(kept.mean() - (1 - p)) < 5 * sigma
    assert abs(out.mean() - 2.0) < 5 * 2.0 * sigma / (1 - p)


def test_reproducible_with_seeded_generator_and_gradient_is_mask():
    x = np.random.default_rng(1).standard_normal((4, 5))
    a = F.dropout(x, 0.3, rng=np.random.default_rng(42))
    b = F.dropout(x, 0.3, rng=np.random.default_rng(42))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, F.dropout(x, 0.3, rng=np.random.default_rng(43)))
    t = itn.tensor(x, requires_grad=True)
    F.dropout(t, 0.3, rng=np.random.default_rng(42)).sum().backward()
    mask = (a != 0) / 0.7
    np.testing.assert_allclose(t.grad.numpy(), mask, rtol=1e-15)


def test_gradcheck_and_gradgradcheck_with_fixed_mask():
    x = np.random.default_rng(2).standard_normal((3, 4))
    f = lambda t: F.dropout(t, 0.4, rng=np.random.default_rng(7))
    assert itn.gradcheck(f, [x])
    assert itn.gradgradcheck(lambda t: f(t) * f(t), [x])


def test_float32_stays_float32():
    x = itn.tensor(np.ones(8, dtype=np.float32), requires_grad=True)
    assert F.dropout(x, 0.5, rng=np.random.default_rng(0)).dtype == np.float32


@pytest.mark.parametrize("p", [-0.1, 1.5, "half", True, float("nan")])
def test_bad_p(p):
    with pytest.raises(ConfigError, match="p must be a probability"):
        F.dropout(np.ones(3), p)


def test_bad_rng():
    with pytest.raises(ConfigError, match="Generator"):
        F.dropout(np.ones(3), 0.5, rng=42)
