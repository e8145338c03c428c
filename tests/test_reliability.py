"""Issue 14: nothing lost, every failure one line. The CLI is run in-process (``main``)."""

import contextlib
import copy
import errno
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from lagfit_cli.app import limits, rundir
from lagfit_cli.app.cli import main
from lagfit_cli.errors import LagfitError
from lagfit_cli.core.expressions import compile_lagrangian
from lagfit_cli.core.fit import gradient_descent

TINY = ("data.n=4", "optim.iters=5", "report.figures=false")


def lagfit(*args: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, err.getvalue()


def run(run_dir: Path, *overrides: str) -> tuple[int, str]:
    return lagfit("run", *overrides, f"hydra.run.dir={run_dir}")


def one_error_line(code: int, stderr: str, expected: str, exit_code: int = 2) -> str:
    assert code == exit_code, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("lagfit: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and "Warning" not in stderr, stderr
    assert expected in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def finished(tmp_path):
    run_dir = tmp_path / "done"
    code, err = run(run_dir, *TINY)
    assert code == 0, err
    return run_dir


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- 1. run folder claim


def test_a_finished_run_is_refused_however_the_folder_is_named(finished, monkeypatch):
    before = snapshot(finished)
    for overrides in ([f"hydra.run.dir={finished}"], [f"++hydra.run.dir={finished}"],
                      ["hydra.run.dir=${oc.env:RUNDIR}"]):
        monkeypatch.setenv("RUNDIR", str(finished))
        code, err = lagfit("run", *TINY, "seed=5", *overrides)
        one_error_line(code, err, "already holds a finished run")
    assert snapshot(finished) == before
    assert not (finished / rundir.LOCK_FILE).exists()


def test_a_folder_in_use_and_a_stale_lock_are_told_apart(tmp_path):
    busy, stale = tmp_path / "busy", tmp_path / "stale"
    import socket

    # a live owner (this test process's parent), as a second run started at once would see it
    busy.mkdir()
    (busy / rundir.LOCK_FILE).write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))
    code, err = run(busy, *TINY)
    one_error_line(code, err, "is in use by another lagfit run")
    assert not (busy / "metrics.json").exists() and not (busy / ".hydra").exists()
    # a killed owner: a pid that no longer exists
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale.mkdir()
    (stale / rundir.LOCK_FILE).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname(),
                                                      "started": "then"}))
    code, err = run(stale, *TINY)
    one_error_line(code, err, "holds the lock of a run that was killed")
    assert (stale / rundir.LOCK_FILE).exists() and not (stale / ".hydra").exists()


