"""Packaging: setup.cfg lists every package with the right directory, ships the CUDA sources, and a
wheel built from the tree holds ``itnet_np/proofs`` and ``itnet_np/gpu`` but no top-level
``proofs``/``gpu``/``tests``. Also runs the README's Python example, so the README cannot rot.
"""
import configparser
import fnmatch
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source directory -> the import name it installs as (setup.cfg's package_dir must say the same).
MAPPING = {"itnet_np": "itnet_np", "proofs": "itnet_np.proofs", "gpu": "itnet_np.gpu"}


def setup_cfg():
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser


def cfg_list(text):
    """A setup.cfg list value: one item per line (or comma separated), comments and blanks dropped."""
    items = []
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        items += [item.strip() for item in line.split(",") if item.strip()]
    return items


def cfg_dict(text):
    """A setup.cfg ``key = value`` block (package_dir) as a dict."""
    return {k.strip(): v.strip() for k, v in (item.split("=", 1) for item in cfg_list(text))}


def packages_on_disk():
    """Import name -> directory for every directory holding an ``__init__.py`` under the mapped roots."""
    found = {}
    for source, name in MAPPING.items():
        for init in sorted((ROOT / source).rglob("__init__.py")):
            rel = init.parent.relative_to(ROOT / source)
            if "__pycache__" in rel.parts:
                continue
            found[".".join((name,) + rel.parts)] = init.parent
    return found


def test_package_dir_maps_proofs_and_gpu_into_itnet_np():
    package_dir = cfg_dict(setup_cfg()["options"]["package_dir"])
    assert package_dir == {name: source for source, name in MAPPING.items()}


def test_every_package_is_listed_and_nothing_else():
    listed = cfg_list(setup_cfg()["options"]["packages"])
    on_disk = packages_on_disk()
    assert len(listed) == len(set(listed)), "setup.cfg lists a package twice"
    missing = sorted(set(on_disk) - set(listed))
    extra = sorted(set(listed) - set(on_disk))
    assert not missing, f"add these packages to [options] packages in setup.cfg: {missing}"
    assert not extra, f"setup.cfg lists packages with no __init__.py on disk: {extra}"
    assert all(name.split(".")[0] == "itnet_np" for name in listed), "only itnet_np.* may be installed"
    assert {"itnet_np.proofs", "itnet_np.gpu"} <= set(listed)


def _glob_match(rel, pattern):
    """setuptools' package_data glob for plain patterns: '*' matches within one path component."""
    rel, pattern = PurePosixPath(rel).parts, PurePosixPath(pattern).parts
    return len(rel) == len(pattern) and all(fnmatch.fnmatchcase(r, p) for r, p in zip(rel, pattern))


def test_package_data_ships_every_cuda_source():
    data = setup_cfg()["options.package_data"]
    assert "*.cu" in cfg_list(data.get("itnet_np.gpu", ""))
    packages = packages_on_disk()
    for cu in sorted((ROOT / "gpu").rglob("*.cu")):
        # Covered when some enclosing package's patterns match the path relative to that package.
        covered = False
        for name, directory in packages.items():
            if directory in cu.parents:
                rel = cu.relative_to(directory).as_posix()
                patterns = cfg_list(data.get(name, "")) + cfg_list(data.get("*", ""))
                covered |= any(_glob_match(rel, p) for p in patterns)
        assert covered, f"{cu.relative_to(ROOT)} is not shipped: add a pattern to [options.package_data]"


def test_glob_match_semantics():
    assert _glob_match("kernel.cu", "*.cu")
    assert not _glob_match("sub/kernel.cu", "*.cu")
    assert _glob_match("sub/kernel.cu", "sub/*.cu")
    assert not _glob_match("kernel.cuh", "*.cu")


def test_console_script_and_python_requirement():
    options = setup_cfg()["options"]
    scripts = cfg_list(setup_cfg()["options.entry_points"]["console_scripts"])
    assert "itnet = itnet_np.cli:main" in scripts
    assert options["python_requires"].strip() == ">=3.10"
    requires = {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower()
                for r in cfg_list(options["install_requires"])}
    assert requires == {"numpy", "scipy", "numba", "tqdm"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built (without build isolation, with the installed setuptools) from a copy of the tree."""
    # setuptools>=70.1 has bdist_wheel built in; the `test` extra installs it.
    pytest.importorskip("setuptools", minversion="70.1")
    src = tmp_path_factory.mktemp("src")
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in MAPPING:
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    dist = tmp_path_factory.mktemp("dist")
    build = ("import sys; from setuptools import build_meta; "
             "print(build_meta.build_wheel(sys.argv[1]))")
    result = subprocess.run([sys.executable, "-c", build, str(dist)], cwd=src, capture_output=True,
                            text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return dist / result.stdout.strip().splitlines()[-1]


def test_wheel_contents(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert "itnet_np/proofs/__init__.py" in names
    assert "itnet_np/gpu/__init__.py" in names
    assert "itnet_np/cli.py" in names and "itnet_np/__main__.py" in names
    assert not top & {"proofs", "gpu", "tests", "bench", "examples"}, sorted(top)
    assert {t for t in top if not t.endswith(".dist-info")} == {"itnet_np"}
    for package in packages_on_disk():
        assert package.replace(".", "/") + "/__init__.py" in names, package
    for cu in (ROOT / "gpu").rglob("*.cu"):
        assert "itnet_np/gpu/" + cu.relative_to(ROOT / "gpu").as_posix() in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "itnet = itnet_np.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def readme_python_blocks():
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_python_example_runs():
    blocks = readme_python_blocks()
    assert blocks, "README.md has no ```python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})  # noqa: S102  (our own README)


def test_test_file_basenames_are_unique():
    """pytest's default (prepend) import mode imports each test file by its basename, so two files
    named alike in different folders stop the whole run at collection ("import file mismatch")."""
    seen = {}
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        seen.setdefault(path.name, []).append(str(path.relative_to(ROOT)))
    clashes = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not clashes, f"test files sharing a basename: {clashes}"
