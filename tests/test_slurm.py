"""Sweeps on a real SLURM (issue 16): `lagfit run -m hydra/launcher=submitit_slurm ...` as a user
runs it, against the single-node cluster .ci/slurm-up starts in CI.

Where no SLURM answers (a laptop), the tests marked `slurm` skip and say why; under CI=true a
missing SLURM fails them instead. The tests without the mark check the pure logic (state
parsing, the planned-job rows, the signal delay) everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import call_cli
from lagfit_cli.app import slurm
from lagfit_cli.app.sweeps import planned_jobs
from lagfit_cli.io import sweep

#: tiny jobs: the smoke experiment's 64 points and 4 starts, no figures, no check (noise is swept)
SMALL = ("experiment=smoke", "report.figures=false", "check.max_ratio_rel_error=null")
#: metrics that measure time, and so differ between two runs of the same job
TIMINGS = ("runtime_s", "fit_s", "uncertainty_s", "profiles_s")


def slurm_problem() -> str | None:
    """Why no SLURM can run the tests here, or None."""
    for command in ("sbatch", "squeue", "sinfo", "scancel"):
        if shutil.which(command) is None:
            return f"no `{command}` on PATH (.ci/slurm-up starts a single-node SLURM as root)"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s"
    if proc.returncode != 0:
        first = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        return f"SLURM does not answer: {first}"
    if not any(line.endswith(" up") for line in proc.stdout.splitlines()):
        return f"no SLURM partition is up: {proc.stdout.strip()!r}"
    try:
        import hydra_plugins.hydra_submitit_launcher  # noqa: F401
    except ImportError:
        return "hydra-submitit-launcher is not installed (pip install -e '.[slurm]')"
    return None


@pytest.fixture(scope="session")
def partition() -> str:
    """The default partition of the SLURM that answers here."""
    problem = slurm_problem()
    if problem is not None:
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"CI=true but SLURM is not usable: {problem}", pytrace=False)
        pytest.skip(problem)
    out = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, check=True).stdout
    names = out.split()
    return next((n.rstrip("*") for n in names if n.endswith("*")), names[0])


def launcher(partition: str, *extra: str) -> tuple[str, ...]:
    return ("hydra/launcher=submitit_slurm", f"hydra.launcher.partition={partition}",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=null", "hydra.launcher.timeout_min=5", *extra)


def lagfit(cwd: Path, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lagfit_cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


#: sweeps started in the background by this module: (process, sweep folder)
STARTED: list[tuple[subprocess.Popen, Path]] = []


def start(cwd: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """``lagfit ARGS`` in the background; ended at the end of the module if a test left it
    running (a failed test must not leave a process waiting on held jobs, or the jobs)."""
    run = subprocess.Popen([sys.executable, "-m", "lagfit_cli", *args], cwd=cwd, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env)
    sweep_dir = next((cwd / a.split("=", 1)[1] for a in args if a.startswith("hydra.sweep.dir=")), cwd)
    STARTED.append((run, sweep_dir))
    return run


@pytest.fixture(scope="module", autouse=True)
def end_what_was_started():
    yield
    for run, sweep_dir in STARTED:
        if run.poll() is None:
            run.kill()
            run.communicate()
        for job_id in (slurm.load_jobs(sweep_dir).get("jobs") or {}).values():
            subprocess.run(["scancel", job_id.split("_")[0]], check=False, capture_output=True)
    STARTED.clear()


def summary(sweep_dir: Path) -> pd.DataFrame:
    return pd.read_csv(sweep_dir / "summary.csv", keep_default_na=False, na_values=[""], dtype={"dir": str})


def slurm_ids(sweep_dir: Path, timeout: float = 60) -> dict[str, str]:
    """{job number: SLURM id} once the launcher has submitted the array."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = slurm.load_jobs(sweep_dir).get("jobs")
        if jobs:
            return jobs
        time.sleep(0.2)
    raise AssertionError(f"no SLURM job ids in {sweep_dir / slurm.JOBS_FILE} after {timeout} s")


