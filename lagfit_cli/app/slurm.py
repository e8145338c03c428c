"""Sweeps on SLURM: what SLURM says about a sweep's jobs (sacct, else squeue), the statuses
the summary gives them, and the exceptions that end a sweep early. No submitit import here:
``lagfit summarize`` and the CLI use this module without the slurm extra.

``hydra/launcher=submitit_slurm`` (conf/hydra/launcher/submitit_slurm.yaml) targets
:class:`hydra_plugins.lagfit_launchers.slurm.LagfitSlurmLauncher` (its code:
:mod:`lagfit_cli.app.slurm_launcher`), the plugin's ``SlurmLauncher`` with the faults of a real
cluster handled (issue 16):

- it waits by polling ``sacct`` for the array (``squeue -t all`` where accounting is off, then
  the result files), quietly, with a bounded wait for jobs SLURM no longer lists; a job SLURM
  killed (scancel, time limit, node failure) becomes a ``cancelled``/``timeout``/``node_fail``
  row of the summary instead of an ``UncompletedJobError`` that stops the sweep;
- a rejected ``sbatch`` is :class:`SubmissionRejected` (one line, sbatch's reason), and the sweep
  folder it would have left half-made is removed;
- Ctrl-C while waiting is :class:`SweepInterrupted`: the jobs continue on the cluster;
- in the job, SLURM's warning signal before the time limit (``signal_delay_s``, derived from
  ``timeout_min``) is ignored, so a short limit no longer ends the job at once; a job SLURM
  stops at its limit is ``timeout`` from SLURM's state. The job's process exits with lagfit's
  exit code, so that ``sacct`` agrees with lagfit.

The array's job ids and the last states seen are kept in ``.submitit/lagfit_jobs.json`` of the
sweep, so that ``lagfit summarize DIR`` can tell pending, running and killed jobs apart later.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any, Optional, Sequence

from omegaconf import OmegaConf

#: the array's job ids and their last known states, per job number (in the sweep folder)
JOBS_FILE = Path(".submitit") / "lagfit_jobs.json"
#: SLURM states of a job that has not ended
ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "COMPLETING", "CONFIGURING", "RESIZING", "SUSPENDED",
          "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}
#: summary status of a job that ended without a result, by its SLURM state
KILLED = {"CANCELLED": "cancelled", "TIMEOUT": "timeout", "NODE_FAIL": "node_fail", "BOOT_FAIL": "node_fail",
          "PREEMPTED": "cancelled", "DEADLINE": "timeout", "OUT_OF_MEMORY": "out_of_memory",
          "FAILED": "failed", "REVOKED": "cancelled", "COMPLETED": "failed"}
#: summary status of a job that has not ended, by its SLURM state
WAITING = {"PENDING": "pending", "REQUEUED": "pending", "REQUEUE_HOLD": "pending", "CONFIGURING": "pending"}
#: how long a job SLURM says has ended may take to show its result file (a shared file system)
RESULT_GRACE_S = 5.0
#: how long a job may be missing from sacct/squeue before it is given up as lost
MISSING_GRACE_S = 60.0
#: how long the wait goes on while neither sacct nor squeue answers (controller down)
NO_ANSWER_LIMIT_S = 600.0
#: the warning signal before the time limit: this fraction of the limit, within these bounds
SIGNAL_FRACTION, SIGNAL_FLOOR_S, SIGNAL_CEILING_S = 0.05, 10, 120


class SweepStopped(Exception):
    """A sweep that ends early on purpose: one line for the user and an exit code."""

    exit_code = 1

    def __init__(self, message: str, exit_code: Optional[int] = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class SubmissionRejected(SweepStopped):
    exit_code = 2


class SweepInterrupted(SweepStopped):
    exit_code = 130


def signal_delay_s(timeout_min: float) -> int:
    """Seconds between SLURM's warning signal and the time limit: a fraction of the limit, at
    least SIGNAL_FLOOR_S (time to write the record) and at most SIGNAL_CEILING_S."""
    return int(min(SIGNAL_CEILING_S, max(SIGNAL_FLOOR_S, SIGNAL_FRACTION * 60 * float(timeout_min))))


def register_slurm() -> None:
    """``${lagfit_signal_delay:${.timeout_min}}`` in conf/hydra/launcher/submitit_slurm.yaml, and
    lagfit's launcher class with Hydra: its plugin scan cannot see into an editable install."""
    if not OmegaConf.has_resolver("lagfit_signal_delay"):
        OmegaConf.register_new_resolver("lagfit_signal_delay", signal_delay_s)
    try:
        from hydra_plugins.lagfit_launchers.slurm import LagfitSlurmLauncher
    except ImportError:  # no slurm extra: Hydra's "Unknown plugin class" says so, in one line
        return
    from hydra.core.plugins import Plugins

    Plugins.instance().register(LagfitSlurmLauncher)


