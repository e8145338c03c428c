"""`lagfit run ...` as a user runs it, into tmp_path: files, numbers, exit codes, messages.

Most cases run the command in-process (the ``lagfit`` fixture); the few marked as contracts
run it as a child process, as a user's shell does. Bad values that Hydra accepts are told by
lagfit's own checks: one full run per kind of check shows the whole command's answer (exit
code 2, one line, no run folder), and the other values are put through the same checks
(:func:`job_line`) without starting a run.
"""

import copy
import functools
from pathlib import Path

import pandas as pd
import pytest

from conftest import compose, metrics, process_state_restored


# --------------------------------------------------------------------------- helpers


@functools.lru_cache(maxsize=None)
def _composed(*choices: str):
    """The composed config of ``lagfit run CHOICES`` (group choices), composed once."""
    return compose(*choices)


def job_line(*overrides: str) -> str:
    """The error a job of ``lagfit run OVERRIDES`` is refused with ('' if none), found without
    running it: Hydra's override parser sets the values on the composed config of the group
    choices, then come the checks of app/hydra_app._run_job in its order (validate_static,
    limits.check, validate_names) and the task's set-up before any fit (the data and
    system of prepare_problem, the landscape pair), each error told as run_job tells it."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from lagfit_cli.app import limits
    from lagfit_cli.app.config import ConfigError, config_message, validate_names, validate_static
    from lagfit_cli.errors import LagfitError

    import lagfit_cli.conf

    groups = {p.name for p in Path(lagfit_cli.conf.__file__).parent.iterdir() if p.is_dir()}
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    choices = tuple(o.input_line for o in parsed if o.key_or_group in groups and not o.is_add())
    cfg = copy.deepcopy(_composed(*choices))
    ConfigLoaderImpl._apply_overrides_to_config([o for o in parsed if o.input_line not in choices], cfg)
    try:
        with process_state_restored():
            validate_static(cfg)
            limits.check(cfg)
            validate_names(cfg)
            from lagfit_cli.app.tasks.common import prepare_problem
            from lagfit_cli.app.tasks.landscape import landscape_indices

            problem = prepare_problem(cfg)
            if problem.system.n_params >= 2:
                landscape_indices(cfg, problem)
    except ConfigError as err:
        return f"lagfit: error: {err}"
    except LagfitError as err:
        return f"lagfit: error: {config_message(err)}"
    return ""


def one_error_line(proc) -> str:
    """The run failed on bad input: exit 2, exactly one error line, no traceback, no results
    and nothing of Hydra's left in the run folder."""
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("lagfit: error:")]
    assert len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not proc.run_dir.exists() or not (proc.run_dir / "metrics.json").exists()
    assert not (proc.run_dir / ".hydra").exists()
    return errors[0]


# --------------------------------------------------------------------------- runs


def test_harmonic_recovers_k_over_m(lagfit):
    # the default fit (50 × 50 grid, 17 starts), without figures: the figures of a fit are
    # written and checked in tests/test_figures.py (PNG, the default format) and by the
    # D = 2 run of tests/test_cli_beyond_1d.py (PDF)
    proc = lagfit("system=harmonic")
    assert proc.returncode == 0, proc.stderr
    m = metrics(proc.run_dir)
    assert m["status"] == "ok"
    assert m["ratios"]["k/m"]["true"] == 2.0
    assert m["ratios"]["k/m"]["rel_error"] < 1e-6
    assert "name: harmonic" in (proc.run_dir / ".hydra/config.yaml").read_text()  # the exact config
    results = pd.read_csv(proc.run_dir / "fit_results.csv")
    # 16 random starts and the exact one solved from the equation-error system
    assert len(results) == m["n_starts"] == 17 and list(results["kind"]).count("exact") == 1
    assert {"start", "status", "loss", "m", "k", "k/m", "k/m_rel_error", "m_init", "k_init"} <= set(results)
    history = pd.read_csv(proc.run_dir / "fit_history.csv")
    assert list(history.columns[:5]) == ["start", "iter", "loss", "grad_norm", "damping"]
    assert set(history.start) == set(range(17))
    assert str(proc.run_dir) in proc.stderr  # the summary names the folder


