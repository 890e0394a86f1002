"""The theory the docstrings lean on is in this repository: docs/theory.md.

Every reference to a theory note must point at docs/theory.md (no bare "theory.md", no path into a
sibling checkout or a research folder outside the repository), and every section a reference cites
(``docs/theory.md §N``, also ``§N, §M`` and ``§N and §M``) must exist there as a ``## N.`` heading.
"""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
THEORY = ROOT / "docs" / "theory.md"
SCANNED = ("itnet_np", "proofs", "tests", "bench", "gpu", "examples", "docs")
TOP_FILES = ("README.md", "BENCHMARKS.md")
SUFFIXES = {".py", ".md", ".txt", ".cfg", ".toml", ".cu", ".ipynb", ".rst"}
# Built from pieces so that this file does not match itself.
NOTE = "theory" + r"\.md"
OUTSIDE = [re.compile(p) for p in (r"(?<!docs/)\b" + NOTE, r"\.\./shared", "shared/" + "research",
                                   "/" + "work/")]
CITATION = re.compile(r"docs/" + NOTE + r"((?:\s*(?:,|and)?\s*§\d+)+)")


def scanned_files():
    files = [ROOT / name for name in TOP_FILES if (ROOT / name).exists()]
    for folder in SCANNED:
        files += [p for p in sorted((ROOT / folder).rglob("*")) if p.is_file() and p.suffix in SUFFIXES
                  and "__pycache__" not in p.parts]
    return [p for p in files if p.resolve() != Path(__file__).resolve()]


def sections():
    """The section numbers of docs/theory.md (headings '## N. Title')."""
    return {int(n) for n in re.findall(r"^## (\d+)\. ", THEORY.read_text(encoding="utf-8"), re.MULTILINE)}


def citations():
    """(file, section number) for every docs/theory.md citation in the scanned files."""
    found = []
    for path in scanned_files():
        for match in CITATION.finditer(path.read_text(encoding="utf-8", errors="replace")):
            found += [(path.relative_to(ROOT), int(n)) for n in re.findall(r"§(\d+)", match.group(1))]
    return found


def test_theory_page_is_in_the_repository_with_numbered_sections():
    assert THEORY.is_file()
    assert sections() == set(range(1, max(sections()) + 1))      # numbered 1..n without gaps


def test_no_reference_points_outside_the_repository():
    offenders = []
    for path in scanned_files():
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if any(p.search(line) for p in OUTSIDE):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "references outside the repository:\n" + "\n".join(offenders)


def test_every_cited_section_exists():
    cited = citations()
    assert len({path for path, _ in cited}) >= 10                 # the proofs do cite the page
    missing = [f"{path}: §{n}" for path, n in cited if n not in sections()]
    assert not missing, f"cited sections that docs/theory.md does not have: {missing}"


def test_the_checker_catches_what_it_is_for(tmp_path):
    """The patterns flag a bare note name, paths out of the repository and an unknown section."""
    bad = ["see " + "theory" + ".md §3", "../shared/x", "/" + "work/shared/research/x"]
    assert all(any(p.search(line) for p in OUTSIDE) for line in bad)
    assert not any(p.search("see docs/" + "theory" + ".md §3") for p in OUTSIDE)
    text = "docs/" + "theory" + ".md §9, §10 and §99"
    assert [int(n) for m in CITATION.finditer(text) for n in re.findall(r"§(\d+)", m.group(1))] == [9, 10, 99]
    assert 99 not in sections()
