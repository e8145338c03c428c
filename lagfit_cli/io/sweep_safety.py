"""Sweep summaries that survive hostile folders: malformed job folders, jobs that never
started, and cells a spreadsheet would run as formulas.

Kept apart from ``io.sweep`` (which reads well-formed job folders) so that each stays small:

- :func:`safe_job_row`: a job folder whose files cannot be read (metrics.json not an object,
  overrides.yaml broken or holding a python tag, error.txt not UTF-8, ...) becomes one
  ``failed`` row with the reason; the other jobs are summarised as usual.
- :func:`escape_formulas`: text cells starting with ``= + - @`` (and not numbers) get a
  leading ``'``, so that opening summary.csv in a spreadsheet runs nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import yaml

from lagfit_cli.errors import printable

#: the exit code a malformed or never-started job counts as (the run did not end cleanly)
EXIT_UNREADABLE = 1
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_job_row(job_row: Callable[[Path, Path], dict], job_dir: Path, sweep_dir: Path,
                 failed: str) -> dict[str, Any]:
    """``job_row(job_dir, sweep_dir)``, or a ``failed`` row naming what could not be read."""
    try:
        return job_row(job_dir, sweep_dir)
    except (OSError, ValueError, TypeError, AttributeError, KeyError, yaml.YAMLError) as err:
        reason = printable(str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__, 200)
        name = str(job_dir.relative_to(sweep_dir))
        return {
            "job": int(name) if name.isdigit() else name,  # the job number, as planned rows use
            "status": failed,
            "error": f"unreadable job folder: {reason}",
            "exit_code": EXIT_UNREADABLE,
            "dir": str(job_dir.relative_to(sweep_dir)),
            "overrides": "",
        }


def check_job_files(job_dir: Path) -> None:
    """Raise ValueError naming the first malformed file of a job folder (read as io.sweep does)."""
    overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text(encoding="utf-8"))
    if overrides is not None and not isinstance(overrides, list):
        raise ValueError(f".hydra/overrides.yaml holds a {type(overrides).__name__}, not a list of overrides")
    metrics = job_dir / "metrics.json"
    if metrics.is_file():
        try:
            value = json.loads(metrics.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise ValueError(f"metrics.json is not UTF-8 text ({err.reason})") from None
        except json.JSONDecodeError:
            return  # io.sweep reports it as an unreadable metrics.json
        if not isinstance(value, dict):
            raise ValueError(f"metrics.json holds a JSON {type(value).__name__}, not an object")
    error = job_dir / "error.txt"
    if error.is_file():
        try:
            error.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"error.txt is not UTF-8 text ({err.reason})") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def escape_formulas(table: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells cannot start a spreadsheet formula (a leading ``'`` added)."""

    def escape(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(FORMULA_STARTS) and not _is_number(value):
            return "'" + value
        return value

    out = table.copy()
    for column in out.columns:
        if not pd.api.types.is_numeric_dtype(out[column]):
            out[column] = out[column].map(escape)
    out.columns = [escape(str(c)) for c in out.columns]
    return out
