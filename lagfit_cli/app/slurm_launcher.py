"""lagfit's SLURM launcher: hydra-submitit-launcher's SlurmLauncher, waiting on SLURM's job
states itself (see :mod:`lagfit_cli.app.slurm` for what it handles and why).

Hydra accepts launchers only from the ``hydra_plugins`` package, so the class Hydra names,
``hydra_plugins.lagfit_launchers.slurm.LagfitSlurmLauncher``, is this mixin on top of the
plugin's ``SlurmLauncher``; everything it changes is here.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from lagfit_cli.app.rundir import LOCK_FILE, release
from lagfit_cli.app.slurm import (
    ACTIVE,
    MISSING_GRACE_S,
    NO_ANSWER_LIMIT_S,
    RESULT_GRACE_S,
    SubmissionRejected,
    SweepInterrupted,
    load_jobs,
    query_states,
    save_jobs,
)

log = logging.getLogger(__name__)


def _sbatch_reason(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reasons = [re.sub(r"^sbatch: error:\s*", "", line) for line in lines if line.startswith("sbatch: error:")]
    return "; ".join(dict.fromkeys(reasons)) or (lines[-1] if lines else type(error).__name__)


def _remove_unstarted_sweep(sweep_dir: Path) -> None:
    """Remove a sweep folder holding nothing but multirun.yaml and submitit's scratch files."""
    if not sweep_dir.is_dir() or {p.name for p in sweep_dir.iterdir()} - {"multirun.yaml", ".submitit", LOCK_FILE}:
        return
    release(sweep_dir)
    shutil.rmtree(sweep_dir, ignore_errors=True)


class SlurmLauncherMixin:
    """Over hydra-submitit-launcher's SlurmLauncher: waits on SLURM's states instead of
    submitit's ``results()`` (see the module's docstring)."""

    _EXECUTOR = "slurm"
    params: dict
    config: Any

    # ---------------------------------------------------------------- in the job (on a node)

    def __call__(self, *args: Any, **kwargs: Any) -> JobReturn:
        from lagfit_cli.app import hydra_app

        # SLURM's warning signal (USR2, signal_delay_s before the limit, or up to a minute
        # earlier: SLURM checks coarsely) goes to every process of the job. submitit's handler
        # would end the job at once ("timed-out too many times", a crash) and the default
        # action kills a child (torch's compiler); ignored (and so ignored by the children,
        # which inherit it), the job runs to its limit, and a job SLURM stops there is
        # `timeout` from SLURM's own state. lagfit jobs neither checkpoint nor requeue.
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        hydra_app.FAILURES.clear()
        result = super().__call__(*args, **kwargs)
        codes = [failure.exit_code for failure in hydra_app.FAILURES]
        if codes:  # sacct shows FAILED with lagfit's exit code, not COMPLETED 0:0
            _exit_with(max(codes))
        return result

    # ---------------------------------------------------------------- on the login node

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from submitit.core.utils import FailedJobError

        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        try:
            jobs = self._submit(job_overrides, initial_job_idx, sweep_dir)
        except FailedJobError as err:
            _remove_unstarted_sweep(sweep_dir)
            raise SubmissionRejected(f"hydra/launcher=submitit_slurm: sbatch rejected the sweep: "
                                     f"{_sbatch_reason(err)}") from None
        nums = list(range(initial_job_idx, initial_job_idx + len(jobs)))
        record = load_jobs(sweep_dir)
        record.setdefault("jobs", {}).update({str(n): j.job_id for n, j in zip(nums, jobs)})
        record.setdefault("states", {})
        save_jobs(sweep_dir, record)
        try:
            final = self._wait(dict(zip(nums, jobs)), sweep_dir, record)
        except KeyboardInterrupt:
            raise SweepInterrupted(
                f"interrupted: jobs continue on the cluster; collect them with `lagfit summarize {sweep_dir}`"
            ) from None
        return [self._job_return(jobs[i], overrides, final.get(nums[i]))
                for i, overrides in enumerate(job_overrides)]

    def _submit(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int, sweep_dir: Path) -> list:
        """The base launcher's submission (hydra-submitit-launcher 1.2.0), without its wait."""
        import submitit
        from hydra.core.singleton import Singleton
        from hydra.core.utils import filter_overrides
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

        params = self.params
        init_params = {"folder": params["submitit_folder"], "slurm_max_num_timeout": params["max_num_timeout"]}
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
        baseparams = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{
            key if key in baseparams else f"{self._EXECUTOR}_{key}": value
            for key, value in params.items() if key not in ("submitit_folder", "max_num_timeout")
        })
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        job_params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()))
        return executor.map_array(self, *zip(*job_params))

    def _wait(self, jobs: dict[int, Any], sweep_dir: Path, record: dict) -> dict[int, str]:
        """Wait until every job has a result file or SLURM says it ended; return the SLURM state
        of each job that ended without a result. Never waits on a job SLURM no longer knows."""
        unfinished = dict(jobs)
        ended_at: dict[int, float] = {}
        missing_at: dict[int, float] = {}
        seen: set[int] = set()
        final: dict[int, str] = {}
        last_answer = time.monotonic()
        interval = 1.0
        while unfinished:
            for num, job in list(unfinished.items()):
                if job.paths.result_pickle.exists():
                    del unfinished[num]
            if not unfinished:
                break
            states, source = query_states(sorted({j.job_id.split("_")[0] for j in unfinished.values()}))
            now = time.monotonic()
            if source is not None:
                last_answer = now
            elif now - last_answer > NO_ANSWER_LIMIT_S:
                for num in unfinished:
                    final[num] = "UNKNOWN"
                log.error(f"neither sacct nor squeue answered for {NO_ANSWER_LIMIT_S:.0f} s; stopped waiting")
                break
            for num, job in list(unfinished.items()):
                state = states.get(job.job_id)
                if state is None and source is not None:
                    # not listed: not yet visible, or gone (squeue forgets; a cancelled pending
                    # array task leaves no record there at all)
                    missing_at.setdefault(num, now)
                    grace = RESULT_GRACE_S if num in seen else MISSING_GRACE_S
                    if now - missing_at[num] > grace and not job.paths.result_pickle.exists():
                        final[num] = "VANISHED" if job.paths.stdout.exists() else "VANISHED_PENDING"
                        del unfinished[num]
                    continue
                if state is not None:
                    seen.add(num)
                missing_at.pop(num, None)
                if state is None or state in ACTIVE:
                    ended_at.pop(num, None)
                    continue
                ended_at.setdefault(num, now)
                if now - ended_at[num] >= RESULT_GRACE_S and not job.paths.result_pickle.exists():
                    final[num] = state
                    del unfinished[num]
            if final.keys() - record["states"].keys():
                record["states"].update({str(n): s for n, s in final.items()})
                save_jobs(sweep_dir, record)
            if unfinished:
                time.sleep(interval)
                interval = min(interval * 1.5, 5.0)
        return final

    def _job_return(self, job: Any, overrides: Sequence[str], state: Optional[str]) -> JobReturn:
        if state is None:
            try:
                return job.results()[0]
            except Exception as err:  # noqa: BLE001  submitit's own failure: one line in the log
                log.error(f"job {job.job_id}: {str(err).strip().splitlines()[0]}")
        # a job without result: its row comes from SLURM's state (cluster_statuses)
        return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=None)


def _exit_with(code: int) -> None:
    """Make this job's process exit with ``code`` once submitit has written its result."""
    import atexit

    def leave() -> None:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    atexit.register(leave)
