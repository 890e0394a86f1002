"""ITNetConfig (named sizes, ablations, validation), parameter counting and width matching, the
encoders' positions, and discretisation: the ITNet function model at other resolutions vs the CNN."""
import numpy as np
import pytest

from itnet_np import models
from itnet_np.errors import ConfigError, DTypeError, ShapeError
from itnet_np.transform.kernels.mlp import INPUTS


def test_named_sizes_grow_and_override():
    counts = [models.count_parameters(models.itnet_for_images(1, 10, models.ITNetConfig.named(s), rng=0))
              for s in ("tiny", "small", "base")]
    assert counts[0] < counts[1] < counts[2]
    assert models.ITNetConfig.named("small", depth=3).depth == 3
    table = models.size_table(lambda cfg: models.itnet_for_images(1, 10, cfg, rng=0))
    for size, count in zip(("tiny", "small", "base"), counts):
        assert f"{size}" in table and f"{count:,}" in table
    with pytest.raises(ConfigError, match="huge"):
        models.ITNetConfig.named("huge")


def test_ablations_set_the_kernel_inputs():
    base = models.ITNetConfig.named("tiny")
    full = set(models.ABLATIONS["full"])
    for removed in ("prod", "dp", "dist2", "fourier"):
        assert set(base.ablation(f"no_{removed}").kernel_inputs) == full - {removed}
    assert not {"dp", "dist2", "fourier"} & set(models.ABLATIONS["content_only"])
    assert not {"prod", "fi", "fj"} & set(models.ABLATIONS["position_only"])
    for name, inputs in models.ABLATIONS.items():
        net = models.itnet_for_tokens(5, 2, base.ablation(name), max_length=8, rng=0)
        kernel = net.blocks[0].transform.kernel
        assert set(kernel.inputs) == set(inputs) and set(kernel.layout) == set(inputs)
        assert net(np.zeros((1, 4), np.int64)).shape == (1, 2)


