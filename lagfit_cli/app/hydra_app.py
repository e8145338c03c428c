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

from lagfit_cli.app.config import ConfigError, config_message, register_configs, validate_names, validate_static
from lagfit_cli.app.process import TUNE_PROCESS_ENV, tune_allocator
from lagfit_cli.io.report import (
    ERROR_FILE,
    EXIT_BAD_INPUT,
    EXIT_CHECK_FAILED,
    EXIT_CRASH,
    METRICS_FILE,
)

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
    """Run one job into Hydra's output folder; return its metrics, or None if it failed."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        return _run_job(cfg, run_dir, multirun)
    except ConfigError as err:
        return _fail(run_dir, str(err), EXIT_BAD_INPUT, multirun)
    except _lagfit_error() as err:
        return _fail(run_dir, config_message(err), EXIT_BAD_INPUT, multirun)
    except Exception as err:  # noqa: BLE001  a sweep records a crashing job and goes on
        if not multirun:
            raise
        log.error("the job crashed; traceback:", exc_info=True)
        return _fail(run_dir, crash_line(err), EXIT_CRASH, multirun)


def _lagfit_error() -> type:
    """The core's LagfitError: evaluated only for an error that is not a ConfigError, so a
    bad value caught by the static checks never imports the core (torch)."""
    from lagfit_cli.core.errors import LagfitError

    return LagfitError


def crash_line(err: BaseException) -> str:
    """One line for an unexpected exception: 'crash: ValueError: first line of the message'."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    return f"crash: {type(err).__name__}: {first}" if first else f"crash: {type(err).__name__}"


def _run_job(cfg: DictConfig, run_dir: Path, multirun: bool) -> Optional[dict]:
    started = time.perf_counter()
    validate_static(cfg)  # before torch is imported: bad input is told at once
    import torch

    from .tasks import TASKS

    validate_names(cfg)
    torch.set_default_dtype(torch.float64 if cfg.dtype == "float64" else torch.float32)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if os.environ.get(TUNE_PROCESS_ENV) == "1":  # the lagfit command, not a library caller
        tune_allocator()  # reuse freed tensor memory instead of page-faulting it in again
    report = TASKS[cfg.task.name](cfg)

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
    if worst is None:
        return "check failed: no identifiable value with a known true value to check"
    return f"check failed: worst identifiable-ratio relative error {worst:.3e} exceeds check.max_ratio_rel_error={limit:g}"


def _fail(run_dir: Path, message: str, exit_code: int, multirun: bool, keep: bool = False) -> None:
    log.error(f"lagfit: error: {message}")
    if multirun or keep:
        # a sweep keeps the job folder, marked as failed, beside its good siblings
        run_dir.mkdir(parents=True, exist_ok=True)
        # line 2 lets `lagfit summarize` tell the sweep's exit code from the folder alone
        (run_dir / ERROR_FILE).write_text(f"{message}\nexit code {exit_code}\n")
    FAILURES.append(JobFailure(run_dir, message, exit_code, multirun, multirun or keep))
    return None


def remove_unfinished_run(run_dir: Path) -> None:
    """Remove what Hydra wrote for a single run that failed before producing results.

    Only Hydra's own files are removed, and the folder only if that leaves it empty:
    nothing else that may be in a user-chosen ``hydra.run.dir`` is touched.
    """
    if (run_dir / METRICS_FILE).exists():
        return
    shutil.rmtree(run_dir / ".hydra", ignore_errors=True)
    for name in ("lagfit.log",):
        (run_dir / name).unlink(missing_ok=True)
    try:
        run_dir.rmdir()
    except OSError:
        pass


register_configs()


@hydra.main(version_base="1.3", config_path="pkg://lagfit_cli.conf", config_name="config")
def hydra_main(cfg: DictConfig) -> Optional[dict]:
    return run_job(cfg)
