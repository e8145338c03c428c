"""Sweeps from the command line: the Hydra callback that summarises a multirun when it ends.

The summary itself (reading job folders, summary.csv, summary.png) is the io layer's
(``io.sweep``, ``io.sweep_plot``); this module only wires it to Hydra's callback and keeps
what the CLI reports after the sweep.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from hydra.experimental.callback import Callback

if TYPE_CHECKING:  # pandas: imported when a summary is made, not at every start-up
    import pandas as pd


@dataclass
class SweepResult:
    sweep_dir: Path
    table: Optional[pd.DataFrame]
    #: why no summary could be written (e.g. no job ever started), or None
    problem: Optional[str] = None


#: the summaries written by callbacks in this process, newest last (read by the CLI)
RESULTS: list[SweepResult] = []
#: the sweep folders started in this process (so the CLI can summarize an aborted sweep)
STARTED: list[Path] = []


class SweepSummary(Callback):
    """Hydra callback: write summary.csv and summary.png at the sweep root when a multirun ends.

    It runs in the process that launched the sweep, after every job has returned, whichever
    launcher ran them; it reads the job folders, never the jobs' return values.
    """

    def on_multirun_start(self, config, **kwargs: Any) -> None:
        STARTED.append(Path(str(config.hydra.sweep.dir)))

    def on_multirun_end(self, config, **kwargs: Any) -> None:
        from omegaconf import OmegaConf

        sweep_dir = Path(str(config.hydra.sweep.dir))
        figure_format = OmegaConf.select(config, "report.format", default="png")
        dpi = OmegaConf.select(config, "report.dpi", default=150)
        from lagfit_cli.io.style import STYLES, use

        name = OmegaConf.select(config, "report.style", default="paper")
        use(name if name in STYLES else "paper")
        RESULTS.append(write_or_explain(sweep_dir, figure_format, dpi))


def write_or_explain(sweep_dir: Path, figure_format: str = "png", dpi: int = 150) -> SweepResult:
    # imported here: matplotlib is needed only once a sweep ends, not at every start-up
    from lagfit_cli.errors import LagfitError
    from lagfit_cli.app.slurm import cluster_statuses
    from lagfit_cli.io.sweep_plot import summarize

    try:
        # a SLURM sweep: pending, running and killed jobs as SLURM sees them (or saw them last)
        return SweepResult(sweep_dir, summarize(sweep_dir, figure_format, dpi, cluster_statuses(sweep_dir), planned_jobs(sweep_dir)))
    except LagfitError as err:
        return SweepResult(sweep_dir, None, str(err))


def planned_jobs(sweep_dir: Path) -> Optional[list[list[str]]]:
    """Every job's overrides, in job-number order, as Hydra's basic sweeper expands the sweep
    saved in ``multirun.yaml``; None when there is no such file or another sweeper ran it."""
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return None
    # imported here: only summaries of sweeps need Hydra's override grammar
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    try:
        hydra_cfg = OmegaConf.load(path).hydra
        if not str(hydra_cfg.sweeper._target_).endswith("BasicSweeper"):
            return None
        params = hydra_cfg.sweeper.get("params") or {}
        arguments = [f"{key}={value}" for key, value in params.items()] + list(hydra_cfg.overrides.task)
        parsed = OverridesParser.create().parse_overrides(arguments)
        batches = BasicSweeper.split_arguments(parsed, None)
    except Exception:  # noqa: BLE001  an unreadable plan: summarize the folders alone
        return None
    return [list(job) for batch in batches for job in batch]
