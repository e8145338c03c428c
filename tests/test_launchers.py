"""Sweeps whose jobs run in the launchers' own worker processes (joblib, submitit_local):
the parent learns from the job folders how each job ended. A file of their own, so that a
pytest worker runs them beside tests/test_sweeps.py (their workers are fresh interpreters)."""

import importlib.util

import pytest

from test_sweeps import FAST, assert_complete, assert_reruns_identically, lagfit, summary, \
    summary_figure_built_not_rendered


def _plugin(name: str) -> None:
    if importlib.util.find_spec(f"hydra_plugins.{name}") is None:
        extra = "joblib" if "joblib" in name else "slurm"
        pytest.skip(f"{name} is not installed (pip install -e '.[{extra}]'; make test installs it)")


@pytest.mark.slow
def test_joblib_sweep_over_seeds_with_a_crashing_job(tmp_path):
    """Jobs in joblib worker processes: the parent learns how they ended from their folders."""
    _plugin("hydra_joblib_launcher")
    sweep_dir = tmp_path / "sw"
    # job 2 cannot write its results (a folder stands where its fit_results.csv goes): a crash
    (sweep_dir / "2" / "fit_results.csv").mkdir(parents=True)
    # uncertainty=none, no figures (the submitit_local worker draws them): the workers' CPU
    # time is spent out of sight of this process (two loky workers, three jobs)
    with summary_figure_built_not_rendered() as built:  # rendered in the submitit_local sweep's parent
        proc = lagfit(tmp_path, "run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *FAST,
                      "uncertainty=none", "noise.sigma=0.1", "seed=0,1,2", f"hydra.sweep.dir={sweep_dir}")
    assert built == ["summary.png"]
    assert proc.returncode == 2, proc.stderr  # an OS error on the outputs: one line, exit 2
    table = summary(sweep_dir)
    assert list(table["status"]) == ["ok", "ok", "failed"]
    assert table["error"][2].startswith("cannot write the results into") and "Is a directory" in table["error"][2]
    assert table["exit_code"][2] == 2
    for job in ("0", "1"):
        assert_complete(sweep_dir / job)
    # seeds draw different noise: different estimates
    assert table["k/m"][0] != table["k/m"][1]
    assert_reruns_identically(tmp_path, sweep_dir / "1", "job1_alone")


@pytest.mark.slow
def test_submitit_local_sweep(tmp_path):
    """One job (each job is a fresh worker process, ≈6 s of CPU): the parent learns from its
    folder; the noise-free fit in the worker is exact (float64 there too), and its figures
    are drawn there (matplotlib's file backend reaches the workers: cli.main sets it)."""
    _plugin("hydra_submitit_launcher")
    proc = lagfit(tmp_path, "run", "-m", "hydra/launcher=submitit_local", *FAST, "noise.sigma=0",
                  "uncertainty=none", "report.figures=true", "hydra.sweep.dir=sw")
    assert proc.returncode == 0, proc.stderr
    table = summary(tmp_path / "sw")
    assert list(table["status"]) == ["ok"]
    assert list(table["noise.sigma"]) == [0]
    assert table["k/m_rel_error"][0] < 1e-8
    assert_complete(tmp_path / "sw" / "0", figures=True)
    assert (tmp_path / "sw" / ".submitit").is_dir()  # the job went through submitit
    assert (tmp_path / "sw" / "summary.png").read_bytes().startswith(b"\x89PNG")
