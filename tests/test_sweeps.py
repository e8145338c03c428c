"""Sweeps as a user runs them: `lagfit run -m ...` into tmp_path, then summary.csv, exit codes,
job folders, launchers, `lagfit summarize`, and rerunning one job alone byte for byte.

Every command runs in-process (conftest.call_cli: the exit code `lagfit` exits with). The
sweeps whose jobs run in the launchers' own worker processes are in tests/test_launchers.py."""

import contextlib
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import assert_inside, call_cli
from lagfit_cli.io import sweep

#: small jobs: 64 points, 4 starts, a coarse landscape, no figures (the submitit_local job draws them)
FAST = ("data.n=8", "init.n_starts=4", "optim.iters=300", "task.resolution=12", "report.dpi=50",
        "report.figures=false")
#: what every finished job folder holds, as a single run's does
COMPLETE = ("metrics.json", "fit_results.csv", "fit_history.csv", "lagfit.log", ".hydra/config.yaml",
            ".hydra/overrides.yaml")
FIGURES = ("figures/fig1_qdd.png", "figures/fit_convergence.png")
#: metrics that measure time, and so differ between two runs of the same job
TIMINGS = ("runtime_s", "fit_s", "uncertainty_s", "profiles_s")


def lagfit(cwd: Path, *args: str):
    """``lagfit ARGS`` from ``cwd``, in-process (see conftest.call_cli)."""
    return call_cli(list(args), cwd)


def summary(sweep_dir: Path) -> pd.DataFrame:
    return pd.read_csv(sweep_dir / "summary.csv", keep_default_na=False, na_values=[""], dtype={"dir": str})


def assert_complete(job_dir: Path, figures: bool = False) -> None:
    for name in COMPLETE + (FIGURES if figures else ()):
        assert (job_dir / name).is_file(), f"{job_dir}: missing {name}"
    assert not (job_dir / "error.txt").exists()
    assert json.loads((job_dir / "metrics.json").read_text())["status"] == "ok"


def assert_reruns_identically(tmp_path: Path, job_dir: Path, name: str) -> None:
    """Rerun one job of a sweep alone, with its overrides: the same numbers, byte for byte."""
    overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
    alone = tmp_path / name
    proc = lagfit(tmp_path, "run", *overrides, f"hydra.run.dir={alone}")
    assert proc.returncode == 0, proc.stderr
    for table in ("fit_results.csv", "fit_history.csv"):
        assert (alone / table).read_bytes() == (job_dir / table).read_bytes(), table
    in_sweep, rerun = (json.loads((d / "metrics.json").read_text()) for d in (job_dir, alone))
    for key in TIMINGS:
        in_sweep.pop(key, None), rerun.pop(key, None)
    assert json.dumps(in_sweep) == json.dumps(rerun)


@contextlib.contextmanager
def summary_figure_built_not_rendered():
    """Within: summary.png is built (``sweep_plot.summary_figure`` from the table) but not
    rendered or written, for summaries whose tests check the table: rendering it costs
    ≈1.3 s of CPU; test_summarize_an_existing_or_interrupted_sweep renders (and checks) the
    four-job sweep's, test_submitit_local_sweep the one a sweep writes at its end. Yields
    the names of the figures built."""
    import matplotlib.pyplot as plt

    from lagfit_cli.io import sweep_plot

    built = []

    def save(fig, path, dpi=150, figure_format=None):
        assert fig.axes, path  # a figure with its panels
        built.append(Path(path).name)
        plt.close(fig)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sweep_plot, "save", save)
        yield built


@pytest.fixture(scope="module")
def failing_sweep(tmp_path_factory):
    """Four jobs over σ, one of them (σ = −1) bad input: the done-when sweep of issue 6. It is
    the noise_sweep preset narrowed on the command line (which overrides its params and sizes):
    its 64 jobs become these four."""
    tmp = tmp_path_factory.mktemp("sweep")
    # summary.png: built at the sweep's end, rendered by test_summarize_an_existing_or_interrupted_sweep
    with summary_figure_built_not_rendered() as built:
        proc = lagfit(tmp, "run", "-m", "experiment=noise_sweep", *FAST, "estimator=ls", "seed=0",
                      "noise.sigma=0,0.01,0.1,-1", "hydra.sweep.dir=sw")
    assert built == ["summary.png"]
    return tmp, tmp / "sw", proc


