"""Softmax attention as the ITNet operator (itnet_np.proofs.attention), float64, against the independent
references in itnet_np.proofs.reference (sdpa_ref, mha_ref, alibi_bias, t5_relative_bucket):

- nn.MultiheadAttention (cross attention, bool/float masks of both shapes, key padding, causal) and SDPA
  (opposite bool polarity, broadcast masks, causal, scale), ALiBi and T5 biases: forward <= 1e-10 (abs and
  rel); gradients w.r.t. every input and conventional weight against central differences of the reference
  (per argument, random cotangent and direction), and against torch autograd when torch is importable;
- mask polarity and causality by perturbation (they fail if a polarity is flipped);
- reverse maps (MHA weights) and the error messages. Cordonnier's conv-as-attention: test_cordonnier.py.
"""

import numpy as np
import pytest
from _proof_helpers import arr, close, grad_check, seeds
from hypothesis import assume, given
from hypothesis import strategies as st
from itnet_np.proofs import attention as A
from itnet_np.proofs import reference as R

from itnet_np import transform as T
from itnet_np.autograd.tensor import Tensor
from itnet_np.errors import ConfigError, ShapeError


# ----- nn.MultiheadAttention ---------------------------------------------------------------------
@st.composite
def mha_cases(draw):
    B, L, S, H, d = draw(st.integers(1, 2)), draw(st.integers(1, 5)), draw(st.integers(1, 5)), \
        draw(st.integers(1, 3)), draw(st.integers(1, 3))
    E = H * d
    rng = np.random.default_rng(draw(seeds))
    weights = [rng.standard_normal((3 * E, E)), rng.standard_normal(3 * E) if draw(st.booleans()) else None,
               rng.standard_normal((E, E)), rng.standard_normal(E) if draw(st.booleans()) else None]
    inputs = [rng.standard_normal(s) for s in ((B, L, E), (B, S, E), (B, S, E))]
    shape = draw(st.sampled_from([(L, S), (B * H, L, S)]))
    kind = draw(st.sampled_from(["none", "bool", "float", "float-inf"]))
    attn = {"none": None, "bool": rng.random(shape) < 0.3, "float": rng.standard_normal(shape),
            "float-inf": np.where(rng.random(shape) < 0.3, -np.inf, rng.standard_normal(shape))}[kind]
    pad_kind = draw(st.sampled_from(["none", "bool", "float"]))
    pad = {"none": None, "bool": rng.random((B, S)) < 0.3, "float": rng.standard_normal((B, S))}[pad_kind]
    masks = {"attn_mask": attn, "key_padding_mask": pad, "is_causal": draw(st.booleans())}
    return inputs, weights, H, masks


@given(mha_cases())
def test_mha_forward_matches_reference(case):
    (q, k, v), w, H, masks = case
    close(A.mha_as_itnet(*w, H)(q, k, v, **masks), R.mha_ref(q, k, v, *w, H, **masks))


@given(mha_cases(), seeds)
def test_mha_gradients_match_reference_differences(case, seed):
    (q, k, v), (W, b, Wo, bo), H, masks = case
    b = np.zeros(W.shape[0]) if b is None else b
    bo = np.zeros(W.shape[1]) if bo is None else bo
    grad_check(lambda q, k, v, W, b, Wo, bo: A.mha_as_itnet(W, b, Wo, bo, H)(q, k, v, **masks),
               lambda q, k, v, W, b, Wo, bo: R.mha_ref(q, k, v, W, b, Wo, bo, H, **masks),
               [q, k, v, W, b, Wo, bo], seed)


