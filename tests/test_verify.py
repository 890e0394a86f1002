"""The verification harness: registry, error measurement, streaming results, report, CLI exit codes,
atomic JSON, and the layering (the suite knows nothing of the command line)."""
import json
import subprocess
import sys

import numpy as np
import pytest

import itnet_np as itn
from itnet_np import verify
from itnet_np.cli import main
from itnet_np.errors import ConfigError


@pytest.fixture
def scratch_registry(monkeypatch):
    """A registry holding only the reductions a test registers (no check modules loaded)."""
    monkeypatch.setattr(verify, "REGISTRY", {})
    monkeypatch.setattr(verify, "CHECK_MODULES", ())
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

    @verify.reduction("nan gradient")
    def _nan(rng):
        return verify.Measurement(forward=0.0, gradient=float("nan"))

    results = {r["reduction"]: r for r in verify.run_suite(trials=3, seed=1, progress=False)}
    assert results["exact"]["passed"] and results["exact"]["configurations"] == 3
    assert not results["off by 1e-6"]["passed"] and results["off by 1e-6"]["forward_error"] == 1e-6
    assert not results["crashes"]["passed"] and "boom" in results["crashes"]["failures"][0]
    assert not results["nan gradient"]["passed"]
    table = verify.format_table(list(results.values()))
    assert "FAIL" in table and "PASS" in table and "boom" in table


def test_iter_suite_yields_each_reduction_as_it_finishes(scratch_registry):
    ran = []
    for name in ("a", "b", "c"):
        verify.reduction(name)(lambda rng, name=name: ran.append(name) or verify.Measurement(forward=0.0))
    suite = verify.iter_suite(trials=2)
    first = next(suite)
    assert first["reduction"] == "a" and ran == ["a", "a"]      # nothing of b or c has run yet
    assert [r["reduction"] for r in suite] == ["b", "c"]


@pytest.mark.parametrize("kwargs, message", [
    ({"trials": 0}, "trials: expected an integer >= 1, got 0"),
    ({"trials": 2.5}, "trials: expected an integer >= 1, got 2.5"),
    ({"trials": True}, "trials: expected an integer >= 1, got True"),
    ({"seed": -5}, "seed: expected an integer >= 0, got -5"),
    ({"only": ""}, "only: expected a non-empty part of a reduction name, got ''"),
    ({"only": "zzz"}, "--only 'zzz' matches no reduction; known reductions: fine"),
])
def test_suite_arguments_are_checked_before_any_check_runs(scratch_registry, kwargs, message):
    ran = []
    verify.reduction("fine")(lambda rng: ran.append(1) or verify.Measurement(forward=0.0))
    with pytest.raises(ConfigError) as info:
        verify.run_suite(progress=False, **kwargs)
    assert str(info.value) == message
    assert ran == []


def test_an_empty_registry_is_an_error_not_a_pass(scratch_registry):
    with pytest.raises(ConfigError, match="no reduction is registered"):
        verify.run_suite(progress=False)


def test_a_missing_check_module_is_reported_not_skipped(scratch_registry, monkeypatch):
    monkeypatch.setattr(verify, "CHECK_MODULES", ("no_such_family",))
    with pytest.raises(ModuleNotFoundError, match="itnet_np.proofs.checks.no_such_family"):
        verify.load_reductions()


def test_only_reproduces_the_configurations_of_a_full_run(scratch_registry):
    """A reduction's configurations depend on (seed, its name, trial), not on what else runs."""
    draws = {}
    for name in ("alpha", "beta", "gamma"):
        @verify.reduction(name)
        def _draw(rng, name=name):
            draws.setdefault(name, []).append(rng.standard_normal(3))
            return verify.Measurement(forward=0.0)
    verify.run_suite(trials=2, seed=7, progress=False)
    full = {name: np.array(d) for name, d in draws.items()}
    draws.clear()
    verify.run_suite(trials=2, seed=7, only="beta", progress=False)
    np.testing.assert_array_equal(np.array(draws["beta"]), full["beta"])
    assert not np.array_equal(full["alpha"], full["beta"])           # reductions draw differently
    draws.clear()
    verify.run_suite(trials=2, seed=8, only="beta", progress=False)
    assert not np.array_equal(np.array(draws["beta"]), full["beta"])  # and the seed matters


def test_cli_exit_codes_and_atomic_json(scratch_registry, tmp_path, capsys):
    @verify.reduction("always fine", tolerance=1e-10)
    def _fine(rng):
        return verify.Measurement(forward=0.0)

    report = tmp_path / "report.json"
    assert main(["verify", "--trials", "2", "--json", str(report)]) == 0
    data = json.loads(report.read_text())
    assert data["passed"] is True and data["complete"] is True
    assert data["results"][0]["reduction"] == "always fine" and data["reductions"] == ["always fine"]
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]  # no temporary file left

    @verify.reduction("never fine", tolerance=1e-10)
    def _bad(rng):
        return verify.Measurement(forward=1.0)

    assert main(["verify", "--trials", "1"]) == 1
    out = capsys.readouterr()
    assert "FAIL" in out.out and "Traceback" not in out.err
    assert main(["verify", "--only", "no-such-reduction"]) == 2
    assert "matches no reduction" in capsys.readouterr().err


def test_importing_the_suite_does_not_import_the_command_line():
    code = ("import sys, itnet_np.verify, itnet_np.proofs.checks.attention; "
            "print('itnet_np.cli' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_every_proof_module_registers_and_passes_one_trial():
    """The real suite: every reduction of the paper, one configuration each, must pass."""
    results = verify.run_suite(trials=1, seed=123, progress=False)
    names = {r["reduction"] for r in results}
    for expected in ("conv1d (stencil)", "MHA (torch.nn.MultiheadAttention)", "Mamba selective scan",
                     "GRU (Volterra)", "LSTM (Volterra)", "linear attention = RNN", "S4D (ZOH)"):
        assert expected in names
    failed = [(r["reduction"], r["failures"], r["forward_error"]) for r in results if not r["passed"]]
    assert not failed