def sacct(job_id: str) -> dict[str, tuple[str, str, str]]:
    """{task id: (state, exit code, elapsed)} of an array, from accounting."""
    out = subprocess.run(["sacct", "-j", job_id.split("_")[0], "-X", "-n", "-P", "-o", "JobID,State,ExitCode,Elapsed"],
                         capture_output=True, text=True).stdout
    return {f[0]: (f[1].split()[0], f[2], f[3]) for f in (line.split("|") for line in out.splitlines()) if len(f) == 4}


def wait_until_gone(job_id: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["squeue", "-h", "-j", job_id.split("_")[0]], capture_output=True, text=True).stdout
        if not out.strip():
            return
        time.sleep(0.5)
    raise AssertionError(f"SLURM job {job_id} still queued after {timeout} s")


def no_accounting_env(tmp_path: Path) -> dict:
    """PATH with an `sacct` that fails as it does where accounting is off."""
    shim = tmp_path / "no-accounting"
    shim.mkdir()
    (shim / "sacct").write_text("#!/bin/sh\necho 'sacct: error: Slurm accounting storage is disabled' >&2\nexit 1\n")
    (shim / "sacct").chmod(0o755)
    return {**os.environ, "PATH": f"{shim}{os.pathsep}{os.environ['PATH']}"}


