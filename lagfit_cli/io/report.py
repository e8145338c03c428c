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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas and matplotlib: imported by whoever makes the tables and figures
    import pandas as pd
    from matplotlib.figure import Figure

METRICS_FILE = "metrics.json"
#: a failed job's message (line 1) and ``exit code N`` (line 2)
ERROR_FILE = "error.txt"
#: exit codes: 0 ok, 1 lagfit's own bug, 2 bad input, 3 a failed check or fit
EXIT_OK, EXIT_CRASH, EXIT_BAD_INPUT, EXIT_CHECK_FAILED = 0, 1, 2, 3
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
        """Write tables, then figures, then metrics.json (the completion marker)."""
        run_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for name, table in self.tables.items():
            path = run_dir / f"{name}.csv"
            table.to_csv(path, index=False, float_format="%.17g")
            written.append(path)
        if self.figures:
            figure_dir = run_dir / FIGURES_DIR
            figure_dir.mkdir(exist_ok=True)
            import matplotlib.pyplot as plt

            for name, figure in self.figures.items():
                path = figure_dir / f"{name}.{figure_format}"
                # fixed metadata keeps the files identical for identical results
                metadata = {"Software": None} if figure_format == "png" else {"Creator": None}
                if figure_format == "svg":
                    metadata["Date"] = None
                if figure_format == "pdf":
                    metadata["CreationDate"] = None
                # svg: a fixed salt makes the clip-path ids the same from run to run
                with plt.rc_context({"svg.hashsalt": "lagfit"}):
                    figure.savefig(path, dpi=dpi, metadata=metadata)
                plt.close(figure)
                written.append(path)
        path = run_dir / METRICS_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(to_json(self.metrics), indent=2) + "\n")
        os.replace(tmp, path)
        written.append(path)
        return written


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