@given(mha_cases())
def test_mha_matches_torch_autograd(case):
    torch = pytest.importorskip("torch")
    (q, k, v), (W, b, Wo, bo), H, masks = case
    attn, pad = masks["attn_mask"], masks["key_padding_mask"]
    assume(attn is None or attn.dtype == bool)
    assume(pad is None or pad.dtype == bool)
    L, S = q.shape[1], k.shape[1]
    if masks["is_causal"]:              # torch takes is_causal as a hint only: give the mask itself
        causal = np.triu(np.ones((L, S), bool), 1)
        attn = causal if attn is None else attn | causal
    E = W.shape[1]
    mha = torch.nn.MultiheadAttention(E, H, bias=True, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.from_numpy(W))
        mha.in_proj_bias.copy_(torch.from_numpy(np.zeros(3 * E) if b is None else b))
        mha.out_proj.weight.copy_(torch.from_numpy(Wo))
        mha.out_proj.bias.copy_(torch.from_numpy(np.zeros(E) if bo is None else bo))
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    out = mha(tq, tk, tv, attn_mask=None if attn is None else torch.from_numpy(attn),
              key_padding_mask=None if pad is None else torch.from_numpy(pad), need_weights=False)[0]
    u = np.random.default_rng(0).standard_normal(out.shape)
    (out * torch.from_numpy(u)).sum().backward()
    xs = [Tensor(a, requires_grad=True) for a in (q, k, v, W, Wo)]
    y = A.mha_as_itnet(xs[3], b, xs[4], bo, H)(*xs[:3], attn_mask=attn, key_padding_mask=pad)
    close(y, out.detach().numpy())
    (y * u).sum().backward()
    for x, t in zip(xs, (tq, tk, tv, mha.in_proj_weight, mha.out_proj.weight)):
        close(x.grad.data, t.grad.numpy())


def _layer_and_inputs(seed, B=2, L=4, S=5, H=2, d=2):
    rng = np.random.default_rng(seed)
    E = H * d
    w = [rng.standard_normal((3 * E, E)), rng.standard_normal(3 * E), rng.standard_normal((E, E)),
         rng.standard_normal(E)]
    return A.mha_as_itnet(*w, H), [rng.standard_normal(s) for s in ((B, L, E), (B, S, E), (B, S, E))], rng


def _moved(layer, q, k, v, j, **masks):
    """Outputs before and after perturbing key/value j (a large change)."""
    k2, v2 = k.copy(), v.copy()
    k2[:, j] += 5.0
    v2[:, j] -= 7.0
    return arr(layer(q, k, v, **masks)), arr(layer(q, k2, v2, **masks))


def test_mha_bool_mask_true_blocks():
    layer, (q, k, v), _ = _layer_and_inputs(1)
    blocked = np.zeros((4, 5), bool)
    blocked[:, 3] = True                    # MHA: True = NOT allowed to attend to key 3
    before, after = _moved(layer, q, k, v, 3, attn_mask=blocked)
    np.testing.assert_array_equal(before, after)
    before, after = _moved(layer, q, k, v, 3, attn_mask=~blocked)
    assert np.abs(before - after).min() > 1e-6  # every row sees key 3 under the flipped mask


def test_mha_key_padding_true_ignores_the_key():
    layer, (q, k, v), _ = _layer_and_inputs(2)
    pad = np.zeros((2, 5), bool)
    pad[:, 1] = True
    before, after = _moved(layer, q, k, v, 1, key_padding_mask=pad)
    np.testing.assert_array_equal(before, after)
    before, after = _moved(layer, q, k, v, 1, key_padding_mask=~pad)
    assert np.abs(before - after).max() > 1e-3


def test_mha_per_head_mask_blocks_only_that_head():
    layer, (q, k, v), _ = _layer_and_inputs(3, B=1, H=2)
    blocked = np.zeros((2, 4, 5), bool)
    blocked[0, :, :] = True
    blocked[0, :, 2] = False                # head 0 sees only key 2; head 1 sees everything
    close(layer(q, k, v, attn_mask=blocked), R.mha_ref(q, k, v, *_weights(layer), 2, attn_mask=blocked))
    assert np.abs(arr(layer(q, k, v, attn_mask=blocked)) - arr(layer(q, k, v))).max() > 1e-6


def _weights(layer):
    return [np.asarray(getattr(layer, n).data) for n in ("in_proj_weight", "in_proj_bias", "out_proj_weight",
                                                        "out_proj_bias")]


def test_mha_causal_future_keys_do_not_reach_the_past():
    layer, (q, k, v), _ = _layer_and_inputs(4, L=5, S=5)
    for j in range(5):
        before, after = _moved(layer, q, k, v, j, is_causal=True)
        np.testing.assert_array_equal(before[:, :j], after[:, :j])
        assert np.abs(before[:, j:] - after[:, j:]).min() > 0


