"""GRU layer against an explicit NumPy loop of torch's equations (gate order r, z, n), against the
proofs' independent gru_ref, and by central differences."""
import numpy as np
import pytest
from itnet_np.proofs.reference.recurrent import gru_ref

import itnet_np as itn
from itnet_np.errors import ShapeError
from itnet_np.models import GRU


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _loop(x, h, w_ih, w_hh, b_ih, b_hh):
    """h_t per step, one batch row and one gate at a time, written from the published equations."""
    B, T, _ = x.shape
    H = w_hh.shape[1]
    out = np.zeros((B, T, H))
    h = h.copy()
    for b in range(B):
        hb = h[b].copy()
        for t in range(T):
            gi = [w_ih[g * H:(g + 1) * H] @ x[b, t] + b_ih[g * H:(g + 1) * H] for g in range(3)]
            gh = [w_hh[g * H:(g + 1) * H] @ hb + b_hh[g * H:(g + 1) * H] for g in range(3)]
            r = _sigmoid(gi[0] + gh[0])
            z = _sigmoid(gi[1] + gh[1])
            n = np.tanh(gi[2] + r * gh[2])
            hb = (1 - z) * n + z * hb
            out[b, t] = hb
        h[b] = hb
    return out, h


@pytest.mark.parametrize("with_h0", [False, True])
def test_gru_matches_explicit_loop_and_reference(with_h0):
    rng = np.random.default_rng(3)
    gru = GRU(3, 5, rng=1, dtype="float64")
    x = rng.normal(size=(2, 6, 3))
    h0 = rng.normal(size=(1, 2, 5)) if with_h0 else None
    out, hn = gru(itn.tensor(x), None if h0 is None else itn.tensor(h0))
    w = [p.data for p in (gru.weight_ih, gru.weight_hh, gru.bias_ih, gru.bias_hh)]
    want, want_h = _loop(x, np.zeros((2, 5)) if h0 is None else h0[0], *w)
    np.testing.assert_allclose(out.data, want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(hn.data[0], want_h, rtol=0, atol=1e-12)
    ref_out, ref_h = gru_ref(x, h0, *w)
    np.testing.assert_allclose(out.data, ref_out, rtol=0, atol=1e-12)
    np.testing.assert_allclose(hn.data, ref_h, rtol=0, atol=1e-12)


def test_gru_layout_and_init_follow_torch():
    gru = GRU(4, 3, rng=0)
    assert gru.weight_ih.shape == (9, 4) and gru.weight_hh.shape == (9, 3)
    assert gru.bias_ih.shape == (9,) and gru.weight_ih.dtype == np.float32
    for p in gru.parameters():
        assert np.abs(p.data).max() <= 1 / np.sqrt(3)


def test_gru_gradcheck():
    rng = np.random.default_rng(0)
    gru = GRU(2, 3, rng=2, dtype="float64")
    x, h0 = rng.normal(size=(2, 4, 2)), rng.normal(size=(2, 3))

    def f(x, h0, w_ih, w_hh, b_ih, b_hh):
        with itn.nn.override_parameters(gru, {"weight_ih": w_ih, "weight_hh": w_hh, "bias_ih": b_ih,
                                              "bias_hh": b_hh}):
            return gru(x, h0)

    params = [p.data for p in (gru.weight_ih, gru.weight_hh, gru.bias_ih, gru.bias_hh)]
    assert itn.gradcheck(f, [x, h0] + params)


def test_gru_shape_errors():
    gru = GRU(2, 3, rng=0)
    with pytest.raises(ShapeError, match=r"\(B, T, 2\)"):
        gru(np.zeros((2, 4, 5), np.float32))
    with pytest.raises(ShapeError, match="h0"):
        gru(np.zeros((2, 4, 2), np.float32), np.zeros((3, 3), np.float32))
