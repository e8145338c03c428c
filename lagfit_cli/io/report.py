"""Everything a run leaves behind: tables (CSV), figures, metrics.json and a summary.

Tasks fill a :class:`Report`; only :meth:`Report.write` touches the file system.
``metrics.json`` is written last, so a folder that has one holds a finished run.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # pandas and matplotlib: imported by whoever makes the tables and figures
    import pandas as pd
    from matplotlib.figure import Figure

from lagfit_cli.errors import LagfitError, printable

METRICS_FILE = "metrics.json"
#: a failed job's message (line 1) and ``exit code N`` (line 2)
ERROR_FILE = "error.txt"
#: exit codes: 0 ok, 1 lagfit's own bug, 2 bad input or environment, 3 a failed check or fit,
#: 130 interrupted (Ctrl-C); docs/errors.md lists them with an example each
EXIT_OK, EXIT_CRASH, EXIT_BAD_INPUT, EXIT_CHECK_FAILED = 0, 1, 2, 3
EXIT_INTERRUPTED = 130
FIGURES_DIR = "figures"
#: the figure index: one line per figure, what it shows and which table it is drawn from
FIGURE_INDEX_FILE = "README.md"

#: what each figure lagfit writes shows, and the table (CSV in the run folder) it comes from
FIGURE_DESCRIPTIONS: dict[str, tuple[str, str]] = {
    "fig1_qdd": ("q̈ over (q, q̇) of the data (seed Fig. 1); without a grid: fitted q̈ against the data's",
                 "the run's data (data.* in .hydra/config.yaml; with data=csv the file data.path)"),
    "fig2_landscape": ("the loss over a grid of two parameters, the valley of equal loss marked (seed Fig. 2)",
                       "landscape.csv"),
    "fig3_fit_paths": ("the fit's descent paths over the loss landscape of two parameters, coloured by status (seed Fig. 3)",
                       "fit_history.csv (paths), fit_results.csv (status)"),
    "fig8_paths": ("gradient-descent paths from many random starts over the landscape, coloured by status (seed Fig. 8)",
                   "landscape_paths.csv (paths), landscape.csv (background)"),
    "fit_convergence": ("the loss and each identifiable value against the iteration, one line per start",
                        "fit_history.csv"),
    "fig_correlations": ("the correlation matrix of the reported values", "fitted_params.csv"),
    "fig_profiles": ("the loss profile of each reported value (minimised over the others) with its 95 % level",
                     "profiles.csv"),
    "fig4_noise_slice": ("the loss on the slice through the truth ⊥ valley, without and with noise (seed Fig. 4)",
                         "noise_slice.csv"),
    "fig5_noise_rms": ("RMS error of the noisy loss on the slice against σ, with the threshold crossing (seed Fig. 5)",
                       "noise_rms.csv"),
    "fig6_noise_landscapes": ("the loss landscape without and with noise, each on its own colour scale (seed Fig. 6)",
                              "landscape of the clean and of one noisy data set (recomputed; noise_slice.csv holds the slice)"),
    "noise_valley": ("depth and width of the valley on the slice against σ", "noise_rms.csv"),
    "fig7_benchmark": ("q̈ time per call against the number of points, per solver (seed Fig. 7)", "benchmark.csv"),
    "fig_rollout": ("the fitted model simulated from each run's first state against the measured q, with the "
                    "tolerance band and the time the prediction leaves it", "rollout.csv"),
    "fig_trajectories": ("the simulated q(t) of each run (task=simulate)", "trajectory.csv"),
    "noise_estimators": ("signed error of each fitted value against σ, one line per estimator (median over "
                         "seeds) with its min–max band", "noise_estimators.csv"),
}


@dataclass
class Report:
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, "Figure"] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    #: why the run failed its own check (a fit that cannot be trusted): exit code 3
    failed_check: Optional[str] = None
    #: human-readable lines logged at the end of the run
    summary: list[str] = field(default_factory=list)
    #: figure name -> (what it shows, the table it is drawn from), for figures/README.md;
    #: a figure not named here is described by :data:`FIGURE_DESCRIPTIONS`
    figure_notes: dict[str, tuple[str, str]] = field(default_factory=dict)

    def write(self, run_dir: Path, figure_format: str = "png", dpi: int = 150) -> list[Path]:
        """Write tables, then figures, then metrics.json (the completion marker).

        Each file is written under a temporary name and renamed into place, so no file is
        ever half-written under its own name. Should any write fail (a full disk, a folder
        that is not writable), everything this call wrote is removed and a
        :class:`LagfitError` says which file and why: the folder never looks finished.
        """
        written: list[Path] = []
        made_dirs: list[Path] = []
        tmp: Path | None = None
        try:
            for folder in (run_dir, run_dir / FIGURES_DIR if self.figures else None):
                if folder is not None and not folder.is_dir():
                    folder.mkdir(parents=True, exist_ok=True)
                    made_dirs.append(folder)
            for name, table in self.tables.items():
                path = run_dir / f"{name}.csv"
                tmp = _tmp_name(path)
                table.to_csv(tmp, index=False, float_format="%.17g")
                os.replace(tmp, path)
                written.append(path)
            if self.figures:
                from lagfit_cli.io.style import save

                for name, figure in self.figures.items():
                    path = run_dir / FIGURES_DIR / f"{name}.{figure_format}"
                    tmp = _tmp_name(path)
                    save(figure, tmp, dpi=dpi, figure_format=figure_format)
                    os.replace(tmp, path)
                    written.append(path)
                path = run_dir / FIGURES_DIR / FIGURE_INDEX_FILE
                tmp = _tmp_name(path)
                tmp.write_text(figure_index(self, figure_format), encoding="utf-8")
                os.replace(tmp, path)
                written.append(path)
            path = run_dir / METRICS_FILE
            tmp = _tmp_name(path)
            tmp.write_text(json.dumps(to_json(self.metrics), indent=2) + "\n")
            os.replace(tmp, path)
            written.append(path)
        except OSError as err:
            for path in [*written, *([tmp] if tmp is not None else [])]:
                try:
                    path.unlink(missing_ok=True)
                except OSError:
                    pass
            for folder in reversed(made_dirs[1:]):
                try:
                    folder.rmdir()
                except OSError:
                    pass
            target = err.filename or tmp or run_dir
            shown = Path(str(target)).name.removesuffix(".tmp").removeprefix(".")
            raise LagfitError(
                f"cannot write the results into {printable(run_dir)} ({printable(shown)}): "
                f"{err.strerror or err}; no result file was kept"
            ) from None
        return written


def figure_index(report: Report, figure_format: str) -> str:
    """figures/README.md: one line per figure, what it shows and which table it is drawn from."""
    lines = ["# Figures of this run", "",
             "One line per figure: what it shows, and the table (CSV in the run folder) it is drawn from.", ""]
    for name in report.figures:
        what, table = report.figure_notes.get(name) or FIGURE_DESCRIPTIONS.get(name, ("", ""))
        line = f"- `{name}.{figure_format}`: {what or name}"
        lines.append(line + (f" — from {table}" if table else ""))
    return "\n".join(lines) + "\n"


def _tmp_name(path: Path) -> Path:
    """A hidden temporary name beside ``path`` (renamed onto it once complete)."""
    return path.with_name(f".{path.name}.tmp")


def to_json(value: Any) -> Any:
    """Plain JSON: non-finite floats become null, tensors and numpy scalars become numbers."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if hasattr(value, "tolist"):
        return to_json(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