def test_a_failing_job_is_recorded_and_the_others_finish(failing_sweep):
    tmp, sweep_dir, proc = failing_sweep
    assert proc.returncode == 2, proc.stderr  # the sweep was not clean: the bad job's exit code
    assert "Traceback" not in proc.stderr
    assert "3 of 4 jobs ok, 1 failed" in proc.stderr
    table = summary(sweep_dir)
    assert len(table) == 4
    assert list(table["job"]) == list(range(4))
    assert list(table["noise.sigma"]) == [0, 0.01, 0.1, -1]
    failed = table[table.status == "failed"]
    assert len(failed) == 1 and failed["noise.sigma"].item() == -1
    assert failed["error"].item() == "noise.sigma: must be a finite number >= 0, got -1.0"
    assert failed["exit_code"].item() == 2 and math.isnan(failed["best_loss"].item())
    ok = table[table.status == "ok"]
    assert len(ok) == 3 and (ok["exit_code"] == 0).all()
    for column in ("best_loss", "k/m", "k/m_rel_error", "max_ratio_rel_error", "runtime_s"):
        assert ok[column].notna().all() and (ok[column] >= 0).all(), column
    # the noise-free fit finds k/m; noise biases it, more noise more
    assert ok["k/m_rel_error"].iloc[0] < 1e-8
    assert ok["k/m_rel_error"].iloc[-1] > 10 * ok["k/m_rel_error"].iloc[1]
    for _, row in ok.iterrows():
        assert_complete(sweep_dir / row["dir"])
        assert json.loads((sweep_dir / row["dir"] / "metrics.json").read_text())["best_loss"] == row["best_loss"]
    bad = sweep_dir / failed["dir"].item()
    assert (bad / "error.txt").read_text().splitlines() == [failed["error"].item(), "exit code 2"]
    assert not (bad / "metrics.json").exists()


def test_one_job_reruns_alone_byte_for_byte(failing_sweep):
    tmp, sweep_dir, _ = failing_sweep
    assert_reruns_identically(tmp, sweep_dir / "2", "job2_alone")


def test_summarize_an_existing_or_interrupted_sweep(failing_sweep, checked):
    """Also the canvas check of summary.png as `lagfit summarize` draws it (tests/test_figures.py
    checks every other figure): three jobs over noise.sigma (0 among them) and a failed one."""
    tmp, sweep_dir, _ = failing_sweep
    before = summary(sweep_dir)
    (sweep_dir / "summary.csv").unlink()
    proc = lagfit(tmp, "summarize", str(sweep_dir))
    assert proc.returncode == 2, proc.stderr
    assert summary(sweep_dir).equals(before)
    assert (sweep_dir / "summary.png").read_bytes().startswith(b"\x89PNG")
    assert (sweep_dir / "summary.png").stat().st_size > 10_000
    assert_inside(checked, {"summary.png"})
    # a job killed mid-way (no metrics.json, no error.txt) is reported, not dropped
    copy = tmp / "interrupted"
    shutil.copytree(sweep_dir, copy)
    (copy / "1" / "metrics.json").unlink()
    (copy / "3" / "error.txt").unlink()
    with summary_figure_built_not_rendered() as built:
        proc = lagfit(tmp, "summarize", str(copy))
    assert proc.returncode == 1, proc.stderr
    assert built == ["summary.png"]
    table = summary(copy)
    assert list(table["status"]) == ["ok", "incomplete", "ok", "incomplete"]
    assert "interrupted" in table["error"][1]
    # not a sweep: one line, exit 2
    proc = lagfit(tmp, "summarize", str(tmp / "nowhere"))
    assert proc.returncode == 2 and proc.stderr.strip() == f"lagfit: error: summarize: {tmp / 'nowhere'} is not a folder"
    proc = lagfit(tmp, "summarize", str(sweep_dir / "0"))
    assert proc.returncode == 2 and "no job folders" in proc.stderr