def test_mha_fully_masked_row_gives_out_bias_and_finite_gradients():
    layer, (q, k, v), _ = _layer_and_inputs(5)
    blocked = np.zeros((4, 5), bool)
    blocked[2] = True
    x = Tensor(q, requires_grad=True)
    y = layer(x, k, v, attn_mask=blocked)
    np.testing.assert_array_equal(y.data[:, 2], np.broadcast_to(layer.out_proj_bias.data, (2, 4)))
    y.sum().backward()
    assert np.isfinite(x.grad.data).all() and not x.grad.data[:, 2].any()
    assert np.isfinite(layer.in_proj_weight.grad.data).all()


def test_mha_layer_from_arrays_is_trainable():
    layer, inputs, _ = _layer_and_inputs(6)
    names = [n for n, _ in layer.named_parameters()]
    assert names == ["in_proj_weight", "in_proj_bias", "out_proj_weight", "out_proj_bias"]
    layer(*inputs).sum().backward()
    assert all(p.grad is not None and np.abs(p.grad.data).max() > 0 for p in layer.parameters())


def test_mha_reverse_map_round_trips():
    layer, _, _ = _layer_and_inputs(7)
    W, b, Wo, bo, H = A.mha_from_itnet(layer.itnet())
    for got, want in zip((W, b, Wo, bo), _weights(layer)):
        np.testing.assert_array_equal(got, want)
    assert H == 2


@given(seeds, st.integers(1, 3), st.integers(1, 3))
def test_any_softmax_dot_product_transform_is_an_mha(seed, H, d):
    """Reverse direction: a random self-attention IntegralTransform, read as MHA weights, equals mha_ref."""
    E = H * d
    rng = np.random.default_rng(seed)
    kernel = T.DotProductKernel(E, heads=H, bias=True, rng=rng, dtype=np.float64)
    transform = T.IntegralTransform(E, E, kernel, normalization="softmax", value_bias=True, rng=rng,
                                    dtype=np.float64)
    x = rng.standard_normal((2, 4, E))
    W, b, Wo, bo, heads = A.mha_from_itnet(transform)
    close(transform(x), R.mha_ref(x, x, x, W, b, Wo, bo, heads))


def test_mha_errors_name_the_argument_and_shapes():
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match=r"embed_dim=5 .*num_heads=2"):
        A.mha_as_itnet(rng.standard_normal((15, 5)), None, rng.standard_normal((5, 5)), None, 2)
    with pytest.raises(ShapeError, match=r"in_proj_weight.*\(3E, E\).*\(8, 4\)"):
        A.mha_as_itnet(rng.standard_normal((8, 4)), None, rng.standard_normal((4, 4)), None, 2)
    with pytest.raises(ShapeError, match=r"out_proj_weight.*\(4, 4\).*\(4, 3\)"):
        A.mha_as_itnet(rng.standard_normal((12, 4)), None, rng.standard_normal((4, 3)), None, 2)
    with pytest.raises(ShapeError, match=r"in_proj_bias.*\(12,\)"):
        A.mha_as_itnet(rng.standard_normal((12, 4)), rng.standard_normal(4), rng.standard_normal((4, 4)), None, 2)
    layer, (q, k, v), _ = _layer_and_inputs(0)
    with pytest.raises(ShapeError, match=r"attn_mask.*\(4, 5\) or .*\(4, 4, 5\).*\(5, 5\)"):
        layer(q, k, v, attn_mask=np.zeros((5, 5), bool))
    with pytest.raises(ShapeError, match=r"key_padding_mask.*\(2, 5\).*\(2, 4\)"):
        layer(q, k, v, key_padding_mask=np.zeros((2, 4), bool))
    with pytest.raises(ShapeError, match=r"query.*\(B, L, 4\)"):
        layer(q[..., :3], k, v)
    with pytest.raises(ShapeError, match=r"value.*\(2, 5, 4\)"):
        layer(q, k, v[:, :3])
    skip = T.IntegralTransform(4, 4, T.DotProductKernel(4, heads=2), normalization="softmax", skip=True)
    with pytest.raises(ConfigError, match="no skip map"):
        A.mha_from_itnet(skip)
    wide = T.IntegralTransform(4, 6, T.DotProductKernel(4, heads=2), normalization="softmax", embed_dim=4)
    with pytest.raises(ConfigError, match=r"widths equal to E = 4"):
        A.mha_from_itnet(wide)


