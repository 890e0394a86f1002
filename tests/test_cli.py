"""The ``itnet`` command line: version, info, demo, and errors that never show a traceback."""
import re
import subprocess
import sys

import numba
import numpy
import pytest
import scipy

import itnet_np
from itnet_np import cli
from itnet_np.errors import ConfigError


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def info_table(out):
    """``key  value`` lines of ``itnet info`` as a dict (keys are separated by two or more spaces)."""
    rows = [re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in out.splitlines() if line.strip()]
    return {row[0]: row[1] for row in rows if len(row) == 2}


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.strip() == f"itnet-np {itnet_np.__version__}"


def test_version_through_python_m(tmp_path):
    # From outside the repository, so the installed package (with its entry points) is what runs.
    result = subprocess.run([sys.executable, "-m", "itnet_np", "--version"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"itnet-np {itnet_np.__version__}"
    assert "Traceback" not in result.stderr


def test_info_reports_versions_and_threading_layer(capsys):
    code, out, err = run(capsys, "info")
    assert code == 0, err
    table = info_table(out)
    assert table["itnet-np"] == itnet_np.__version__
    assert table["numpy"] == numpy.__version__
    assert table["scipy"] == scipy.__version__
    assert table["numba"] == numba.__version__
    assert table["python"].startswith(".".join(map(str, sys.version_info[:3])))
    assert table["default dtype"] == str(itnet_np.get_default_dtype())
    assert table["gpu usable"] in ("yes", "no")
    # The layer in use is only known after a parallel kernel ran; info forces one to run.
    layer = table["numba threading layer"]
    active, configured = re.fullmatch(r"(\S+) \(configured: (\S+)\)", layer).groups()
    assert active in ("tbb", "omp", "workqueue")
    assert active == numba.threading_layer()
    assert configured == numba.config.THREADING_LAYER


def test_info_reports_cupy_consistently(capsys):
    from itnet_np.autograd.backend import cupy_module, gpu_available
    table = info_table(run(capsys, "info")[1])
    cupy = cupy_module()
    assert table["cupy"] == ("not installed" if cupy is None else cupy.__version__)
    assert table["gpu usable"] == ("yes" if gpu_available() else "no")


@pytest.mark.parametrize("argv", [("bogus",), ("--bogus",), ("info", "--bogus"), ("demo", "--steps", "x"),
                                  ("demo", "--lr", "-1"), ()])
def test_usage_errors_exit_2_without_traceback(capsys, argv):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert "error:" in err
    assert "Traceback" not in err + out


def test_usage_error_through_python_m(tmp_path):
    result = subprocess.run([sys.executable, "-m", "itnet_np", "frobnicate"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def failing_command():
    """A temporary subcommand that raises what the test asks for (removed afterwards)."""
    def add(name, exc):
        @cli.subcommand(name, help="raises on purpose")
        def _raise(args):
            raise exc
    yield add
    for name in [n for n in cli._COMMANDS if n.startswith("_test_")]:
        del cli._COMMANDS[name]


@pytest.mark.parametrize("exc, code, message", [
    (ConfigError("hidden must be positive, got -3"), 2, "itnet: error: hidden must be positive, got -3"),
    (itnet_np.ShapeError("x has shape (2, 3), expected (2, 4)"), 1,
     "itnet: error: x has shape (2, 3), expected (2, 4)"),
    (ZeroDivisionError("division by zero"), 1, "itnet: error: ZeroDivisionError: division by zero"),
])
def test_errors_print_one_line_and_exit_code(capsys, failing_command, exc, code, message):
    failing_command("_test_fail", exc)
    got, _, err = run(capsys, "_test_fail")
    assert got == code
    assert err.startswith(message)
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_traceback_flag_reraises(failing_command):
    failing_command("_test_raise", ZeroDivisionError("boom"))
    with pytest.raises(ZeroDivisionError, match="boom"):
        cli.main(["--traceback", "_test_raise"])


def test_broken_command_module_is_reported_without_traceback(capsys, monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("itnet_np._no_such_command_module",))
    code, _, err = run(capsys, "info")
    assert code == 1
    assert err.startswith("itnet: error: ModuleNotFoundError: ")
    assert "itnet_np._no_such_command_module" in err
    assert "Traceback" not in err


def test_command_module_registers_a_subcommand(capsys, monkeypatch, tmp_path):
    (tmp_path / "itnet_test_plugin.py").write_text(
        "from itnet_np.cli import subcommand\n"
        "@subcommand('_test_plugin', help='from a command module')\n"
        "def run(args):\n"
        "    print('plugin ran')\n"
        "    return 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("itnet_test_plugin",))
    try:
        code, out, _ = run(capsys, "_test_plugin")
    finally:
        cli._COMMANDS.pop("_test_plugin", None)
        sys.modules.pop("itnet_test_plugin", None)
    assert (code, out) == (0, "plugin ran\n")


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        cli.subcommand("info", help="again")(lambda args: 0)


def test_demo_trains(capsys):
    code, out, err = run(capsys, "demo", "--steps", "100")
    assert code == 0, err
    losses = [float(v) for v in re.findall(r"loss (\d+\.\d+)", out)]
    assert len(losses) == 5
    assert losses[-1] < 0.7 * losses[0]  # it learns: the loss falls well below its start (ln 3 ~ 1.10)
    test_accuracy = float(re.search(r"test accuracy (\d\.\d+)", out).group(1))
    assert test_accuracy > 0.6  # three classes: chance is 1/3
