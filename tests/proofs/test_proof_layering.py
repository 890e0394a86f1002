"""Proof modules hold proofs: importing a construction pulls in neither the verification suite nor the
command line; the suite's checks pull in the suite but not the command line (the CLI depends on the
suite, never the other way round). Checked in a fresh interpreter, module by module: after each
import, the modules it must not load are still absent from sys.modules."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

PROOFS = Path(__file__).resolve().parents[2] / "proofs"


def proof_modules():
    """Every module under proofs/ as itnet_np.proofs.<dotted path>, the checks package last."""
    names = []
    for path in PROOFS.rglob("*.py"):
        parts = path.relative_to(PROOFS).with_suffix("").parts
        if "__pycache__" not in parts:
            module = parts[:-1] if parts[-1] == "__init__" else parts
            names.append(".".join(("itnet_np", "proofs") + module))
    return sorted(set(names), key=lambda n: (n.startswith("itnet_np.proofs.checks"), n))


SCRIPT = """
import importlib, json, sys
report = []
for name in sys.argv[1:]:
    importlib.import_module(name)
    report.append([name, "itnet_np.verify" in sys.modules, "itnet_np.cli" in sys.modules])
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def import_report():
    names = ["itnet_np.proofs"] + proof_modules() + ["itnet_np.verify"]
    result = subprocess.run([sys.executable, "-c", SCRIPT, *names], capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_walk_finds_the_constructions_and_the_checks():
    names = proof_modules()
    for expected in ("itnet_np.proofs.attention", "itnet_np.proofs.reference.attention",
                     "itnet_np.proofs._adapters", "itnet_np.proofs.checks.attention",
                     "itnet_np.proofs.checks.recurrence"):
        assert expected in names


def test_constructions_import_neither_the_suite_nor_the_cli(import_report):
    constructions = [row for row in import_report if not row[0].startswith("itnet_np.proofs.checks")
                     and row[0] != "itnet_np.verify"]
    assert len(constructions) >= 10
    offenders = [name for name, suite, cli in constructions if suite or cli]
    assert not offenders, f"these imports pulled in itnet_np.verify or itnet_np.cli: {offenders}"


def test_checks_and_the_suite_do_not_import_the_cli(import_report):
    assert not [name for name, _, cli in import_report if cli]
    checks = [row for row in import_report if row[0].startswith("itnet_np.proofs.checks.")]
    assert checks and all(suite for _, suite, _ in checks)   # the checks do register with the suite