# ----- SDPA, ALiBi, T5 ---------------------------------------------------------------------------
@st.composite
def sdpa_cases(draw):
    B, H, L, S, E, Ev = (draw(st.integers(1, n)) for n in (2, 3, 5, 5, 3, 3))
    rng = np.random.default_rng(draw(seeds))
    qkv = [rng.standard_normal(s) for s in ((B, H, L, E), (B, H, S, E), (B, H, S, Ev))]
    shape = draw(st.sampled_from([(L, S), (S,), (B, 1, L, S), (1, H, L, S), (B, H, L, S), (H, 1, S)]))
    kind = draw(st.sampled_from(["none", "bool", "float", "causal"]))
    mask = rng.random(shape) < 0.75 if kind == "bool" else rng.standard_normal(shape) if kind == "float" else None
    scale = draw(st.sampled_from([None, 0.3, 1.0]))
    return qkv, mask, kind == "causal", scale


@given(sdpa_cases(), seeds)
def test_sdpa_forward_and_gradients_match_reference(case, seed):
    (q, k, v), mask, causal, scale = case
    fn = lambda q, k, v: A.scaled_dot_product_attention(q, k, v, mask, causal, scale)
    ref = lambda q, k, v: R.sdpa_ref(q, k, v, mask, causal, scale)
    close(fn(q, k, v), ref(q, k, v))
    grad_check(fn, ref, [q, k, v], seed)


@given(sdpa_cases())
def test_sdpa_matches_torch(case):
    torch = pytest.importorskip("torch")
    (q, k, v), mask, causal, scale = case
    if mask is not None and mask.ndim == 1:      # torch's SDPA wants a mask of >= 2 dims
        mask = mask[None]
    tq, tk, tv = (torch.tensor(a, requires_grad=True) for a in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(
        tq, tk, tv, attn_mask=None if mask is None else torch.from_numpy(mask), is_causal=causal, scale=scale)
    u = np.random.default_rng(1).standard_normal(out.shape)
    (out * torch.from_numpy(u)).sum().backward()
    xs = [Tensor(a, requires_grad=True) for a in (q, k, v)]
    y = A.scaled_dot_product_attention(*xs, mask, causal, scale)
    close(y, out.detach().numpy())
    (y * u).sum().backward()
    for x, t in zip(xs, (tq, tk, tv)):
        close(x.grad.data, t.grad.numpy())


def test_sdpa_bool_mask_true_attends():
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((1, 2, 3, 2)), rng.standard_normal((1, 2, 4, 2)), rng.standard_normal((1, 2, 4, 2))
    attend = np.ones((3, 4), bool)
    attend[:, 2] = False                    # SDPA: False = key 2 takes no part
    v2 = v.copy()
    v2[:, :, 2] += 9.0
    f = A.scaled_dot_product_attention
    np.testing.assert_array_equal(arr(f(q, k, v, attend)), arr(f(q, k, v2, attend)))
    assert np.abs(arr(f(q, k, v, ~attend)) - arr(f(q, k, v2, ~attend))).min() > 1e-6


@given(st.integers(1, 2), st.integers(1, 7), st.integers(1, 6), st.integers(1, 6), st.integers(1, 3),
       st.booleans(), seeds)
def test_alibi_matches_reference_bias(B, H, L, S, E, causal, seed):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal(s) for s in ((B, H, L, E), (B, H, S, E), (B, H, S, 2)))
    layer = A.sdpa_as_itnet(H, E, 2, position_bias="alibi")
    ref = lambda q, k, v: R.sdpa_ref(q, k, v, attn_mask=R.alibi_bias(H, L, S, causal))
    close(layer(q, k, v, is_causal=causal), ref(q, k, v))
    grad_check(lambda q, k, v: layer(q, k, v, is_causal=causal), ref, [q, k, v], seed)