# --------------------------------------------------------------------------- SLURM's view


def _run(command: list[str]) -> Optional[str]:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _expand(job_id: str) -> list[str]:
    """'42_[1-3,5%2]' -> ['42_1', '42_2', '42_3', '42_5']; '42_0' -> ['42_0']."""
    match = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job_id)
    if not match:
        return [job_id]
    array, spec = match.group(1), match.group(2).split("%")[0]
    ids = []
    for part in spec.split(","):
        low, _, high = part.partition("-")
        ids += [f"{array}_{i}" for i in range(int(low), int(high or low) + 1)]
    return ids


def query_states(array_ids: Sequence[str]) -> tuple[dict[str, str], Optional[str]]:
    """SLURM state of every array task, {'42_3': 'CANCELLED', ...}, and where it came from:
    'sacct', 'squeue' (accounting off: only jobs slurmctld still holds) or None (no answer)."""
    if not array_ids:
        return {}, None
    ids = ",".join(sorted(set(array_ids)))
    accounted = _run(["sacct", "-j", ids, "-X", "-n", "-P", "-o", "JobID,State"])
    # slurmctld's own view: current for the jobs it still holds, and there even when
    # accounting lags behind (a just-submitted job) or is off
    queued = _run(["squeue", "-h", "-r", "-t", "all", "-j", ids, "-o", "%i|%T"])
    if accounted is None and queued is None:
        return {}, None
    states = _parse_states(accounted or "")
    states.update(_parse_states(queued or ""))
    return states, "sacct" if accounted is not None else "squeue"


def _parse_states(out: str) -> dict[str, str]:
    states = {}
    for line in out.splitlines():
        if "|" not in line:
            continue
        job_id, state = line.split("|", 1)
        for one in _expand(job_id.strip()):
            states[one] = (state.split() or ["UNKNOWN"])[0].upper()
    return states


def load_jobs(sweep_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(sweep_dir) / JOBS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def save_jobs(sweep_dir: Path, record: dict[str, Any]) -> None:
    path = Path(sweep_dir) / JOBS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True))
    tmp.replace(path)


def describe(state: str, slurm_id: str) -> tuple[str, str]:
    """(summary status, error message) of a job without result, from its SLURM state."""
    if state in WAITING:
        return WAITING[state], f"SLURM job {slurm_id} is {state.lower()}"
    if state in ACTIVE:
        return "running", f"SLURM job {slurm_id} is {state.lower()}"
    status = KILLED.get(state, "failed")
    if state == "TIMEOUT":
        return status, f"timeout: SLURM job {slurm_id} reached its time limit (hydra.launcher.timeout_min)"
    if state == "VANISHED_PENDING":
        return "cancelled", (f"cancelled: SLURM job {slurm_id} left the queue before it started "
                             "(no accounting (sacct) to tell more)")
    if state in ("VANISHED", "UNKNOWN"):
        return "lost", f"lost: SLURM job {slurm_id} left the queue without a lagfit result; see {JOBS_FILE.parent}/"
    if state == "COMPLETED":
        return status, f"SLURM job {slurm_id} ended without a lagfit result; see {JOBS_FILE.parent}/"
    return status, f"{status}: SLURM job {slurm_id} ended {state} before lagfit finished"


def cluster_statuses(sweep_dir: Path) -> dict[int, tuple[str, str]]:
    """{job number: (status, message)} for a SLURM sweep's jobs, from SLURM now where it still
    knows them, else from the states the launcher saw last; {} for a sweep not run on SLURM."""
    record = load_jobs(sweep_dir)
    ids: dict[str, str] = record.get("jobs", {})
    if not ids:
        return {}
    known: dict[str, str] = dict(record.get("states", {}))
    states, _ = query_states(sorted({i.split("_")[0] for i in ids.values()}))
    for num, slurm_id in ids.items():
        if slurm_id in states:
            known[num] = states[slurm_id]
    return {int(num): describe(state, ids[num]) for num, state in known.items()}
