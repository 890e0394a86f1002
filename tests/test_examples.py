"""The teaching notebooks in examples/: their shape (what issue 13 promises a reader), and the runner.

CI executes every notebook top to bottom in a fresh venv (examples/run_notebooks.py, step
"Notebooks" of .ci/run); these tests check, without a Jupyter kernel, that each one is a valid
jupytext percent script with the size flag, at least one asserted exercise and one figure, and that
examples/README.md and the top-level README list them.
"""
import ast
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("[0-9][0-9]_*.py"))
HEADER = "# ---\n# jupyter:\n#   jupytext:\n"


def cells(path):
    """(kind, source) per cell of a percent script: kind 'markdown' or 'code'; the header is skipped."""
    text = path.read_text(encoding="utf-8")
    found, kind, lines = [], None, []
    for line in text.splitlines():
        if line.startswith("# %%"):
            if kind is not None:
                found.append((kind, "\n".join(lines)))
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind is not None:
            lines.append(line)
    if kind is not None:
        found.append((kind, "\n".join(lines)))
    return found


def test_the_eight_notebooks_exist_numbered_in_order():
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(1, len(numbers) + 1)), [p.name for p in NOTEBOOKS]
    assert len(NOTEBOOKS) >= 8


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_shape(path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith(HEADER), f"{path.name}: no jupytext header"
    assert "format_name: percent" in text.split("# ---", 2)[1], f"{path.name}: not the percent format"
    ast.parse(text, filename=str(path))          # also a plain script
    parsed = cells(path)
    kinds = [k for k, _ in parsed]
    assert kinds[:2] == ["markdown", "code"], f"{path.name}: expected a title cell, then the setup cell"
    title = parsed[0][1].lstrip("# ").splitlines()[0]
    assert title.startswith(f"{int(path.name[:2])}. "), f"{path.name}: title {title!r} is not numbered"
    setup = parsed[1][1]
    assert re.search(r'^FULL_SIZE = os\.environ\.get\("ITNET_FULL_SIZE", "0"\) == "1"', setup, re.M), \
        f"{path.name}: the setup cell has no FULL_SIZE flag"
    code = "\n".join(src for kind, src in parsed if kind == "code")
    assert re.search(r"plt\.(subplots|figure)\(", code), f"{path.name}: no matplotlib figure"
    # An exercise: its statement, then (at some later cell) a check cell that asserts.
    exercises = [i for i, (kind, src) in enumerate(parsed) if kind == "markdown" and "### Exercise" in src]
    assert exercises, f"{path.name}: no exercise"
    for i in exercises:
        later = [src for kind, src in parsed[i + 1:] if kind == "code"]
        assert any(src.lstrip().startswith("# Check") and "assert" in src for src in later[:3]), \
            f"{path.name}: exercise in cell {i} has no '# Check' cell with an assert within 3 code cells"


def test_readmes_list_every_notebook():
    index = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for path in NOTEBOOKS:
        assert f"]({path.name})" in index, f"examples/README.md does not link {path.name}"
    assert "examples/README.md" in (ROOT / "README.md").read_text(encoding="utf-8")


def _runner():
    spec = importlib.util.spec_from_file_location("run_notebooks", EXAMPLES / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_runner_selects_by_number_and_refuses_unknown_numbers():
    runner = _runner()
    assert runner.notebook_sources() == NOTEBOOKS
    assert [p.name[:2] for p in runner.notebook_sources(["2", "01"])] == ["01", "02"]
    with pytest.raises(SystemExit, match="no notebook numbered 99"):
        runner.notebook_sources(["99"])


def test_runner_reports_a_failing_cell(tmp_path):
    pytest.importorskip("nbclient", reason="the notebooks extra is not installed (pip install '.[notebooks]')")
    pytest.importorskip("jupytext", reason="the notebooks extra is not installed (pip install '.[notebooks]')")
    runner = _runner()
    source = tmp_path / "bad.py"
    source.write_text(HEADER + "#     text_representation:\n#       format_name: percent\n# ---\n\n"
                      "# %%\nx = 1\n\n# %%\nassert x == 2, 'the check fails'\n", encoding="utf-8")
    seconds, error = runner.execute(source, cell_timeout=120, out_dir=tmp_path / "out")
    assert error is not None and "the check fails" in error
    assert (tmp_path / "out" / "bad.ipynb").is_file() and seconds > 0
