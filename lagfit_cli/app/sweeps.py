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
        RESULTS.append(write_or_explain(sweep_dir, figure_format, dpi))


def write_or_explain(sweep_dir: Path, figure_format: str = "png", dpi: int = 150) -> SweepResult:
    # imported here: matplotlib is needed only once a sweep ends, not at every start-up
    from lagfit_cli.errors import LagfitError
    from lagfit_cli.app.slurm import cluster_statuses
    from lagfit_cli.io.sweep_plot import summarize

    try:
        # a SLURM sweep: pending, running and killed jobs as SLURM sees them (or saw them last)
        return SweepResult(sweep_dir, summarize(sweep_dir, figure_format, dpi, cluster_statuses(sweep_dir)))
    except LagfitError as err:
        return SweepResult(sweep_dir, None, str(err))
