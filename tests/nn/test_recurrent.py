"""nn.GRU and nn.GRUCell against an explicit float64 loop of torch's published equations (gate order
r, z, n), against the proofs' independent gru_ref, and by central differences."""
import numpy as np
import pytest
from itnet_np.proofs.reference.recurrent import gru_ref

import itnet_np as itn
from itnet_np.errors import ShapeError
from itnet_np.nn import GRU, GRUCell


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


def test_gru_cell_is_one_step_of_the_loop():
    rng = np.random.default_rng(5)
    cell = GRUCell(3, 4, rng=7, dtype="float64")
    x, h = rng.normal(size=(2, 3)), rng.normal(size=(2, 4))
    w = [p.data for p in (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)]
    want, _ = _loop(x[:, None], h, *w)
    np.testing.assert_allclose(cell(itn.tensor(x), itn.tensor(h)).data, want[:, 0], rtol=0, atol=1e-12)
    want0, _ = _loop(x[:, None], np.zeros((2, 4)), *w)
    np.testing.assert_allclose(cell(itn.tensor(x)).data, want0[:, 0], rtol=0, atol=1e-12)


def test_gru_equals_its_cell_stepped_over_time():
    """GRU and GRUCell built from the same seed hold the same weights; T cell steps = the GRU."""
    rng = np.random.default_rng(6)
    gru, cell = GRU(2, 3, rng=4, dtype="float64"), GRUCell(2, 3, rng=4, dtype="float64")
    x = rng.normal(size=(3, 5, 2))
    out, _ = gru(itn.tensor(x))
    h = None
    for t in range(5):
        h = cell(itn.tensor(x[:, t]), h)
        np.testing.assert_allclose(out.data[:, t], h.data, rtol=0, atol=1e-13)


def test_gru_cell_gradcheck_and_no_bias():
    rng = np.random.default_rng(1)
    cell = GRUCell(2, 3, bias=False, rng=0, dtype="float64")
    assert cell.bias_ih is None and len(list(cell.parameters())) == 2
    x, h = rng.normal(size=(2, 2)), rng.normal(size=(2, 3))

    def f(x, h, w_ih, w_hh):
        with itn.nn.override_parameters(cell, {"weight_ih": w_ih, "weight_hh": w_hh}):
            return cell(x, h)

    assert itn.gradcheck(f, [x, h, cell.weight_ih.data, cell.weight_hh.data])
    want, _ = _loop(x[:, None], h, cell.weight_ih.data, cell.weight_hh.data, np.zeros(9), np.zeros(9))
    np.testing.assert_allclose(cell(itn.tensor(x), itn.tensor(h)).data, want[:, 0], rtol=0, atol=1e-12)


def test_gru_cell_shape_errors():
    cell = GRUCell(2, 3, rng=0)
    with pytest.raises(ShapeError, match=r"\(B, 2\)"):
        cell(np.zeros((4, 5), np.float32))
    with pytest.raises(ShapeError, match="h0 must be"):
        cell(np.zeros((4, 2), np.float32), np.zeros((4, 2), np.float32))
    with pytest.raises(ShapeError, match="no time steps"):
        GRU(2, 3, rng=0)(np.zeros((4, 0, 2), np.float32))
