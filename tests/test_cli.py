"""The ``itnet`` command line: version, info, demo, verify; every argument checked before any work;
errors that never show a traceback; Ctrl-C keeps what finished."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import warnings

import numba
import numpy
import pytest
import scipy

import itnet_np
from itnet_np import cli, verify
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
    (ConfigError("hidden must be positive, got -3"), 2,
     "itnet: error: ConfigError: hidden must be positive, got -3"),
    (itnet_np.ShapeError("x has shape (2, 3), expected (2, 4)"), 1,
     "itnet: error: ShapeError: x has shape (2, 3), expected (2, 4)"),
    (ZeroDivisionError("division by zero"), 1, "itnet: error: ZeroDivisionError: division by zero"),
    (ValueError("first line\n  second line\n"), 1, "itnet: error: ValueError: first line second line"),
    (KeyError("k"), 1, "itnet: error: KeyError: 'k'"),
])
def test_errors_print_one_line_and_exit_code(capsys, failing_command, exc, code, message):
    failing_command("_test_fail", exc)
    got, _, err = run(capsys, "_test_fail")
    assert got == code
    assert err.startswith(message)
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_ctrl_c_in_any_command_exits_130_without_traceback(capsys, failing_command):
    failing_command("_test_interrupt", KeyboardInterrupt())
    code, _, err = run(capsys, "_test_interrupt")
    assert code == 130
    assert err == "itnet: error: interrupted\n"


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


def test_demo_fails_clearly_when_training_diverges(capsys):
    # lr 1e30: the first step sends the float32 weights to ~1e30, the next forward overflows. NumPy's
    # overflow warnings are errors here: the one-line message must be all the user sees.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, out, err = run(capsys, "demo", "--steps", "20", "--lr", "1e30")
    assert code == 1
    assert re.search(r"^itnet: error: DivergedError: training diverged at step \d+: the loss is (nan|inf)",
                     err, re.MULTILINE), err
    assert "test accuracy" not in out and "Traceback" not in err


def test_demo_checks_the_loss_after_its_last_step(capsys):
    # One step: the loss of step 1 is finite; the diverged weights show only after the update.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, out, err = run(capsys, "demo", "--steps", "1", "--lr", "1e30")
    assert code == 1
    assert "training diverged after step 1: the loss is" in err
    assert "test accuracy" not in out


# ----- every argument is checked while parsing, before any work ---------------------------------------

@pytest.fixture
def recording_registry(monkeypatch):
    """verify's registry replaced by two reductions that record every configuration they run."""
    monkeypatch.setattr(verify, "REGISTRY", {})
    monkeypatch.setattr(verify, "CHECK_MODULES", (), raising=False)
    monkeypatch.setattr(verify, "PROOF_MODULES", (), raising=False)       # its name before the split
    ran = []
    for name in ("a first", "b second"):
        verify.reduction(name)(lambda rng, name=name: ran.append(name) or verify.Measurement(forward=0.0))
    return ran


@pytest.mark.parametrize("argv, option, expected", [
    (("verify", "--seed", "-5"), "--seed", "expected an integer >= 0, got '-5'"),
    (("verify", "--seed", "x"), "--seed", "expected an integer >= 0, got 'x'"),
    (("verify", "--trials", "0"), "--trials", "expected an integer >= 1, got '0'"),
    (("verify", "--trials", "2.5"), "--trials", "expected an integer >= 1, got '2.5'"),
    (("verify", "--only", ""), "--only", "expected a non-empty part of a name, got ''"),
    (("verify", "--only", "  "), "--only", "expected a non-empty part of a name, got '  '"),
    (("verify", "--json", ""), "--json", "cannot write a file at '': expected a file path"),
    (("demo", "--lr", "inf"), "--lr", "expected a finite number > 0, got 'inf'"),
    (("demo", "--lr", "nan"), "--lr", "expected a finite number > 0, got 'nan'"),
    (("demo", "--lr", "0"), "--lr", "expected a finite number > 0, got '0'"),
    (("demo", "--seed", "-1"), "--seed", "expected an integer >= 0, got '-1'"),
    (("demo", "--hidden", "0"), "--hidden", "expected an integer >= 1, got '0'"),
    (("demo", "--steps", "1e3"), "--steps", "expected an integer >= 1, got '1e3'"),
])
def test_bad_arguments_name_the_option_and_stop_before_any_work(capsys, recording_registry, argv, option,
                                                                expected):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert f"error: argument {option}: {expected}" in err
    assert "Traceback" not in err + out
    assert recording_registry == [] and out == ""