@st.composite
def t5_configs(draw):
    """(num_buckets, max_distance, bidirectional): any bucket count, max_distance past the exact range."""
    nb, bidirectional = draw(st.integers(4, 40)), draw(st.booleans())
    exact = (nb // 2 if bidirectional else nb) // 2
    return nb, draw(st.integers(exact + 1, 3 * exact + 8)), bidirectional


@given(st.integers(1, 3), st.integers(1, 12), st.integers(1, 12), t5_configs(), st.booleans(), seeds)
def test_t5_bias_matches_reference_buckets(H, L, S, config, with_mask, seed):
    nb, md, bidirectional = config
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal(s) for s in ((2, H, L, 2), (2, H, S, 2), (2, H, S, 3)))
    table = rng.standard_normal((H, nb))
    mask = rng.random((2, 1, L, S)) < 0.8 if with_mask else None

    def itnet(q, k, v, table):
        layer = A.sdpa_as_itnet(H, 2, 3, scale=1.0, position_bias="t5", table=table, num_buckets=nb,
                                max_distance=md, bidirectional=bidirectional)
        return layer(q, k, v, attn_mask=mask)

    def ref(q, k, v, table):
        bias = R.t5_bias(table, L, S, bidirectional, nb, md)
        return R.sdpa_ref(q, k, v, attn_mask=bias if mask is None else np.where(mask, bias, -np.inf), scale=1.0)
    close(itnet(q, k, v, table), ref(q, k, v, table))
    grad_check(itnet, ref, [q, k, v, table], seed)


def test_t5_bias_long_sequences_reach_the_log_buckets():
    rng = np.random.default_rng(0)
    L = S = 150                             # offsets up to 149 > max_distance = 128
    q, k, v = (rng.standard_normal((1, 2, L, 2)) for _ in range(3))
    table = rng.standard_normal((2, 32))
    for bidirectional in (True, False):
        layer = A.sdpa_as_itnet(2, 2, position_bias="t5", table=table, bidirectional=bidirectional)
        close(layer(q, k, v), R.sdpa_ref(q, k, v, attn_mask=R.t5_bias(table, L, S, bidirectional, 32, 128)))


def test_t5_bucket_boundaries_follow_the_float32_reference():
    # num_buckets=18, max_distance=128: offsets 8, 16, 64 sit on bucket boundaries that a float64 log
    # moves one bucket up; HF / Mesh-TF (and the reference) take the log in float32.
    rel = np.arange(-70, 71)
    np.testing.assert_array_equal(T.t5_bucket(rel, True, 18, 128), R.t5_relative_bucket(rel, True, 18, 128))
    for nb in range(4, 41):
        for md in (nb // 2 + 1, 20, 64, 128, 300):
            for bidirectional in (True, False):
                if md <= (nb // 2 if bidirectional else nb) // 2:     # no logarithmic range at all
                    continue
                rel = np.arange(-2 * md, 2 * md + 1)
                np.testing.assert_array_equal(T.t5_bucket(rel, bidirectional, nb, md),
                                              R.t5_relative_bucket(rel, bidirectional, nb, md))


def test_sdpa_t5_table_gets_gradients_and_is_a_parameter():
    layer = A.sdpa_as_itnet(2, 2, position_bias="t5", table=np.zeros((2, 32)))
    assert [n for n, _ in layer.named_parameters()] == ["t5_table"]
    rng = np.random.default_rng(0)
    layer(*(rng.standard_normal((1, 2, 3, 2)) for _ in range(3))).sum().backward()
    assert layer.t5_table.grad is not None


def test_sdpa_errors():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 2, 3, 2))
    f = A.scaled_dot_product_attention
    with pytest.raises(ConfigError, match="either attn_mask or is_causal"):
        f(q, q, q, np.ones((3, 3), bool), True)
    with pytest.raises(ShapeError, match=r"attn_mask.*broadcastable to \(1, 2, 3, 3\).*\(4, 3\)"):
        f(q, q, q, np.ones((4, 3), bool))
    with pytest.raises(ShapeError, match=r"value.*\(1, 2, 3, 2\)"):
        A.sdpa_as_itnet(2, 2)(q, q, q[..., :2, :])
    with pytest.raises(ShapeError, match=r"table.*\(2, 32\).*\(2, 8\)"):
        A.sdpa_as_itnet(2, 2, position_bias="t5", table=np.zeros((2, 8)))
    with pytest.raises(ConfigError, match="position_bias"):
        A.sdpa_as_itnet(2, 2, position_bias="rope")


def test_verify_suite_registers_and_passes_the_attention_reductions():
    from itnet_np.verify import run_suite
    names = {"MHA (torch.nn.MultiheadAttention)", "SDPA + ALiBi", "SDPA + T5 bias"}
    results = [r for name in sorted(names) for r in run_suite(trials=3, only=name, progress=False)]
    assert {r["reduction"] for r in results} == names
    assert all(r["passed"] for r in results), results