def assert_one_line_per_problem(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert "Bypassing" not in stderr, stderr


# --------------------------------------------------------------------------- on a real SLURM


def on_cluster(test):
    """A test on the real SLURM: marked `slurm`, and with the time-limited sweep under way (see
    time_limited_sweep), whichever of them runs first. One pytest worker runs this file's
    tests, first, while the others run the rest of the suite (conftest's scheduler)."""
    return pytest.mark.usefixtures("time_limited_sweep")(pytest.mark.slurm(test))


@pytest.fixture(scope="module")
def time_limited_sweep(tmp_path_factory, partition):
    """A one-job sweep that runs into its one-minute SLURM time limit, started when the first
    cluster test needs it and checked by the last one: SLURM limits are whole minutes, checked
    every 30 s, so this job takes 60-90 s, and the other cluster tests run meanwhile.

    At nice 19 (.ci/slurm-up propagates it to the task): its minute of fitting slows no other test.
    Should a test ask for it alone (pytest -k), end_what_was_started cancels what is left."""
    cwd = tmp_path_factory.mktemp("time_limit")
    sweep_dir = cwd / "sw"
    run = start(cwd, "run", "-m", *launcher(partition), "hydra.launcher.timeout_min=1", *SMALL,
                "hydra.launcher.setup=['renice -n 19 -p $$ >/dev/null']",
                "optim=gd", "init=box",  # the report's descent: slow enough to reach the limit
                "data.n=200", "noise.sigma=0.1", "optim.iters=100000000",
                "optim.grad_tol=0", "optim.loss_tol=0",
                f"hydra.sweep.dir={sweep_dir}")
    return run, sweep_dir


@on_cluster
def test_a_sweep_matches_the_local_launcher_and_a_bad_job_fails_alone(tmp_path, partition):
    overrides = (*SMALL, "noise.sigma=0,0.1,-1")
    proc = lagfit(tmp_path, "run", "-m", *launcher(partition), *overrides, "hydra.sweep.dir=sw")
    assert proc.returncode == 2, proc.stderr  # the bad job's exit code
    assert_one_line_per_problem(proc.stderr)
    assert "2 of 3 jobs ok, 1 failed" in proc.stderr
    table = summary(tmp_path / "sw")
    assert list(table["status"]) == ["ok", "ok", "failed"]
    assert table["error"][2] == "noise.sigma: must be a finite number >= 0, got -1.0"
    # sacct agrees with lagfit: the SLURM job's exit code is lagfit's
    ids = slurm_ids(tmp_path / "sw")
    states = sacct(ids["0"])
    assert states[ids["0"]][:2] == ("COMPLETED", "0:0") and states[ids["2"]][:2] == ("FAILED", "2:0"), states
    # the same sweep with Hydra's own (local) launcher, in this process: the same numbers, byte for byte
    local = call_cli(["run", "-m", *overrides, "hydra.sweep.dir=local"], tmp_path)
    assert local.returncode == 2, local.stderr
    for job in ("0", "1"):
        on_slurm, local = tmp_path / "sw" / job, tmp_path / "local" / job
        for name in ("fit_results.csv", "fit_history.csv"):
            assert (on_slurm / name).read_bytes() == (local / name).read_bytes(), (job, name)
        a, b = (json.loads((d / "metrics.json").read_text()) for d in (on_slurm, local))
        for key in TIMINGS:
            a.pop(key, None), b.pop(key, None)
        assert json.dumps(a) == json.dumps(b)
    assert (tmp_path / "sw" / "2" / "error.txt").read_bytes() == (tmp_path / "local" / "2" / "error.txt").read_bytes()


@on_cluster
def test_a_cancelled_pending_job_is_a_row_and_the_wait_ends_without_accounting(tmp_path, partition):
    """One job at a time (array_parallelism=1): job 1 is still pending when it is cancelled.
    sacct answers 'accounting disabled' here, so the launcher falls back on squeue."""
    env = no_accounting_env(tmp_path)
    sweep_dir = tmp_path / "sw"
    run = start(tmp_path, "run", "-m", *launcher(partition, "hydra.launcher.array_parallelism=1"), *SMALL,
                "seed=0,1", f"hydra.sweep.dir={sweep_dir}", env=env)
    ids = slurm_ids(sweep_dir)
    subprocess.run(["scancel", ids["1"]], check=True)
    _, stderr = run.communicate(timeout=180)
    assert run.returncode == 1, stderr
    assert_one_line_per_problem(stderr)
    assert "1 of 2 jobs ok, 1 cancelled" in stderr
    table = summary(sweep_dir)
    assert list(table["status"]) == ["ok", "cancelled"]
    assert list(table["seed"]) == [0, 1]
    # squeue keeps a finished job listed for a while (MinJobAge): it then still says CANCELLED;
    # once it has dropped the job, all that is known is that it left before starting
    assert table["error"][1].startswith((
        f"cancelled: SLURM job {ids['1']} left the queue before it started",
        f"cancelled: SLURM job {ids['1']} ended CANCELLED",
    )), table["error"][1]
    assert table["exit_code"][1] == 1
    # later, with SLURM's memory of the job gone too, summarize still tells it (the saved state)
    with pytest.MonkeyPatch.context() as patch:  # `lagfit summarize` in this process, sacct still refused
        patch.setenv("PATH", env["PATH"])
        proc = call_cli(["summarize", str(sweep_dir)], tmp_path)
    assert proc.returncode == 1 and "1 of 2 jobs ok, 1 cancelled" in proc.stderr, proc.stderr


@on_cluster
def test_a_rejected_submission_is_one_line_and_leaves_no_folder(tmp_path, partition):
    proc = lagfit(tmp_path, "run", "-m", *launcher(partition), "hydra.launcher.partition=no_such_partition",
                  *SMALL, "seed=0,1", "hydra.sweep.dir=sw")
    assert proc.returncode == 2, proc.stderr
    assert_one_line_per_problem(proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("lagfit:")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("lagfit: error: hydra/launcher=submitit_slurm: sbatch rejected the sweep: ")
    assert "invalid partition" in errors[0].lower()
    assert not (tmp_path / "sw").exists()


@on_cluster
def test_ctrl_c_leaves_the_jobs_running_and_summarize_collects_them(tmp_path, partition):
    """The array is submitted held (sbatch --hold): its jobs stay pending until released."""
    sweep_dir = tmp_path / "sw"
    run = start(tmp_path, "run", "-m", *launcher(partition, "+hydra.launcher.additional_parameters.hold=true"),
                *SMALL, "seed=0,1", f"hydra.sweep.dir={sweep_dir}")
    ids = slurm_ids(sweep_dir)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == (
        f"lagfit: interrupted: jobs continue on the cluster; collect them with `lagfit summarize {sweep_dir}`")
    # mid-sweep: every planned job is listed, as pending; not clean
    proc = call_cli(["summarize", str(sweep_dir)], tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "0 of 2 jobs ok, 2 pending" in proc.stderr
    table = summary(sweep_dir)
    assert list(table["job"]) == [0, 1] and list(table["status"]) == ["pending", "pending"]
    # once the cluster is done: all ok, exit 0
    subprocess.run(["scontrol", "release", ids["0"].split("_")[0]], check=True)
    wait_until_gone(ids["1"])
    proc = call_cli(["summarize", str(sweep_dir)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert list(summary(sweep_dir)["status"]) == ["ok", "ok"]


@on_cluster
def test_a_time_limit_is_a_timeout_not_an_instant_kill(time_limited_sweep):
    """Last on the cluster (its sweep started with the first cluster test; see time_limited_sweep).
    timeout_min=1: the job is not killed at once (the old signal_delay_s=120 warned, and
    submitit ended the job, after 13 s), it runs to its limit and is reported as `timeout`.
    SLURM's warning comes early and reaches every process of the job (torch's compiler too)."""
    run, sweep_dir = time_limited_sweep
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 1, stderr
    assert_one_line_per_problem(stderr)
    table = summary(sweep_dir)
    assert list(table["status"]) == ["timeout"], table.to_dict("records")
    assert table["error"][0].startswith("timeout: ")
    script = next((sweep_dir / ".submitit").rglob("*_submission.sh")).read_text()
    assert "#SBATCH --signal=USR2@10" in script
    ids = slurm_ids(sweep_dir)
    state, _, elapsed = sacct(ids["0"])[ids["0"]]
    minutes, seconds = map(int, elapsed.split(":")[-2:])
    assert 60 * minutes + seconds >= 60, (state, elapsed)  # ran to its limit
    assert state == "TIMEOUT", state


# --------------------------------------------------------------------------- pure logic


def test_signal_delay_is_a_fraction_of_the_limit_with_a_floor():
    assert slurm.signal_delay_s(1) == 10
    assert slurm.signal_delay_s(5) == 15
    assert slurm.signal_delay_s(30) == 90
    assert slurm.signal_delay_s(600) == 120


def test_array_ids_and_states():
    assert slurm._expand("42_[1-3,5%2]") == ["42_1", "42_2", "42_3", "42_5"]
    assert slurm._expand("42_7") == ["42_7"]
    assert slurm.describe("PENDING", "42_1")[0] == "pending"
    assert slurm.describe("RUNNING", "42_1")[0] == "running"
    assert slurm.describe("CANCELLED", "42_1") == ("cancelled", "cancelled: SLURM job 42_1 ended CANCELLED before lagfit finished")
    assert slurm.describe("TIMEOUT", "42_1")[0] == "timeout"
    assert slurm.describe("NODE_FAIL", "42_1")[0] == "node_fail"


def test_summarize_lists_every_planned_job(tmp_path):
    """A 4-job sweep with 2 folders: the other 2 are not_started (or what SLURM says of them)."""
    sweep_dir = tmp_path / "sw"
    # Hydra numbers jobs in the product's order: (0, 0), (0, 1), (0.1, 0), (0.1, 1)
    for num, seed in ((0, "0"), (1, "1")):
        job = sweep_dir / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["noise.sigma=0", f"seed={seed}"]))
        (job / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump({"hydra": {"job": {"num": num}}}))
        (job / "metrics.json").write_text(json.dumps({"status": "ok", "best_loss": 0.0}))
    multirun = {"hydra": {"sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                                      "params": None},
                          "overrides": {"task": ["noise.sigma=0,0.1", "seed=0,1"]}}}
    (sweep_dir / "multirun.yaml").write_text(yaml.safe_dump(multirun))
    table = sweep.collect(sweep_dir, planned=planned_jobs(sweep_dir))
    assert list(table["job"]) == [0, 1, 2, 3]
    assert list(table["status"]) == ["ok", "ok", "not_started", "not_started"]
    assert list(table["overrides"])[2:] == ["noise.sigma=0.1 seed=0", "noise.sigma=0.1 seed=1"]
    assert sweep.exit_code(table) == 1 and sweep.headline(table) == "2 of 4 jobs ok, 2 not started"
    table = sweep.collect(sweep_dir, {2: ("cancelled", "cancelled: ..."), 3: ("pending", "SLURM job 9_3 is pending")},
                          planned=planned_jobs(sweep_dir))
    assert list(table["status"]) == ["ok", "ok", "cancelled", "pending"]