# --------------------------------------------------------------------------- issue 14: finished sweeps are
# never changed, damaged ones are summarized (copies of the failing sweep above: jobs 0-2 ok, 3 failed)

#: a refused sweep's jobs (it never starts them)
TINY = ("data.n=4", "optim.iters=5", "report.figures=false")


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(proc, expected: str) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("lagfit: error:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr
    assert expected in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def sweep_copy(failing_sweep, tmp_path):
    """A copy of the finished four-job sweep above, for a test to damage."""
    return Path(shutil.copytree(failing_sweep[1], tmp_path / "sw"))


def test_a_multirun_never_writes_into_a_finished_sweep(sweep_copy, tmp_path):
    """A second sweep into the folder of a finished one is refused, and changes nothing."""
    before = snapshot(sweep_copy)
    one_error_line(lagfit(tmp_path, "run", "-m", *TINY, "seed=4,5", f"hydra.sweep.dir={sweep_copy}"),
                   "already holds the jobs of another sweep")
    assert snapshot(sweep_copy) == before


@pytest.fixture(scope="module")
def summarized_damaged_sweep(failing_sweep, tmp_path_factory):
    """`lagfit summarize` of a copy of the finished sweep with every job but job 2 malformed
    (job 3, the failed one, with an error.txt that is not UTF-8), and formulas among the
    overrides of job 2 (the one that stays ok)."""
    tmp = tmp_path_factory.mktemp("damaged")
    sweep_dir = Path(shutil.copytree(failing_sweep[1], tmp / "sw"))
    (sweep_dir / "0" / "metrics.json").write_text("[1, 2]")
    (sweep_dir / "1" / ".hydra" / "overrides.yaml").write_text("- !!python/object/apply:os.system ['echo hi']\n")
    (sweep_dir / "3" / "error.txt").write_bytes(b"\xff\xfe bad\n")
    overrides = sweep_dir / "2" / ".hydra" / "overrides.yaml"
    overrides.write_text(yaml.safe_dump(['+note==HYPERLINK("http://x")', "+cmd=@SUM(A1)", "+neg=-3"]))
    with summary_figure_built_not_rendered() as built:
        proc = lagfit(tmp, "summarize", str(sweep_dir))
    assert built == ["summary.png"]
    return sweep_dir, proc.returncode, proc.stderr


def test_summarize_survives_malformed_job_folders(summarized_damaged_sweep):
    sweep_dir, code, err = summarized_damaged_sweep
    assert code == 1 and "Traceback" not in err, err
    table = pd.read_csv(sweep_dir / "summary.csv")
    assert list(table["status"]) == ["failed", "failed", "ok", "failed"]
    errors = [table["error"][i] for i in (0, 1, 3)]
    assert "JSON list" in errors[0] and "python" in errors[1] and "UTF-8" in errors[2]


def test_summarize_lists_jobs_that_never_started(sweep_copy, tmp_path):
    shutil.rmtree(sweep_copy / "3")
    shutil.rmtree(sweep_copy / "2")
    with summary_figure_built_not_rendered() as built:
        proc = lagfit(tmp_path, "summarize", str(sweep_copy))
    assert built == ["summary.png"]
    table = pd.read_csv(sweep_copy / "summary.csv")
    assert list(table["status"]) == ["ok", "ok", "not_started", "not_started"], table
    assert list(table["job"]) == [0, 1, 2, 3]
    assert "noise.sigma=-1" in table["overrides"].iloc[3]
    assert proc.returncode == 1 and "2 not started" in proc.stderr


def test_summary_csv_escapes_formulas(summarized_damaged_sweep):
    sweep_dir, code, err = summarized_damaged_sweep
    assert "Traceback" not in err, err
    table = pd.read_csv(sweep_dir / "summary.csv", dtype=str, keep_default_na=False)
    # the job with formulas in its overrides is summarized as any good job: ok, no error
    assert table["status"][2] == "ok" and table["error"][2] == ""
    assert table["note"][2] == "'=HYPERLINK(\"http://x\")" and table["cmd"][2] == "'@SUM(A1)"
    assert table["neg"][2] == "-3"  # a number stays a number
    assert not any(str(v).startswith(("=", "@", "+")) for v in table.to_numpy().ravel())


def test_noise_sweep_preset(tmp_path, failing_sweep):
    """The preset's own sweep, and that sweep narrowed on the command line (the failing sweep
    above is it: its jobs ran the preset, one of them reruns alone in the test above)."""
    proc = lagfit(tmp_path, "run", "--cfg", "hydra", "-p", "hydra.sweeper.params", "experiment=noise_sweep")
    assert proc.returncode == 0
    assert "noise.sigma: 0,0.001,0.003,0.01,0.03,0.1,0.3,1" in proc.stdout and "seed: range(4)" in proc.stdout
    assert "estimator: ls,eiv" in proc.stdout
    _, sweep_dir, _ = failing_sweep
    table = summary(sweep_dir)
    assert len(table) == 4 and (table.status == "ok").sum() == 3
    assert all("experiment=noise_sweep" in overrides for overrides in table["overrides"])
    for job in table["dir"]:  # the command line's sizes, not the preset's (data.n: 20)
        config = yaml.safe_load((sweep_dir / job / ".hydra" / "config.yaml").read_text())
        assert config["data"]["n"] == 8 and config["estimator"]["name"] == "ls"
    plan = sweep.plot_plan(table)
    assert plan.x_key == "noise.sigma" and len(plan.series) == 1
    assert plan.constants["system"] == "harmonic"


# --------------------------------------------------------------------------- pure logic


def test_axis_scale():
    assert sweep.axis_scale([1.0, 2.0, 3.0]) == ("linear", None)
    assert sweep.axis_scale([1e-3, 1e-2, 1.0]) == ("log", None)
    assert sweep.axis_scale([0.0, 1e-3, 0.1, 1.0]) == ("symlog", 1e-3)
    assert sweep.axis_scale([-1.0, 1e-3, 1.0]) == ("linear", None)
    assert sweep.axis_scale([0.01, 0.1], decades=1) == ("log", None)


def test_plot_plan_picks_the_numeric_parameter_and_one_line_per_other_value():
    rows = []
    for system in ("harmonic", "anharmonic"):
        for sigma in ("0", "0.01", "0.1"):
            for seed in ("0", "1"):
                overrides = f"system={system} noise.sigma={sigma} seed={seed}"
                rows.append({"status": "ok", "system": system, "noise.sigma": sigma, "seed": seed,
                             "max_ratio_rel_error": float(sigma) + 1e-12, "overrides": overrides})
    rows.append({"status": "failed", "system": "harmonic", "noise.sigma": "-1", "seed": "0",
                 "overrides": "system=harmonic noise.sigma=-1 seed=0"})
    plan = sweep.plot_plan(pd.DataFrame(rows))
    assert plan.x_key == "noise.sigma" and plan.x_numeric
    assert plan.x_order == [0.0, 0.01, 0.1]  # the failed job's σ is not on the axis
    assert [s.label for s in plan.series] == ["system=harmonic", "system=anharmonic"]
    assert plan.repeat_keys == ["seed"] and plan.n_repeats == 2 and plan.n_failed == 1
    assert plan.metrics == ["max_ratio_rel_error"]
    assert plan.series[0].x == [0.0, 0.0, 0.01, 0.01, 0.1, 0.1]


def test_a_missing_launcher_plugin_is_one_line(tmp_path):
    target = "hydra.launcher._target_=hydra_plugins.hydra_joblib_launcher_missing.joblib_launcher.JoblibLauncher"
    proc = lagfit(tmp_path, "run", "-m", "hydra/launcher=joblib", target, "hydra.sweep.dir=sw")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "lagfit: error: hydra/launcher: the plugin hydra_joblib_launcher_missing is not installed; "
        "install it with: pip install -e '.[joblib]' (or pip install 'lagfit-cli[joblib]')")


def test_a_value_of_the_wrong_type_fails_the_sweep_before_any_job(tmp_path):
    proc = lagfit(tmp_path, "run", "-m", *FAST, "noise.sigma=0,abc", "hydra.sweep.dir=sw")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("lagfit: error:")]
    assert len(errors) == 1 and "noise.sigma=abc" in errors[0]
    assert not (tmp_path / "sw").exists()