@pytest.mark.parametrize("bad", [{"width": 10, "heads": 4}, {"kernel_inputs": ("dp", "bogus")},
                                 {"kernel_inputs": "nope"}, {"depth": 0}, {"fourier": 0},
                                 {"dropout": 1.0}, {"width": True}, {"source": "raw"}, {"final_norm": 1}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        models.ITNetConfig(**bad)


def test_count_parameters_against_explicit_formula():
    # GRU: 3H(I + H) weights + 2 * 3H biases; Linear head: H C + C.
    I, H, C = 3, 7, 4
    model = models.GRUClassifier(C, hidden=H, in_features=I, rng=0)
    assert models.count_parameters(model) == 3 * H * (I + H) + 6 * H + H * C + C
    table = models.parameter_table({"gru": model, "other": 12})
    assert "gru" in table and f"{3 * H * (I + H) + 6 * H + H * C + C:,}" in table and "12" in table


def test_match_width_hits_target_within_tolerance():
    target = models.count_parameters(models.itnet_for_images(1, 10, models.ITNetConfig.named("small"), rng=0))
    width, cnn = models.match_width(lambda w: models.ResNetCNN(1, 10, width=w, dim=2, rng=0), target)
    got = models.count_parameters(cnn)
    assert abs(got - target) <= 0.1 * target
    for w in (width - 1, width + 1):          # no neighbouring width is closer
        other = models.count_parameters(models.ResNetCNN(1, 10, width=w, dim=2, rng=0))
        assert abs(other - target) >= abs(got - target)
    with pytest.raises(ConfigError, match="tolerance"):
        models.match_width(lambda w: models.ResNetCNN(1, 10, width=w, dim=2, rng=0), 10)


def test_image_encoder_patches_and_positions():
    enc = models.ImageEncoder(2, 3, patch=2, rng=0, dtype="float64")
    x = np.arange(2 * 2 * 4 * 6, dtype=np.float64).reshape(2, 2, 4, 6)
    tokens, pos = enc(x)
    assert tokens.shape == (2, 6, 3) and pos.shape == (1, 6, 2)
    k = 1 * 3 + 2                                   # patch row 1, col 2
    patch = x[:, :, 2:4, 4:6].reshape(2, -1)        # (channel, row, col) order
    np.testing.assert_allclose(tokens.data[:, k], patch @ enc.proj.weight.data.T + enc.proj.bias.data, atol=1e-10)
    np.testing.assert_allclose(pos[0, k], [1.0, 1.0])
    np.testing.assert_allclose(pos[0, 0], [0.0, 0.0])
    with pytest.raises(ShapeError, match="patch=2"):
        enc(np.zeros((1, 2, 5, 6)))
    with pytest.raises(DTypeError, match="float32"):
        enc(np.zeros((1, 2, 4, 6), np.float32))


def test_token_and_function_encoder_errors():
    enc = models.TokenEncoder(5, 4, max_length=4, rng=0)
    _, pos = enc(np.zeros((1, 3), np.int64))
    np.testing.assert_allclose(pos[0, :, 0], [0, 0.25, 0.5])
    with pytest.raises(ShapeError, match="max_length"):
        enc(np.zeros((1, 5), np.int64))
    with pytest.raises(ShapeError, match="integer"):
        enc(np.zeros((1, 3), np.float32))
    fenc = models.FunctionEncoder(1, 4, rng=0)
    with pytest.raises(ShapeError, match="positions"):
        fenc(np.zeros((2, 5, 1), np.float32), np.zeros((1, 4, 1), np.float32))


def test_itnet_function_model_runs_at_other_resolutions_cnn_refuses():
    net = models.itnet_for_functions(1, 1, models.ITNetConfig.named("tiny"), rng=0)
    cnn = models.GridCNN(1, 1, 16, width=4, depth=1, rng=0)
    for n in (16, 64, 7):
        x = np.linspace(0, 1, n, dtype=np.float32)[None, :, None]
        out = net(np.sin(3 * x), x)
        assert out.shape == (1, n, 1) and np.all(np.isfinite(out.data))
    with pytest.raises(ShapeError, match="another resolution"):
        cnn(np.zeros((1, 64, 1), np.float32))


def test_itnet_refuses_mismatched_encoder_and_task():
    enc = models.TokenEncoder(5, 8, rng=0)
    with pytest.raises(ConfigError, match="width"):
        models.ITNet(enc, 2, models.ITNetConfig.named("tiny"))
    with pytest.raises(ConfigError, match="task"):
        models.ITNet(models.TokenEncoder(5, 16, rng=0), 2, models.ITNetConfig.named("tiny"), task="segment")


def test_transformer_input_kinds_and_errors():
    with pytest.raises(ConfigError, match="exactly one of vocab"):
        models.Transformer(5, 2, in_features=1)
    with pytest.raises(ConfigError, match="exactly one of vocab"):
        models.Transformer(None, 2)
    with pytest.raises(ConfigError, match="pad_index needs token input"):
        models.Transformer(None, 2, in_features=1, pad_index=0)
    real = models.Transformer(None, 2, width=8, heads=2, max_length=6, in_features=3, rng=0)
    with pytest.raises(ShapeError, match=r"\(B, T, 3\) with T <= 6"):
        real(np.zeros((2, 7, 3), np.float32))
    with pytest.raises(ShapeError, match="tokens must be integers"):
        models.Transformer(5, 2, width=8, heads=2, rng=0)(np.zeros((2, 4), np.float32))


def test_registry_errors_name_what_fits():
    from itnet_np.models import registry
    with pytest.raises(ConfigError, match="unknown task 'nope'; known tasks: mnist1d"):
        registry.get_task("nope")
    with pytest.raises(ConfigError, match="models that fit digits: itnet, cnn"):
        registry.check_fits("digits", "gru")
    with pytest.raises(ConfigError, match="unknown ablation"):
        registry.itnet_config("tiny", "no_everything")
    with pytest.raises(ConfigError, match="itnet model only"):
        registry.build_model("mnist1d", "cnn", None, ablation="no_dp")


def test_kernel_inputs_constant_is_the_transform_one():
    assert set(models.ABLATIONS["full"]) <= set(INPUTS)


def test_itnet_backends_agree():
    """The model runs its transforms on any backend: the fused 'numba' plan matches 'dense' (float64),
    forward and gradients."""
    from itnet_np.transform import available_backends
    if "numba" not in available_backends():
        pytest.skip("numba backend unavailable")
    x = np.linspace(0, 1, 24)[None, :, None]
    v = np.sin(3 * x) * np.array([1.0, 2.0])[:, None, None]
    out, grads = [], []
    for backend in ("dense", "numba"):
        cfg = models.ITNetConfig.named("tiny", backend=backend)
        net = models.itnet_for_functions(1, 1, cfg, rng=0, dtype="float64")
        y = net(v, x)
        (y * y).sum().backward()
        out.append(y.data)
        grads.append({n: p.grad.data for n, p in net.named_parameters()})
    np.testing.assert_allclose(out[1], out[0], rtol=0, atol=1e-10)
    for n in grads[0]:
        np.testing.assert_allclose(grads[1][n], grads[0][n], rtol=1e-8, atol=1e-10, err_msg=n)


@pytest.mark.parametrize("backend", ["dense", "numba"])
@pytest.mark.parametrize("kind", ["itnet", "transformer", "gru"])
def test_padding_tokens_change_nothing(kind, backend):
    """With pad_index, a batch padded at the end gives the logits of each unpadded sequence alone."""
    from itnet_np.transform import available_backends
    if backend not in available_backends():
        pytest.skip(f"{backend} backend unavailable")
    if kind == "itnet":
        net = models.itnet_for_tokens(6, 3, models.ITNetConfig.named("tiny", backend=backend), max_length=12,
                                      pad_index=0, rng=0, dtype="float64")
    elif kind == "transformer":
        net = models.Transformer(6, 3, width=8, depth=2, heads=2, max_length=12, pad_index=0,
                                 backend=backend, rng=0, dtype="float64")
    else:
        net = models.GRUClassifier(3, hidden=5, vocab=6, pad_index=0, rng=0, dtype="float64")
    rng = np.random.default_rng(5)
    seqs = [rng.integers(1, 6, size=n) for n in (3, 7, 10)]
    batch = np.zeros((3, 10), np.int64)
    for b, s in enumerate(seqs):
        batch[b, :len(s)] = s
    padded = net(batch).data
    for b, s in enumerate(seqs):
        np.testing.assert_allclose(padded[b], net(s[None]).data[0], rtol=0, atol=1e-10)
    assert not np.allclose(padded[0], net(np.concatenate([seqs[0], [1]])[None]).data[0])


@pytest.mark.parametrize("source", ["stream", "norm"])
def test_block_source_stream_integrates_the_stream_itself(source):
    """With uniform attention (the kernel's last layer zeroed) and the FFN's output layer zeroed, a
    block is x_i + W_O W_V mean_j s_j + b, where s_j = x_j ('stream': linear in x, so the mean of the
    input passes on exactly) or s_j = LN(x_j) ('norm'), LN written out here in NumPy (float64)."""
    from itnet_np.models.itnet import ITNetBlock
    block = ITNetBlock(models.ITNetConfig.named("tiny", source=source), 1, rng=0, dtype=np.float64)
    for name in ("transform.kernel.W2", "transform.kernel.b2", "ffn.layers.1.weight", "ffn.layers.1.bias"):
        dict(block.named_parameters())[name].data[...] = 0.0
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 9, 16)) * 3 + 1
    positions = np.linspace(0, 1, 9)[None, :, None]
    got = block(x, positions).numpy() - x
    params = {n: p.numpy() for n, p in block.named_parameters()}
    if source == "stream":
        s = x
    else:
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        s = (x - mu) / np.sqrt(var + block.norm1.eps) * params["norm1.weight"] + params["norm1.bias"]
    want = s.mean(axis=1, keepdims=True) @ params["transform.W_V"].T @ params["transform.W_O"].T + params["transform.b"]
    np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), rtol=1e-11, atol=1e-12)


