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


@dataclass
class Report:
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, "Figure"] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    #: why the run failed its own check (a fit that cannot be trusted): exit code 3
    failed_check: Optional[str] = None
    #: human-readable lines logged at the end of the run
    summary: list[str] = field(default_factory=list)

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
                import matplotlib.pyplot as plt

                for name, figure in self.figures.items():
                    path = run_dir / FIGURES_DIR / f"{name}.{figure_format}"
                    # fixed metadata keeps the files identical for identical results
                    metadata = {"Software": None} if figure_format == "png" else {"Creator": None}
                    if figure_format == "svg":
                        metadata["Date"] = None
                    if figure_format == "pdf":
                        metadata["CreationDate"] = None
                    tmp = _tmp_name(path)
                    # svg: a fixed salt makes the clip-path ids the same from run to run
                    with plt.rc_context({"svg.hashsalt": "lagfit"}):
                        figure.savefig(tmp, dpi=dpi, metadata=metadata, format=figure_format)
                    plt.close(figure)
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
