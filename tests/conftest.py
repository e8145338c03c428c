"""Shared fixtures.

``lagfit``: ``lagfit run ...`` in this process (``cli.main``), with stdout/stderr captured and
every piece of process-wide state the run may touch put back afterwards; the exit code,
output and files are what the command gives. ``lagfit_subprocess``: the same in a real
child process, for the few tests that check the command itself (entry point, start-up).
"""

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

# figures go to files in tests (the command sets this too; the library never does)
os.environ["MPLBACKEND"] = "Agg"

import torch  # noqa: E402

torch.set_default_dtype(torch.float64)
# one thread per test process, as `lagfit run` uses (threads=1): pytest-xdist runs one worker
# per core, and a second intra-op thread per worker only oversubscribes the cores (measured on
# 2 cores under load: a 2-coordinate fit took 6.5 s of CPU with 2 threads, 0.6 s with 1)
torch.set_num_threads(1)


#: tests that mostly wait on a real SLURM: one pytest-xdist worker runs them, before any other
CLUSTER_TESTS = "tests/test_slurm.py"
#: where the seconds each test file took last time are kept (pytest's cache, .pytest_cache/)
FILE_SECONDS = "lagfit/file_seconds"
#: seconds per test file in this run, as the reports come in (the controller's, under xdist)
_FILE_SECONDS: dict[str, float] = {}


def file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config, items):
    """The order the workers are handed whole test files in (see the scheduler below): the
    SLURM tests first, then the files that took longest last time (a longest-first order
    balances the workers), then the rest as collected. Every worker sorts the same way."""
    seconds = config.cache.get(FILE_SECONDS, {}) if getattr(config, "cache", None) else {}
    position = {}
    for item in items:
        position.setdefault(file_of(item.nodeid), len(position))

    def rank(item):
        path = file_of(item.nodeid)
        return (path != CLUSTER_TESTS, -seconds.get(path, 0.0), position[path])

    items.sort(key=rank)  # stable: a file's tests keep their order


def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's `load` distribution by whole test files, in the order above: a file's
    module fixtures (a shared sweep, a composed config) and its one-off costs (torch.compile's
    first use) are then paid by one worker, not by each. The SLURM tests go first, to one
    worker: they wait on the cluster for about a minute and a half (a time limit is whole
    minutes), and `make test` gives pytest one worker more than there are cores for them.
    """
    if config.getvalue("dist") != "load":
        return None  # --dist loadfile, loadscope, ...: as asked
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # the collection order above, not by test count

    class WholeFiles(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return file_of(nodeid)

    return WholeFiles(config, log)


def pytest_runtest_logreport(report):
    """Add up the seconds of each test file (setup, call, teardown) for the next run's order."""
    path = file_of(report.nodeid)
    _FILE_SECONDS[path] = _FILE_SECONDS.get(path, 0.0) + report.duration


def pytest_sessionfinish(session):
    config = session.config
    if hasattr(config, "workerinput") or not _FILE_SECONDS or getattr(config, "cache", None) is None:
        return  # a worker (the controller sees every report), or nothing to keep
    seconds = config.cache.get(FILE_SECONDS, {})
    seconds.update({path: round(value, 2) for path, value in _FILE_SECONDS.items()})
    config.cache.set(FILE_SECONDS, seconds)


@dataclass
class CliResult:
    args: list
    returncode: int
    stdout: str
    stderr: str
    run_dir: Optional[Path] = None


@contextlib.contextmanager
def process_state_restored():
    """Put back what a run changes process-wide: torch dtype/threads, env, argv, cwd,
    logging handlers, warning filters, Hydra's global state, open pyplot figures."""
    from hydra.core.global_hydra import GlobalHydra

    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    environ, argv, cwd = dict(os.environ), list(sys.argv), os.getcwd()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    loggers = {name: (list(lg.handlers), lg.level, lg.propagate)
               for name, lg in logging.Logger.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    GlobalHydra.instance().clear()
    try:
        with warnings.catch_warnings():
            yield
    finally:
        GlobalHydra.instance().clear()
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)
        os.environ.clear()
        os.environ.update(environ)
        sys.argv[:] = argv
        os.chdir(cwd)
        for name, lg in list(logging.Logger.manager.loggerDict.items()):
            if not isinstance(lg, logging.Logger):
                continue
            for handler in lg.handlers:
                if handler not in loggers.get(name, ([],))[0]:
                    handler.close()
            if name in loggers:
                lg.handlers[:], lg.level, lg.propagate = loggers[name]
            else:
                lg.handlers.clear()
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:], root.level = handlers, level
        if "matplotlib.pyplot" in sys.modules:
            sys.modules["matplotlib.pyplot"].close("all")


