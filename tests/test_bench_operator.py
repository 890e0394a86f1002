"""Smoke test of bench/operator.py: the smallest --quick cases run end to end and write the JSON
that BENCHMARKS.md is built from (so the script cannot rot silently)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "operator.py"
SHAPE = "N256-H2-full"
CASES = [f"attention/{impl}/fwd/{SHAPE}" for impl in ("itnet-fused-raw", "itnet-dense", "torch")]

pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="bench/ is not part of this installation")


def _run(*argv, timeout=60):
    return subprocess.run([sys.executable, str(SCRIPT), *argv], capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_list_filters_case_ids():
    result = _run("--quick", "--list", "--cases", ",".join(CASES))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == CASES
    assert _run("--quick", "--list", "--cases", "no-such-case").returncode == 2


def test_quick_smallest_cases_write_expected_json(tmp_path):
    out = tmp_path / "operator.json"
    result = _run("--quick", "--budget", "0.2", "--cases", ",".join(CASES), "--json", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    for key in ("benchmark", "machine", "settings", "load_avg", "cases", "ratios", "targets",
                "crosscheck", "tables_markdown"):
        assert key in data, key
    assert set(data["cases"]) == set(CASES)
    for name in CASES[:2]:                      # ours must run; torch may be skipped when absent
        case = data["cases"][name]
        assert case["status"] == "ok", case
        assert case["median_s"] > 0 and case["repeat"] >= 3
        assert case["peak_extra_mib"] >= 0 and case["rss_base_mib"] > 0
        assert case["threads"]["numba"] >= 1
    assert data["cases"][CASES[0]]["threads"]["OPENBLAS_NUM_THREADS"] == "1"
    assert data["cases"][CASES[2]]["status"] in ("ok", "skipped")
    ratios = data["ratios"]["attention"][SHAPE]["itnet-fused-raw"]
    assert ratios["fwd_time_over_dense"] > 0 and ratios["fwd_mem_over_dense"] is not None
    check = data["crosscheck"][f"attention/fwd/{SHAPE}"]
    assert check["all_finite"]
    assert all(diff < 1e-4 for diff in check["rel_diff"].values()), check
    assert "| N | H | mask |" in data["tables_markdown"]
