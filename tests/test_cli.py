"""`lagfit run ...` as a user runs it, into tmp_path: files, numbers, exit codes, messages.

Most cases run the command in-process (the ``lagfit`` fixture); the few marked as contracts
run it as a child process, as a user's shell does.
"""

import pandas as pd
import pytest

from conftest import metrics


def test_harmonic_recovers_k_over_m(lagfit):
    proc = lagfit("system=harmonic", figures=True)
    assert proc.returncode == 0, proc.stderr
    m = metrics(proc.run_dir)
    assert m["status"] == "ok"
    assert m["ratios"]["k/m"]["true"] == 2.0
    assert m["ratios"]["k/m"]["rel_error"] < 1e-6
    assert "name: harmonic" in (proc.run_dir / ".hydra/config.yaml").read_text()  # the exact config
    for name in ("fig1_qdd", "fig3_fit_paths", "fit_convergence"):
        assert (proc.run_dir / "figures" / f"{name}.png").read_bytes().startswith(b"\x89PNG"), name
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


def test_smoke_experiment_passes_and_fails_loudly(lagfit):
    ok = lagfit("experiment=smoke")
    assert ok.returncode == 0, ok.stderr
    assert metrics(ok.run_dir)["status"] == "ok"
    missed = lagfit("experiment=smoke", "optim=gd", "init=box", "optim.iters=3")
    assert missed.returncode == 3
    assert "check failed" in missed.stderr
    assert metrics(missed.run_dir)["status"] == "check_failed"
    error_txt = (missed.run_dir / "error.txt").read_text().splitlines()
    assert error_txt[0].startswith("check failed") and error_txt[1] == "exit code 3"


@pytest.mark.parametrize(
    "override, expected",
    [
        ("noise.sigma=-0.1", "noise.sigma"),
        ("data.n=1", "data.n"),
        ("data.q_bounds=[1.0,-1.0]", "data.q_bounds"),
        ("data.qd_bounds=[0.5,0.5]", "data.qd_bounds"),
        ("data.q_bounds=[]", "data.q_bounds"),
        ("optim.iters=0", "optim.iters"),
        ("optim.lr=-1", "optim.lr"),
        ("init.n_starts=0", "init.n_starts"),
        ("system=pendulum_typo", "system/pendulum_typo"),
        ("solver=nope", "solver/nope"),
        ("noise.sigma=abc", "noise.sigma"),
        ("data.n=ten", "data.n"),
        ("optim.iters=1.5", "optim.iters"),
        ("nosuchkey=1", "nosuchkey"),
        ("+nosuchkey=1", "nosuchkey: not a config key"),
        ("+task.nosuchkey=1", "task.nosuchkey: not a config key of task=fit"),
        ("+system.nosuchkey=1", "system.nosuchkey: not a config key"),
        ("task.sigmas=[1]", "task.sigmas"),
        ("task.resolution=1", "task.resolution"),
        ("task.x=m task.y=m", "task.y: must differ from task.x"),
        ("noise.apply_to=everything", "noise.apply_to"),
        ("system.params.m=0", "mass matrix"),
        ("system=anharmonic system.params.alpha=1.0", "mass matrix"),
        ("system.gauge=z", "system.gauge"),
        ("device=cuda:7", "device"),
        ("dtype=float16", "dtype"),
    ],
)
def test_bad_input_is_one_clear_line_and_no_run_folder(lagfit, override, expected):
    proc = lagfit(*override.split())
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("lagfit: error:")]
    assert len(errors) == 1, proc.stderr
    assert expected in errors[0]
    assert "Traceback" not in proc.stderr
    assert not proc.run_dir.exists() or not (proc.run_dir / "metrics.json").exists()
    assert not (proc.run_dir / ".hydra").exists()


def test_a_finished_run_folder_is_never_overwritten(lagfit):
    first = lagfit("experiment=smoke")
    assert first.returncode == 0
    before = (first.run_dir / "fit_results.csv").read_bytes()
    again = lagfit("experiment=smoke", "seed=5", run_dir=first.run_dir)
    assert again.returncode == 2
    assert "already holds a finished run" in again.stderr
    assert (first.run_dir / "fit_results.csv").read_bytes() == before


def test_contract_a_bad_value_in_a_child_process(lagfit_subprocess):
    """Contract: the installed command prints one line and exits 2 (and starts fast: no torch)."""
    proc = lagfit_subprocess("run", "noise.sigma=-1", "hydra.run.dir=never")
    assert proc.returncode == 2
    assert proc.stderr == "lagfit: error: noise.sigma: must be a finite number >= 0, got -1.0\n"


def test_contract_default_output_folder_is_timestamped_under_outputs(lagfit_subprocess, tmp_path):
    """Contract: a plain run in a child process, into outputs/DATE/TIME/."""
    proc = lagfit_subprocess("run", "experiment=smoke", "report.figures=false")
    assert proc.returncode == 0, proc.stderr
    assert f"results in {tmp_path / 'outputs'}" in proc.stderr
    runs = list((tmp_path / "outputs").glob("*/*/metrics.json"))
    assert len(runs) == 1
    date, time = runs[0].parent.parent.name, runs[0].parent.name
    assert len(date) == 10 and date[4] == "-" and time.count("-") == 3


def test_contract_usage_and_help(lagfit_subprocess):
    """Contract: the usage and --help of the installed command."""
    proc = lagfit_subprocess("--help")
    assert proc.returncode == 0 and "usage: lagfit run" in proc.stdout
    proc = lagfit_subprocess("run", "--help")
    systems = (
        "anharmonic, cart_pole, coupled_oscillators, custom, damped_oscillator, double_pendulum, "
        "driven_duffing, duffing, harmonic, pendulum"
    )
    assert proc.returncode == 0 and f"system: {systems}" in proc.stdout
    assert "Exit codes: 0 ok" in proc.stdout and "seed: 0" in proc.stdout


def test_usage_help_and_cfg(lagfit, tmp_path):
    proc = lagfit.cli()
    assert proc.returncode == 0 and "usage: lagfit run" in proc.stdout
    proc = lagfit.cli("run", "--help")
    groups = [line.split(":")[0] for line in proc.stdout.split("Config groups")[1].split("Current config")[0].splitlines()[1:] if line]
    # only the groups a user chooses from (no internal ones)
    assert groups == ["data", "derivatives", "estimator", "experiment", "init", "noise", "optim", "solver", "system", "task", "uncertainty"]
    proc = lagfit.cli("run", "task=landscape", "--help")  # the config shown is the one composed
    assert proc.returncode == 0 and "x_range: null" in proc.stdout
    proc = lagfit.cli("run", "system=nope", "--help")
    assert proc.returncode == 2 and "system/nope" in proc.stderr
    proc = lagfit.cli("run", "system=anharmonic", "--cfg", "job")
    assert proc.returncode == 0 and "alpha: 0.5" in proc.stdout
    proc = lagfit.cli("frobnicate")
    assert proc.returncode == 2 and "unknown command 'frobnicate'" in proc.stderr
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("metrics.json"))