def call_cli(args: list, cwd: Path) -> CliResult:
    """``lagfit ARGS`` in this process, from ``cwd``: exit code, stdout and stderr."""
    from lagfit_cli.app import cli

    out, err = io.StringIO(), io.StringIO()
    with process_state_restored():
        os.chdir(cwd)
        # Hydra's log handlers bind sys.stderr when a job configures logging, i.e. inside
        # this block: the captured stderr holds the log lines as a terminal would
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(list(args))
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            except Exception:  # noqa: BLE001  what the command would print before exit code 1
                traceback.print_exc()
                code = 1
    return CliResult(list(args), code, out.getvalue(), err.getvalue())


def without_figures(overrides) -> list:
    """``overrides`` plus ``report.figures=false`` unless they choose figures themselves.

    Drawing a run's figures costs about four times its fit (≈4 s of CPU against ≈0.7 s for
    the default run), so a test that checks numbers, messages, exit codes or tables runs
    without them. The tests of figures ask for them (``figures=True``, or their own
    ``report.figures=...``), and tests/test_figures.py draws every figure lagfit writes.
    """
    overrides = list(overrides)
    if any(o.lstrip("+~").startswith("report.figures=") for o in overrides):
        return overrides
    return [*overrides, "report.figures=false"]


class LagfitRun:
    """``lagfit run ...`` into a folder of tmp_path (in-process; see :func:`call_cli`).

    Runs without figures unless the call says ``figures=True`` (see :func:`without_figures`).
    """

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.count = 0

    def __call__(self, *overrides: str, run_dir: Path | None = None, timeout: float = 600,
                 figures: bool = False):
        self.count += 1
        run_dir = run_dir or self.tmp_path / f"run{self.count}"
        args = list(overrides) if figures else without_figures(overrides)
        result = call_cli(["run", *args, f"hydra.run.dir={run_dir}"], self.tmp_path)
        result.run_dir = run_dir
        return result

    def cli(self, *args: str) -> CliResult:
        """Any ``lagfit`` command line (``run -m ...``, ``summarize DIR``), from tmp_path."""
        return call_cli(list(args), self.tmp_path)


@pytest.fixture
def lagfit(tmp_path):
    return LagfitRun(tmp_path)


def run_subprocess(args, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``lagfit ARGS`` as a user types it: a child process (``python -m lagfit_cli``)."""
    return subprocess.run([sys.executable, "-m", "lagfit_cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def lagfit_subprocess(tmp_path):
    """For the few true command-line contracts; everything else uses ``lagfit``."""
    return lambda *args, timeout=600: run_subprocess(args, tmp_path, timeout)


def uniform_states(n: int, dof: int = 1, seed: int = 0, scale: float = 1.0):
    """(q, q̇), each (n, dof) float64, uniform in [−scale, scale], from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    q = scale * (2 * torch.rand(n, dof, generator=generator, dtype=torch.float64) - 1)
    qd = scale * (2 * torch.rand(n, dof, generator=generator, dtype=torch.float64) - 1)
    return q, qd


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def compose(*overrides: str):
    """The composed config of ``lagfit run OVERRIDES`` (no hydra node), as a job sees it."""
    from hydra import compose as hydra_compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from lagfit_cli.app.config import register_configs

    GlobalHydra.instance().clear()
    register_configs()
    try:
        with initialize_config_module("lagfit_cli.conf", version_base="1.3"):
            return hydra_compose("config", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


def run_task(*overrides: str):
    """The Report of ``lagfit run OVERRIDES``'s task, computed in-process and not written:
    its tables, metrics and matplotlib Figures (for checks of what a figure shows)."""
    from lagfit_cli.app.config import validate
    from lagfit_cli.app.tasks import TASKS

    cfg = compose(*overrides)
    validate(cfg)
    with process_state_restored():
        torch.set_num_threads(cfg.threads)
        return TASKS[cfg.task.name](cfg)


@pytest.fixture(scope="session")
def dp_trajectories():
    """Three runs × 300 samples of the double pendulum, dt = 0.01 s, from scipy's DOP853 at
    rtol 1e-12 on sympy's equations (tests/trajectory_data.py): positions only."""
    from trajectory_data import double_pendulum_runs

    from lagfit_cli.core.trajectory import Run, Trajectories

    runs = double_pendulum_runs(3, 300)
    return Trajectories(tuple(Run(t, q, name=str(i)) for i, (t, q, _) in enumerate(runs)))


@pytest.fixture
def checked():
    """The figures saved while the test runs: name -> the texts found outside it (the
    check hooks ``io.style.save``, the one way lagfit writes a figure)."""
    from lagfit_cli.io import style

    seen: dict[str, list[str]] = {}

    def hook(fig, path):
        # the layout as saved, without drawing the figure again
        seen[Path(path).name.lstrip(".").removesuffix(".tmp")] = style.text_outside(fig, draw=False)

    style.SAVE_HOOKS.append(hook)
    try:
        yield seen
    finally:
        style.SAVE_HOOKS.remove(hook)
        style.use("paper")


def assert_inside(seen: dict, expected: set) -> None:
    assert expected <= set(seen), f"not saved: {expected - set(seen)}"
    clipped = {name: problems for name, problems in seen.items() if problems}
    assert not clipped, clipped