def test_anharmonic_recovers_both_ratios(lagfit):
    proc = lagfit("system=anharmonic")
    assert proc.returncode == 0, proc.stderr
    ratios = metrics(proc.run_dir)["ratios"]
    assert set(ratios) == {"k/m", "alpha/m"}
    assert all(r["rel_error"] < 1e-4 for r in ratios.values()), ratios


def test_noisy_fit_finishes_and_is_reproducible(lagfit):
    first = lagfit("noise.sigma=0.1", "report.figures=false")
    second = lagfit("noise.sigma=0.1", "report.figures=false")
    assert first.returncode == 0 and second.returncode == 0, first.stderr
    err = metrics(first.run_dir)["ratios"]["k/m"]["rel_error"]
    assert 1e-4 < err < 0.2  # noise on the inputs biases k/m; it is reported, not hidden
    for name in ("fit_history.csv", "fit_results.csv"):
        assert (first.run_dir / name).read_bytes() == (second.run_dir / name).read_bytes()
    other_seed = lagfit("noise.sigma=0.1", "report.figures=false", "seed=1")
    assert (other_seed.run_dir / "fit_results.csv").read_bytes() != (first.run_dir / "fit_results.csv").read_bytes()


def test_smoke_experiment_fails_loudly(lagfit):
    # (that it passes is checked by the plain smoke run of
    # test_default_output_folder_is_timestamped_under_outputs)
    missed = lagfit("experiment=smoke", "optim=gd", "init=box", "optim.iters=3")
    assert missed.returncode == 3
    assert "check failed" in missed.stderr
    assert metrics(missed.run_dir)["status"] == "check_failed"
    error_txt = (missed.run_dir / "error.txt").read_text().splitlines()
    assert error_txt[0].startswith("check failed") and error_txt[1] == "exit code 3"


# --------------------------------------------------------------------------- bad input

#: values Hydra itself refuses (no such option, a value of the wrong type, no such key),
#: and one of each kind of lagfit's checks (a key added with +, a name the core does not
#: know, a mass matrix that vanishes at the truth): each a whole run in-process
REFUSED_RUNS = [
    ("system=pendulum_typo", "system/pendulum_typo"),
    ("solver=nope", "solver/nope"),
    ("noise.sigma=abc", "noise.sigma"),
    ("data.n=ten", "data.n"),
    ("optim.iters=1.5", "optim.iters"),
    ("nosuchkey=1", "nosuchkey"),
    ("task.sigmas=[1]", "task.sigmas"),
    ("+task.nosuchkey=1", "task.nosuchkey: not a config key of task=fit"),
    ("noise.apply_to=everything", "noise.apply_to"),
    ("system.params.m=0", "mass matrix"),
]

#: lagfit's checks: the kinds of REFUSED_RUNS whose line job_line tells without a run
CHECKED = {"+task.nosuchkey=1", "noise.apply_to=everything", "system.params.m=0"}

#: more values refused by the same checks
REFUSED_BY_CHECKS = [
    ("noise.sigma=-0.1", "noise.sigma"),
    ("data.n=1", "data.n"),
    ("data.q_bounds=[1.0,-1.0]", "data.q_bounds"),
    ("data.qd_bounds=[0.5,0.5]", "data.qd_bounds"),
    ("data.q_bounds=[]", "data.q_bounds"),
    ("optim.iters=0", "optim.iters"),
    ("optim.lr=-1", "optim.lr"),
    ("init.n_starts=0", "init.n_starts"),
    ("+nosuchkey=1", "nosuchkey: not a config key"),
    ("+system.nosuchkey=1", "system.nosuchkey: not a config key"),
    ("task.resolution=1", "task.resolution"),
    ("task.x=m task.y=m", "task.y: must differ from task.x"),
    ("system=anharmonic system.params.alpha=1.0", "mass matrix"),
    ("system.gauge=z", "system.gauge"),
    ("device=cuda:7", "device"),
    ("dtype=float16", "dtype"),
]


@pytest.mark.parametrize("override, expected", REFUSED_RUNS)
def test_bad_input_is_one_clear_line_and_no_run_folder(lagfit, override, expected):
    error = one_error_line(lagfit(*override.split()))
    assert expected in error
    if override in CHECKED:  # job_line tells what the command tells
        assert job_line(*override.split()) == error


