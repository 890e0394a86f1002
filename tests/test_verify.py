"""The verification harness: registry, error measurement, report, CLI exit codes, atomic JSON."""
import json

import numpy as np
import pytest

import itnet_np as itn
from itnet_np import verify
from itnet_np.cli import main


@pytest.fixture
def scratch_registry(monkeypatch):
    """A registry holding only the reductions a test registers (no proofs modules loaded)."""
    monkeypatch.setattr(verify, "REGISTRY", {})
    monkeypatch.setattr(verify, "PROOF_MODULES", ())
    return verify.REGISTRY


def test_directional_gradient_error_detects_a_wrong_gradient():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    good = verify.directional_gradient_error(lambda t: itn.tanh(t) * 2, lambda a: np.tanh(a) * 2, [x], rng)
    assert good < 1e-8
    # The same forward, but an engine function whose derivative is off by a factor: tanh(t)*2 vs a
    # reference 3*tanh(a) has a different derivative, so the error must be large.
    bad = verify.directional_gradient_error(lambda t: itn.tanh(t) * 2, lambda a: np.tanh(a) * 3, [x], rng)
    assert bad > 1e-2


def test_max_abs_rejects_shape_mismatch():
    with pytest.raises(AssertionError, match="shape mismatch"):
        verify.max_abs(np.zeros((2, 3)), np.zeros((3, 2)))


def test_suite_reports_pass_fail_and_crashes(scratch_registry):
    @verify.reduction("exact", tolerance=1e-12)
    def _exact(rng):
        x = rng.standard_normal(5)
        return verify.Measurement(forward=verify.max_abs(x, x.copy()), gradient=0.0)

    @verify.reduction("off by 1e-6", tolerance=1e-10)
    def _off(rng):
        return verify.Measurement(forward=1e-6)

    @verify.reduction("crashes")
    def _crash(rng):
        raise RuntimeError("boom")

    results = {r["reduction"]: r for r in verify.run_suite(trials=3, seed=1, progress=False)}
    assert results["exact"]["passed"] and results["exact"]["configurations"] == 3
    assert not results["off by 1e-6"]["passed"] and results["off by 1e-6"]["forward_error"] == 1e-6
    assert not results["crashes"]["passed"] and "boom" in results["crashes"]["failures"][0]
    table = verify.format_table(list(results.values()))
    assert "FAIL" in table and "PASS" in table and "boom" in table


def test_cli_exit_codes_and_atomic_json(scratch_registry, tmp_path, capsys):
    @verify.reduction("always fine", tolerance=1e-10)
    def _fine(rng):
        return verify.Measurement(forward=0.0)

    report = tmp_path / "report.json"
    assert main(["verify", "--trials", "2", "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["passed"] is True and data["results"][0]["reduction"] == "always fine"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left

    @verify.reduction("never fine", tolerance=1e-10)
    def _bad(rng):
        return verify.Measurement(forward=1.0)

    assert main(["verify", "--trials", "1"]) == 1
    out = capsys.readouterr()
    assert "FAIL" in out.out and "Traceback" not in out.err
    assert main(["verify", "--only", "no-such-reduction"]) == 2
    assert "matches no reduction" in capsys.readouterr().err


def test_every_proof_module_registers_and_passes_one_trial():
    """The real suite: every reduction of the paper, one configuration each, must pass."""
    results = verify.run_suite(trials=1, seed=123, progress=False)
    names = {r["reduction"] for r in results}
    for expected in ("conv1d (stencil)", "MHA (torch.nn.MultiheadAttention)", "Mamba selective scan",
                     "GRU (Volterra)", "LSTM (Volterra)", "linear attention = RNN", "S4D (ZOH)"):
        assert expected in names
    failed = [(r["reduction"], r["failures"], r["forward_error"]) for r in results if not r["passed"]]
    assert not failed