def _json_targets(tmp_path):
    """name -> (--json value, expected reason) for targets that cannot take the report."""
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    fifo = tmp_path / "a_fifo"
    os.mkfifo(fifo)
    return {
        "directory": (str(tmp_path), "it is a directory; expected a file path"),
        "trailing separator": (str(tmp_path / "new") + os.sep, "it is a directory; expected a file path"),
        "missing directory": (str(tmp_path / "missing" / "r.json"), "does not exist"),
        "file as directory": (str(a_file / "r.json"), f"{str(a_file)!r} is not a directory"),
        "fifo": (str(fifo), "it exists and is not a regular file"),
    }


@pytest.mark.parametrize("case", ["directory", "trailing separator", "missing directory", "file as directory",
                                  "fifo"])
def test_json_target_is_checked_before_the_suite_runs(capsys, recording_registry, tmp_path, case):
    target, reason = _json_targets(tmp_path)[case]
    code, out, err = run(capsys, "verify", "--json", target)
    assert code == 2
    assert f"error: argument --json: cannot write a file at {target!r}: " in err and reason in err
    assert recording_registry == [] and out == ""


def test_json_target_in_an_unwritable_directory_is_refused(capsys, recording_registry, tmp_path, monkeypatch):
    # os.access is what the check asks; faking its answer also covers runs as root (where it says yes).
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    code, _, err = run(capsys, "verify", "--json", str(tmp_path / "r.json"))
    assert code == 2
    assert f"directory {str(tmp_path)!r} is not writable" in err
    assert recording_registry == []


def test_json_replaces_an_existing_report(capsys, recording_registry, tmp_path):
    report = tmp_path / "r.json"
    report.write_text("old")
    assert run(capsys, "verify", "--trials", "1", "--json", str(report))[0] == 0
    assert json.loads(report.read_text())["complete"] is True
    assert recording_registry == ["a first", "b second"]


# ----- Ctrl-C: keep what finished, exit 130 -----------------------------------------------------------

def test_interrupted_verify_writes_the_finished_reductions_and_exits_130(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(verify, "REGISTRY", {})
    monkeypatch.setattr(verify, "CHECK_MODULES", (), raising=False)
    monkeypatch.setattr(verify, "PROOF_MODULES", (), raising=False)       # its name before the split

    def interrupt(rng):
        raise KeyboardInterrupt

    verify.reduction("a first")(lambda rng: verify.Measurement(forward=0.0))
    verify.reduction("b second")(interrupt)
    verify.reduction("c third")(lambda rng: verify.Measurement(forward=0.0))
    report = tmp_path / "r.json"
    code, out, err = run(capsys, "verify", "--json", str(report))
    assert code == 130
    data = json.loads(report.read_text())
    assert data["complete"] is False and data["passed"] is False
    assert [r["reduction"] for r in data["results"]] == ["a first"]
    assert data["reductions"] == ["a first", "b second", "c third"]
    assert "1 passed, 0 failed, 2 not run (interrupted)" in out and "(incomplete)" in out
    assert err.strip().splitlines()[-1] == "itnet: error: interrupted"
    assert "Traceback" not in err


def test_ctrl_c_on_a_running_verify_keeps_the_finished_reductions(tmp_path):
    """A real SIGINT to ``python -m itnet_np verify --json``, sent once the first reduction is reported
    (its progress line on stderr), while many configurations of the others are still to run: one
    SIGINT must be enough. (One CI run with a cold Numba cache once lost it under Python's default
    handler, whose KeyboardInterrupt is discarded when it fires inside a finalizer; verify now sets a
    flag (cli.SigintFlag) and stops at the next configuration, and this test no longer sends a
    second SIGINT to cover for a lost first one.)"""
    report = tmp_path / "out.json"
    proc = subprocess.Popen([sys.executable, "-m", "itnet_np", "verify", "--trials", "100", "--json", str(report)],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(600, proc.kill)
    watchdog.start()
    try:
        err = []
        for line in proc.stderr:
            err.append(line)
            if line.startswith("verify [1/"):
                break
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail("itnet verify still ran 120 s after one SIGINT: the signal was lost")
        err.append(proc.stderr.read())
        out = proc.stdout.read()
        proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = "".join(err)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "itnet: error: interrupted" and "Traceback" not in err
    reported = re.findall(r"^verify \[\d+/\d+\] (.+): (?:PASS|FAIL)$", err, re.MULTILINE)
    data = json.loads(report.read_text())
    written = [r["reduction"] for r in data["results"]]
    assert data["complete"] is False and data["passed"] is False
    assert reported and written[:len(reported)] == reported and len(written) <= len(reported) + 1
    assert len(written) < len(data["reductions"])
    assert all(r["passed"] and r["configurations"] == 100 for r in data["results"])
    assert "not run (interrupted)" in out and "(incomplete)" in out
