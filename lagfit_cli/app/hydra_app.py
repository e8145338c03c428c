"""The Hydra application behind ``lagfit run``: one job = validate, run the task, write.

A job that fails on bad input records the failure (:data:`FAILURES`) instead of raising,
so that Hydra finishes cleanly and the CLI turns it into one line and an exit code.

Importing this module imports Hydra and OmegaConf, not torch: a job checks its config
first and imports the core and the tasks after, so that bad input is told without that wait.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from lagfit_cli.app import limits, rundir
from lagfit_cli.app.config import ConfigError, config_message, register_configs, validate_names, validate_static
from lagfit_cli.app.process import TUNE_PROCESS_ENV, tune_allocator
from lagfit_cli.errors import LagfitError, printable
from lagfit_cli.io.report import (
    ERROR_FILE,
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_CRASH,
    EXIT_INTERRUPTED,
    METRICS_FILE,
)

#: the job's log (Hydra's job_logging: ${hydra.job.name}.log), where a crash's traceback goes
LOG_FILE = "lagfit.log"

log = logging.getLogger("lagfit")

# conf/hydra/launcher/*.yaml share their names with the launcher plugins' own schemas, which
# Hydra 1.3 still uses to type-check them, warning each time (in every worker) that it will stop
warnings.filterwarnings("ignore", message=r"\n?'hydra/launcher/\w+' is validated against ConfigStore schema")



@dataclass
class JobFailure:
    run_dir: Path
    message: str
    exit_code: int
    multirun: bool
    #: the folder holds results worth keeping (e.g. a failed check), or belongs to a sweep
    keep_folder: bool


#: failures of the jobs run in this process, in order (read by the CLI)
FAILURES: list[JobFailure] = []


def run_job(cfg: DictConfig) -> Optional[dict]:
    """Run one job into Hydra's output folder; return its metrics, or None if it failed.

    Every way a job can end is one line: bad input or environment (exit 2, including OS
    errors and memory), lagfit's own bug (exit 1, the traceback in lagfit.log), an interrupt
    (the folder is marked with error.txt and KeyboardInterrupt goes on to the CLI: exit 130).
    """
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        if multirun:  # a single run's folder was claimed before Hydra wrote into it
            rundir.claim("hydra.sweep.dir", run_dir)
        return _run_job(cfg, run_dir, multirun)
    except ConfigError as err:
        return _fail(run_dir, str(err), EXIT_BAD_INPUT, multirun)
    except LagfitError as err:
        return _fail(run_dir, config_message(err), EXIT_BAD_INPUT, multirun)
    except KeyboardInterrupt:
        _mark_failed(run_dir, "interrupted", EXIT_INTERRUPTED)
        raise
    except MemoryError:
        return _fail(run_dir, "out of memory: lower the run's sizes (see limits.* and docs/errors.md)",
                     EXIT_BAD_INPUT, multirun)
    except OSError as err:
        return _fail(run_dir, os_error_line(err), EXIT_BAD_INPUT, multirun)
    except Exception as err:  # noqa: BLE001  lagfit's own bug: one line, the traceback in lagfit.log
        log_file = write_traceback(run_dir)
        where = f" (traceback in {log_file})" if log_file else ""
        return _fail(run_dir, crash_line(err) + where, EXIT_CRASH, multirun, keep=True)
    finally:
        rundir.release(run_dir)
        _close_log_files(run_dir)


def _close_log_files(run_dir: Path) -> None:
    """Close the job's log file handlers (lagfit.log): the job is over, and its folder may be
    gone (bad input removes it). In one command nothing changes; where jobs run one after
    another in one process (the basic sweep launcher, a notebook, the tests), a later
    message must not go to a file of a finished job, or fail because its folder is gone."""
    loggers = [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]
    for logger in loggers:
        for handler in list(logger.handlers):
            path = getattr(handler, "baseFilename", None)
            if path is not None and Path(path).resolve().parent == run_dir.resolve():
                logger.removeHandler(handler)
                handler.close()


def os_error_line(err: OSError) -> str:
    """'cannot access FILE: No space left on device' from an OSError."""
    reason = err.strerror or str(err) or type(err).__name__
    target = f" {printable(err.filename)}" if err.filename else ""
    return f"cannot access{target}: {reason}"


def write_traceback(run_dir: Path) -> Optional[Path]:
    """Append the current exception's traceback to the run's lagfit.log (not the console)."""
    import traceback

    path = run_dir / LOG_FILE
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("the job crashed (a bug in lagfit); traceback:\n" + traceback.format_exc())
    except OSError:
        return None
    return path


def crash_line(err: BaseException) -> str:
    """One line for an unexpected exception: 'crash: ValueError: first line of the message'."""
    text = str(err).strip()
    first = printable(text.splitlines()[0], limit=300) if text else ""
    return f"crash: {type(err).__name__}: {first}" if first else f"crash: {type(err).__name__}"


def _run_job(cfg: DictConfig, run_dir: Path, multirun: bool) -> Optional[dict]:
    started = time.perf_counter()
    validate_static(cfg)  # before torch is imported: bad input is told at once
    limits.check(cfg)
    import torch

    from .tasks import TASKS

    validate_names(cfg)
    # process-wide torch settings, restored after the job (the CLI may run in-process)
    saved_dtype, saved_threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64 if cfg.dtype == "float64" else torch.float32)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if os.environ.get(TUNE_PROCESS_ENV) == "1":  # the lagfit command, not a library caller
        tune_allocator()  # reuse freed tensor memory instead of page-faulting it in again
    if cfg.report.figures:
        from lagfit_cli.io.style import use

        use(cfg.report.style)  # the figure style (report.style) of every figure this job draws
    try:
        report = TASKS[cfg.task.name](cfg)
    finally:
        torch.set_default_dtype(saved_dtype)
        torch.set_num_threads(saved_threads)

    report.metrics["runtime_s"] = time.perf_counter() - started
    failed_check = report.failed_check or check_failure(cfg, report.metrics)
    report.metrics["status"] = "check_failed" if failed_check else "ok"
    report.write(run_dir, cfg.report.format, cfg.report.dpi)
    for line in report.summary:
        log.info(line)
    log.info(f"results in {run_dir}")
    if failed_check:
        _fail(run_dir, failed_check, EXIT_CHECK_FAILED, multirun, keep=True)
    return report.metrics


def check_failure(cfg: DictConfig, metrics: dict) -> Optional[str]:
    """The message of a failed ``check`` (experiment=smoke), or None."""
    limit = cfg.check.max_ratio_rel_error
    if limit is None:
        return None
    worst = metrics.get("max_ratio_rel_error")
    if worst is None:
        return f"check failed: task {cfg.task.name!r} reports no fitted ratios for check.max_ratio_rel_error"
    if worst <= limit:
        return None
    return f"check failed: worst identifiable-ratio relative error {worst:.3e} exceeds check.max_ratio_rel_error={limit:g}"


def _fail(run_dir: Path, message: str, exit_code: int, multirun: bool, keep: bool = False) -> None:
    message = printable(message)
    log.error(f"lagfit: error: {message}")
    if multirun or keep:
        # a sweep keeps the job folder, marked as failed, beside its good siblings
        _mark_failed(run_dir, message, exit_code)
    FAILURES.append(JobFailure(run_dir, message, exit_code, multirun, multirun or keep))
    return None


def _mark_failed(run_dir: Path, message: str, exit_code: int) -> None:
    """error.txt: the message (line 1) and ``exit code N`` (line 2, read by `lagfit summarize`)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ERROR_FILE).write_text(f"{printable(message)}\nexit code {exit_code}\n", encoding="utf-8")
    except OSError:
        pass  # e.g. a full disk: the missing metrics.json still says the run did not finish


def remove_unfinished_run(run_dir: Path) -> None:
    """Remove what Hydra wrote for a single run that failed before producing results.

    Only Hydra's own files are removed, and the folder only if that leaves it empty:
    nothing else that may be in a user-chosen ``hydra.run.dir`` is touched.
    """
    if (run_dir / METRICS_FILE).exists():
        return
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    for name in (LOG_FILE,):
        (run_dir / name).unlink(missing_ok=True)
    try:
        run_dir.rmdir()
    except OSError:
        pass


register_configs()


@hydra.main(version_base="1.3", config_path="pkg://lagfit_cli.conf", config_name="config")
def hydra_main(cfg: DictConfig) -> Optional[dict]:
    return run_job(cfg)