def test_two_runs_started_at_once_one_wins(tmp_path):
    target = tmp_path / "race"
    cmd = [sys.executable, "-m", "lagfit_cli", "run", *TINY, f"hydra.run.dir={target}"]
    procs = [subprocess.Popen(cmd, cwd=tmp_path, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results  # exactly one wins, whichever started first
    loser = next(err for code, err in results if code == 2)
    assert "in use by another lagfit run" in loser or "already holds a finished run" in loser
    config = yaml.safe_load((target / ".hydra" / "config.yaml").read_text())
    assert json.loads((target / "metrics.json").read_text())["seed"] == config["seed"]
    assert not (target / rundir.LOCK_FILE).exists()


# --------------------------------------------------------------------------- 2. resource limits


@pytest.mark.parametrize("overrides, key", [
    (("data=uniform", "data.n_points=1e8"), "data.n_points"),  # 1e8 as Hydra parses it
    (("data.n=100000000000000000000000000000",), "data.n"),  # a 30-digit integer from the command line
])
def test_oversized_runs_are_refused_at_once(tmp_path, overrides, key):
    code, err = run(tmp_path / "r", *overrides)
    line = one_error_line(code, err, key)
    assert len(line) < 400  # no 200-digit numbers
    assert not (tmp_path / "r").exists()


def _job_checks(cfg) -> str:
    """The error line a job prints for ``cfg``: the checks of hydra_app._run_job, in its order,
    before any work (validate_static, limits.check, validate_names) and its message making."""
    from lagfit_cli.app.config import ConfigError, config_message, validate_names, validate_static
    from lagfit_cli.errors import printable

    try:
        validate_static(cfg)
        limits.check(cfg)
        validate_names(cfg)
    except ConfigError as err:
        return f"lagfit: error: {printable(str(err))}"
    except LagfitError as err:
        return f"lagfit: error: {printable(config_message(err))}"
    raise AssertionError("the config was accepted")


@pytest.fixture(scope="module")
def composed():
    """Composed configs of ``lagfit run GROUPS`` (one composition per choice of groups), as
    copies for a test to change."""
    cache = {}

    def get(*groups: str):
        if groups not in cache:
            cache[groups] = _cfg(*groups)
        return copy.deepcopy(cache[groups])

    return get


@pytest.mark.parametrize("groups, values, key", [
    ((), {"threads": 1000}, "threads"),
    ((), {"report.dpi": 20000}, "report.dpi"),
    ((), {"init.n_starts": 10000000}, "init.n_starts"),
    (("data=uniform",), {"data.n_points": 100000000, "limits.max_memory_gb": 16}, "data.n_points"),
    (("task=landscape",), {"task.resolution": 100000}, "task.resolution"),
    ((), {"optim.iters": 100000000000000000000}, "optim.iters"),
])
def test_oversized_values_are_refused_before_any_work(composed, groups, values, key):
    """The other sizes, checked where a job checks them (a full run of each kind is above)."""
    cfg = composed(*groups)
    for name, value in values.items():
        OmegaConf.update(cfg, name, value)
    line = _job_checks(cfg)
    assert "\n" not in line and key in line, line
    assert len(line) < 400  # no 200-digit numbers


def test_the_grid_limit_prints_no_huge_number(tmp_path):
    code, err = run(tmp_path / "r", "system=coupled_oscillators", "data=grid", "data.n=10000000000")
    line = one_error_line(code, err, "data.n")
    assert "about 10^" in line and len(line) < 300


def test_history_memory_does_not_grow_with_iterations(composed):
    def loss_and_grad(theta):  # never converges: a slow descent on a long valley
        return (theta ** 2).sum(-1) + 1.0, 2e-9 * theta

    theta0 = torch.ones(3, 2, dtype=torch.float64)
    # 1000 iterations: over 15 times the 64 rows kept, so the history is thinned again and again
    result = gradient_descent(loss_and_grad, theta0, lr=1e-3, iters=1000, history_max_rows=64)
    rows = result.history.loss.shape[0]
    assert rows <= 64 and int(result.history.iteration()[-1]) == 1000
    assert int(result.history.iteration()[0]) == 0
    big, small = composed(), composed()
    OmegaConf.update(big, "optim.iters", 1000000000)
    OmegaConf.update(small, "optim.iters", 100000)
    big, small = limits.estimates(big, 1, 2)[0], limits.estimates(small, 1, 2)[0]
    assert sum(t.bytes for t in big) == sum(t.bytes for t in small)


def test_a_thinned_history_keeps_each_start_final_state(tmp_path):
    code, err = run(tmp_path / "r", "optim=gd", "init=box", "data.n=4", "optim.iters=60", "report.history_max_rows=8",
                    "optim.grad_tol=0", "optim.loss_tol=0", "check.require_converged=false",
                    "report.figures=false")
    assert code == 0, err
    history = pd.read_csv(tmp_path / "r" / "fit_history.csv")
    results = pd.read_csv(tmp_path / "r" / "fit_results.csv")
    assert history.groupby("start").size().max() <= 8
    last = history.groupby("start").tail(1).set_index("start")
    assert (last["iter"] == results.set_index("start")["iters"]).all()
    assert (last["loss"] == results.set_index("start")["loss"]).all()


def _cfg(*overrides):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from lagfit_cli.app.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_module("lagfit_cli.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


# --------------------------------------------------------------------------- 3. one line each


def test_output_folder_problems_are_one_line(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    one_error_line(*run(a_file, *TINY), "is a file, not a folder")
    one_error_line(*run(a_file / "below", *TINY), "cannot create")
    assert a_file.read_text() == "x"


def test_unwritable_output_folder_is_one_line(tmp_path, monkeypatch):
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if "locked" in self.name:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    one_error_line(*run(tmp_path / "locked", *TINY), "Permission denied")


def test_a_full_disk_leaves_no_partial_file(tmp_path, monkeypatch):
    real = pd.DataFrame.to_csv

    def to_csv(self, path, *args, **kwargs):
        if "fit_history" in str(path):
            Path(path).write_text("start,iter\n0,")  # half a file, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv)
    run_dir = tmp_path / "r"
    one_error_line(*run(run_dir, *TINY), "No space left on device")
    left = [p.name for p in run_dir.rglob("*")] if run_dir.exists() else []
    assert not any(name.endswith((".csv", ".json", ".tmp")) for name in left), left


def test_an_interrupt_marks_the_folder_and_exits_130(tmp_path, monkeypatch):
    from lagfit_cli.app.tasks import TASKS

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(TASKS), "__getitem__", lambda self, name: interrupted)
    run_dir = tmp_path / "r"
    code, err = run(run_dir, *TINY)
    assert code == 130 and err.strip().splitlines()[-1] == "lagfit: interrupted", err
    assert "Traceback" not in err
    assert (run_dir / "error.txt").read_text().splitlines() == ["interrupted", "exit code 130"]
    assert not (run_dir / "metrics.json").exists() and not (run_dir / rundir.LOCK_FILE).exists()


def test_a_crash_is_one_line_and_its_traceback_goes_to_lagfit_log(tmp_path, monkeypatch):
    from lagfit_cli.app.tasks import TASKS

    def buggy(cfg):
        return {}["no such key"]

    monkeypatch.setattr(type(TASKS), "__getitem__", lambda self, name: buggy)
    run_dir = tmp_path / "r"
    line = one_error_line(*run(run_dir, *TINY), "crash: KeyError", exit_code=1)
    assert "lagfit.log" in line
    assert "Traceback" in (run_dir / "lagfit.log").read_text()
    assert not (run_dir / "metrics.json").exists()


def _csv(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD_ROWS = "".join(f"{q},{qd},{-2 * q}\n" for q, qd in ((0.1, 0.2), (0.5, -0.3), (-0.7, 0.4), (0.9, 0.1)))


def _csv_line(path: Path, columns: dict | None = None) -> str:
    """The error line of ``data=csv data.path=PATH [data.columns=COLUMNS]`` for the harmonic
    system, made where the job makes it: the file's reader, its message named by config key."""
    from lagfit_cli.app.config import config_message
    from lagfit_cli.core.datafile import read_states
    from lagfit_cli.errors import printable

    with pytest.raises(LagfitError) as info:
        read_states(Path(path), 1, columns or {}, min_rows=2)
    line = f"lagfit: error: {printable(config_message(info.value))}"
    assert "\n" not in line and "\x1b" not in line, line
    return line


@pytest.mark.parametrize("setup, expected", [
    (lambda t: _csv(t, "q0,qd0,qdd0\n1e308,0.1,0.2\n" + GOOD_ROWS), "not finite at 1 of 5 data points"),
    (lambda t: _csv(t, "q0,qd0,qdd0,\x1b[31mevil\nx\n" + "".join(f"{r},1\n" for r in GOOD_ROWS.split())),
     "path"),
])
def test_csv_problems_are_named(tmp_path, setup, expected):
    path = setup(tmp_path)
    code, err = run(tmp_path / "r", *TINY, "data=csv", f"data.path={path}")
    line = one_error_line(code, err, expected)
    assert "declares linear_in_params" not in line
    assert "\x1b" not in err


@pytest.mark.parametrize("setup, expected", [
    (lambda t: t, "is a folder, not a CSV file"),
    (lambda t: Path("/dev/null"), "is not a regular file"),
    (lambda t: t / "missing.csv", "no such file"),
    (lambda t: _csv(t, "q0,qd0,q0,qdd0\n" + "".join(f"{r.split(',')[0]},{r}\n" for r in GOOD_ROWS.split())),
     "column 'q0' appears 2 times"),
])
def test_csv_file_problems_are_named_by_the_reader(tmp_path, setup, expected):
    """More files a run cannot read, each told by the reader in the line a run prints
    (a run's path to that line is the test above)."""
    line = _csv_line(setup(tmp_path))
    assert expected in line and line.startswith("lagfit: error: data.path: ")
    assert "declares linear_in_params" not in line


def test_control_characters_in_headers_are_not_echoed(tmp_path):
    path = _csv(tmp_path, "a\x1b[2Jb,qd0,qdd0\n" + GOOD_ROWS)
    line = one_error_line(*run(tmp_path / "r", *TINY, "data=csv", f"data.path={path}"), "missing column 'q0'")
    assert "\x1b" not in line and "a?[2Jb" in line
    path = _csv(tmp_path, '"q\n0",qd0,qdd0\n' + GOOD_ROWS, "nl.csv")
    assert "'q?0'" in _csv_line(path)


def test_unreadable_csv_is_one_line(tmp_path, monkeypatch):
    path = _csv(tmp_path, "q0,qd0,qdd0\n" + GOOD_ROWS)

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(pd, "read_csv", denied)
    assert "cannot read it: Permission denied" in _csv_line(path)


def test_many_to_one_column_maps_are_refused(tmp_path):
    path = _csv(tmp_path, "x,qd0,qdd0\n" + GOOD_ROWS)
    assert "data.columns: maps q0 and qd0 to the same column 'x'" in _csv_line(path, {"q0": "x", "qd0": "x"})
    assert "data.columns: q0 and qd0 would both read" in _csv_line(path, {"q0": "qd0"})


@pytest.mark.parametrize("overrides, expected", [
    (("noise.sigma=1e308",), "noise.sigma"),
    (("system=custom", "system.lagrangian='0.5*m*qd0**2 - k*q0/0'", "system.params={m: 1.0, k: 2.0}"),
     "division by zero"),
    (("system=custom", "system.lagrangian='0.5*m*qd0**2 - k*q0**2*sqrt(q0)'", "system.params={m: 1.0, k: 2.0}"),
     "not finite at"),
    (("system=custom", "system.lagrangian='0.5*m*qd0**2 - k*q0**2 # spring'", "system.params={m: 1.0, k: 2.0}"),
     "'#' at column"),
    (("system=custom", "system.lagrangian='1if 1 else 0'", "system.params={m: 1.0}"), "IfExp"),
])
def test_bad_values_are_named_where_they_arose(tmp_path, overrides, expected):
    line = one_error_line(*run(tmp_path / "r", *TINY, *overrides), expected)
    assert "declares linear_in_params" not in line


@pytest.mark.parametrize("key, value, expected", [
    ("device", "cudax", "device: must be 'cpu' or 'cuda[:N]'"),
    ("init.box_width", 1e308, "init.box_width"),
])
def test_bad_config_values_are_named_before_any_work(composed, key, value, expected):
    """Values the job's checks refuse, told where a job tells them (full runs of that kind:
    above and in the oversized-run tests)."""
    cfg = composed()  # the default run's config (sizes do not matter here)
    OmegaConf.update(cfg, key, value)
    line = _job_checks(cfg)
    assert "\n" not in line and expected in line, line
    assert "declares linear_in_params" not in line


def test_a_finished_job_leaves_no_log_file_open(tmp_path):
    """Jobs one after another in one process (a notebook, the basic sweep launcher): once a
    job is over, nothing logged later goes to its lagfit.log, even when bad input removed
    the folder (a later library warning used to fail with FileNotFoundError)."""
    import logging

    for overrides in (("noise.sigma=-1",), ()):
        run(tmp_path / "r", *TINY, *overrides)
        open_files = [h.baseFilename for lg in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
                      if isinstance(lg, logging.Logger) for h in lg.handlers if hasattr(h, "baseFilename")]
        assert not [f for f in open_files if f.startswith(str(tmp_path))], open_files
    logging.getLogger("lagfit").warning("a library warning after the runs")


def test_no_python_warning_is_printed_for_odd_literals():
    """Python's own SyntaxWarning for `1if` (shown by -W default) is neither printed nor raised."""
    import warnings

    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        warnings.simplefilter("always")  # every warning, each time (stricter than -W default)
        with pytest.raises(LagfitError, match="IfExp"):
            compile_lagrangian("1if 1 else 0", ("k",))
    assert not caught, [str(w.message) for w in caught]
    assert err.getvalue() == "" and out.getvalue() == ""


def test_long_flat_sums_compile():
    many = " + ".join(f"{j % 7 + 1}e-3*k*q0**2" for j in range(2500))
    source = f"0.5*m*qd0**2 - {many} - k*q0**2"
    compiled = compile_lagrangian(source, ("m", "k"))
    assert compiled.linear_in_params and compiled.scale_groups == (("m", "k"),)
    coords = " + ".join(f"0.5*m*qd{i}**2 - 0.5*k*q{i}**2" for i in range(100))  # 200 terms, 100 coordinates
    assert compile_lagrangian(coords, ("m", "k")).dof == 100
    q = torch.rand(3, 1, dtype=torch.float64)
    value = compiled(q, q, torch.tensor([[1.0, 2.0]], dtype=torch.float64))
    expected = [eval(source, {"m": 1.0, "k": 2.0, "q0": float(x), "qd0": float(x)}) for x in q[:, 0]]
    assert torch.allclose(value, torch.tensor(expected, dtype=torch.float64))
    with pytest.raises(LagfitError, match="nested"):
        compile_lagrangian("k*q0" + "*(q0" * 400 + ")" * 400, ("k",))