@pytest.mark.parametrize("override, expected", REFUSED_BY_CHECKS)
def test_bad_value_is_refused_by_the_checks_before_any_work(override, expected):
    error = job_line(*override.split())
    assert error.startswith("lagfit: error:") and "\n" not in error
    assert expected in error, error


def test_the_checks_pass_good_input():
    assert job_line("system=anharmonic", "noise.sigma=0.1", "system.params={m: 2.0, k: 4.0, alpha: 0.1}") == ""


# --------------------------------------------------------------------------- contracts


def test_contract_a_bad_value_in_a_child_process(lagfit_subprocess):
    """Contract: the installed command prints one line and exits 2 (and starts fast: no torch)."""
    proc = lagfit_subprocess("run", "noise.sigma=-1", "hydra.run.dir=never")
    assert proc.returncode == 2
    assert proc.stderr == "lagfit: error: noise.sigma: must be a finite number >= 0, got -1.0\n"


def test_default_output_folder_is_timestamped_under_outputs(lagfit, tmp_path):
    """A plain run (the smoke experiment, which passes its check; no hydra.run.dir) goes into
    outputs/DATE/TIME/ under the working directory; a later run into that finished folder is
    refused. In-process: the folder is the config's, not the process's (the real binary's
    exit code 0 after a whole run is checked by tests/test_reliability.py's race of two
    child processes, its exit code 2 by the contract above)."""
    proc = lagfit.cli("run", "experiment=smoke", "report.figures=false")
    assert proc.returncode == 0, proc.stderr
    assert f"results in {tmp_path / 'outputs'}" in proc.stderr
    runs = list((tmp_path / "outputs").glob("*/*/metrics.json"))
    assert len(runs) == 1
    date, time = runs[0].parent.parent.name, runs[0].parent.name
    assert len(date) == 10 and date[4] == "-" and time.count("-") == 3
    assert metrics(runs[0].parent)["status"] == "ok"  # the smoke experiment passes

    # a finished run folder is never overwritten
    run_dir = runs[0].parent
    before = (run_dir / "fit_results.csv").read_bytes()
    again = lagfit("experiment=smoke", "seed=5", run_dir=run_dir)
    assert again.returncode == 2
    assert "already holds a finished run" in again.stderr
    assert (run_dir / "fit_results.csv").read_bytes() == before


def test_contract_usage_and_help(lagfit_subprocess):
    """Contract: the installed command starts and prints its usage for --help (what
    `lagfit run --help` shows is checked in-process, in test_usage_help_and_cfg)."""
    proc = lagfit_subprocess("--help")
    assert proc.returncode == 0 and "usage: lagfit run" in proc.stdout


def test_usage_help_and_cfg(lagfit, tmp_path):
    proc = lagfit.cli()
    assert proc.returncode == 0 and "usage: lagfit run" in proc.stdout
    proc = lagfit.cli("run", "task=landscape", "--help")
    assert proc.returncode == 0
    groups = [line.split(":")[0] for line in proc.stdout.split("Config groups")[1].split("Current config")[0].splitlines()[1:] if line]
    # only the groups a user chooses from (no internal ones)
    assert groups == ["data", "derivatives", "estimator", "experiment", "init", "noise", "optim", "solver", "system", "task", "uncertainty"]
    systems = (
        "anharmonic, cart_pole, coupled_oscillators, custom, damped_oscillator, double_pendulum, "
        "driven_duffing, duffing, harmonic, pendulum"
    )
    assert f"system: {systems}" in proc.stdout
    assert "Exit codes: 0 ok" in proc.stdout and "seed: 0" in proc.stdout
    assert "x_range: null" in proc.stdout  # the config shown is the one composed (task=landscape)
    proc = lagfit.cli("run", "system=nope", "--help")
    assert proc.returncode == 2 and "system/nope" in proc.stderr
    proc = lagfit.cli("run", "system=anharmonic", "--cfg", "job")
    assert proc.returncode == 0 and "alpha: 0.5" in proc.stdout
    proc = lagfit.cli("frobnicate")
    assert proc.returncode == 2 and "unknown command 'frobnicate'" in proc.stderr
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("metrics.json"))
