"""Attention as a Gaussian Nadaraya-Watson smoother (itnet_np.proofs.nadaraya_watson), float64: exact
equality with sdpa_ref (full, causal and masked supports) with gradients w.r.t. q, k, v and tau against
central differences of the reference, the matrix's pieces (key-norm weights, Gaussian of q - k), the
tau -> 0 limit (the mean) and the registered verification check.
"""
import numpy as np
from _proof_helpers import arr, close, grad_check, seeds
from hypothesis import given
from hypothesis import strategies as st
from itnet_np.proofs import nadaraya_watson as A
from itnet_np.proofs import reference as R

from itnet_np.autograd.tensor import Tensor


@given(st.integers(1, 2), st.integers(1, 5), st.integers(1, 5), st.integers(1, 4), st.integers(1, 3),
       st.floats(0.05, 2.0), st.sampled_from(["none", "causal", "mask"]), seeds)
def test_attention_is_a_gaussian_nadaraya_watson_smoother(B, L, S, d, dv, tau, support, seed):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.uniform(-1.5, 1.5, s) for s in ((B, L, d), (B, S, d), (B, S, dv)))
    mask = rng.random((B, L, S)) < 0.7 if support == "mask" else None
    causal = support == "causal"
    sdpa_mask = mask[:, None] if mask is not None else None

    def itnet(q, k, v, tau):
        return A.attention_as_nadaraya_watson(d, dv, tau=tau)(q, k, v, mask=mask, is_causal=causal)

    def ref(q, k, v, tau):
        return R.sdpa_ref(q[:, None], k[:, None], v[:, None], sdpa_mask, causal, float(tau))[:, 0]
    close(itnet(q, k, v, np.array(tau)), ref(q, k, v, tau))
    grad_check(itnet, ref, [q, k, v, np.array(tau)], seed)


def test_nadaraya_watson_pieces_and_the_zero_temperature_limit():
    rng = np.random.default_rng(0)
    q, k, v = rng.standard_normal((1, 3, 2)), rng.standard_normal((1, 4, 2)), rng.standard_normal((1, 4, 3))
    tau = 0.8
    layer = A.attention_as_nadaraya_watson(2, 3, tau=tau)
    w = np.exp(tau * (k * k).sum(-1) / 2)                                   # key-norm quadrature weights
    G = np.exp(-tau * ((q[:, :, None] - k[:, None]) ** 2).sum(-1) / 2)      # Gaussian of q_i - k_j
    A_mat = arr(layer.itnet().kernel_matrix(q, positions=q, source=v, source_positions=k, weights=w))[:, 0]
    close(A_mat, w[:, None] * G / (w[:, None] * G).sum(-1, keepdims=True))
    close(A_mat, np.exp(tau * q @ k.transpose(0, 2, 1)) / np.exp(tau * q @ k.transpose(0, 2, 1)).sum(-1, keepdims=True))
    close(A.attention_as_nadaraya_watson(2, 3, tau=0.0)(q, k, v), np.broadcast_to(v.mean(1, keepdims=True), (1, 3, 3)))


def test_nadaraya_watson_tau_is_a_parameter_or_the_callers_tensor():
    layer = A.attention_as_nadaraya_watson(2, 3, tau=0.7)
    assert [n for n, _ in layer.named_parameters()] == ["tau"]
    tau = Tensor(np.array(0.7), requires_grad=True)
    assert A.attention_as_nadaraya_watson(2, 3, tau=tau).tau is tau


def test_verify_suite_registers_and_passes_the_nadaraya_watson_reduction():
    from itnet_np.verify import run_suite
    results = run_suite(trials=3, only="attention = Nadaraya", progress=False)
    assert [r["reduction"] for r in results] == ["attention = Nadaraya–Watson"]
    assert all(r["passed"] for r in results), results