def test_final_norm_off_reads_the_stream():
    """final_norm=False: the head reads the pooled stream itself; True: LN of it (the same weights)."""
    x = np.random.default_rng(1).standard_normal((2, 6, 1))
    positions = np.linspace(0, 1, 6)[None, :, None]
    with_norm = models.itnet_for_functions(1, 3, models.ITNetConfig.named("tiny"), task="classify", rng=0,
                                           dtype=np.float64)
    without = models.itnet_for_functions(1, 3, models.ITNetConfig.named("tiny", final_norm=False),
                                         task="classify", rng=0, dtype=np.float64)
    assert without.norm is None and models.count_parameters(with_norm) - models.count_parameters(without) == 32
    features = []
    without.head.register_forward_hook(lambda module, args, out: features.append(args[0].numpy()))
    without(x, positions)
    with_norm.head.register_forward_hook(lambda module, args, out: features.append(args[0].numpy()))
    with_norm(x, positions)
    np.testing.assert_allclose(features[1].mean(-1), 0.0, atol=1e-12)   # LN (weight 1, bias 0 at init)
    assert np.abs(features[0].mean(-1)).max() > 1e-3      # not layer-normed: the channel means are not 0


@pytest.mark.parametrize("task, source", [("regress", "stream"), ("regress", "norm"), ("classify", "norm")])
def test_weights_are_a_measure_a_weight_of_two_is_a_point_given_twice(task, source):
    """ITNet(..., weights=w): the same outputs as the unweighted model on the point set in which
    every point j appears w_j times (w_j in {1, 2, 3}): at every original point (regression), or
    pooled (classification). The duplicates carry the same position and value, so the identity is
    exact, whatever the weights do inside; float64."""
    rng = np.random.default_rng(11)
    config = models.ITNetConfig.named("tiny", source=source, final_norm=source == "norm")
    net = models.itnet_for_functions(1, 3, config, task=task, rng=0, dtype=np.float64)
    N = 7
    positions = np.sort(rng.random(N))[None, :, None]
    values = rng.standard_normal((2, N, 1))
    counts = np.array([1, 2, 1, 3, 1, 1, 2])
    repeated = np.repeat(np.arange(N), counts)
    weighted = net(values, positions, weights=counts.astype(np.float64)).numpy()
    given_twice = net(values[:, repeated], positions[:, repeated]).numpy()
    if task == "regress":
        first = np.searchsorted(repeated, np.arange(N))     # each original point's first copy
        given_twice = given_twice[:, first]
    np.testing.assert_allclose(weighted, given_twice, rtol=1e-12, atol=1e-13)
    assert not np.allclose(weighted, net(values, positions).numpy(), atol=1e-6)   # the weights matter


def test_weights_errors():
    net = models.itnet_for_functions(1, 1, models.ITNetConfig.named("tiny"), rng=0)
    x, p = np.zeros((2, 5, 1), np.float32), np.linspace(0, 1, 5, dtype=np.float32)[None, :, None]
    with pytest.raises(ShapeError, match=r"weights must be a float32 array of shape \(5,\) or \(2, 5\).*got shape \(4,\)"):
        net(x, p, weights=np.ones(4, np.float32))
    with pytest.raises(ShapeError, match="got shape \\(5,\\) float64"):
        net(x, p, weights=np.ones(5))
    with pytest.raises(ConfigError, match="weights must be >= 0"):
        net(x, p, weights=-np.ones(5, np.float32))
