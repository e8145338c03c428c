"""Sweep summaries: one table row per job of a multirun, and the figure drawn from it.

A sweep folder (``outputs/multirun/DATE/TIME/``) holds one folder per job, each with Hydra's
``.hydra/overrides.yaml`` and either ``metrics.json`` (a finished job) or ``error.txt`` (a
failed one). :func:`collect` reads those folders only, so the same summary comes out whether
the jobs ran in this process, in joblib workers, on a SLURM cluster, or were interrupted:

    summary.csv   one row per job: its overrides as columns, status, error, key metrics
    summary.png   the headline metric against the swept numeric parameter

:class:`SweepSummary` is the Hydra callback (``hydra.callbacks`` in conf/config.yaml) that
writes both when a multirun ends; ``lagfit summarize DIR`` does the same for any folder.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import yaml

from lagfit_cli.errors import LagfitError
from lagfit_cli.io.report import ERROR_FILE, EXIT_CRASH, METRICS_FILE
from lagfit_cli.io.sweep_safety import check_job_files, safe_job_row

SUMMARY_CSV = "summary.csv"
SUMMARY_FIGURE = "summary"

OK, FAILED, CHECK_FAILED, INCOMPLETE = "ok", "failed", "check_failed", "incomplete"
#: a planned job (multirun.yaml) with no folder and nothing known of it
NOT_STARTED = "not_started"
#: error.txt's optional status line (e.g. "status timeout", written by a job stopped at its limit)
STATUS_LINE = re.compile(r"^status (\w+)$")
#: exit code of a job that left neither metrics.json nor an exit code in error.txt
EXIT_UNKNOWN = EXIT_CRASH

#: the metrics copied into the summary (when a job reports them), in this order
KEY_METRICS = ("best_loss", "max_ratio_rel_error", "runtime_s", "fit_s", "n_starts", "n_converged", "n_diverged")
#: what a job ran on, copied when a job reports it (and shown when every job shares it)
CONTEXT_METRICS = ("system", "solver", "noise_apply_to", "n_points")
#: keys that repeat a measurement rather than change it: aggregated, never an x axis of their own
REPEAT_KEYS = ("seed",)
#: the summary figure's panels, first = the headline metric
PLOT_METRICS = ("max_ratio_rel_error", "best_loss", "runtime_s")
#: the exit-code line of error.txt, written by app.py below the message
EXIT_LINE = re.compile(r"^exit code (\d+)")


# --------------------------------------------------------------------------- reading jobs


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Every job folder under ``sweep_dir`` (a folder holding ``.hydra/overrides.yaml``)."""
    found = [p.parent.parent for p in sweep_dir.rglob(".hydra/overrides.yaml")]
    return sorted((p for p in found if p != sweep_dir), key=lambda p: _natural_key(p.relative_to(sweep_dir)))


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def read_overrides(job_dir: Path) -> list[str]:
    overrides = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text()) or []
    return [str(o) for o in overrides]


def override_columns(overrides: list[str]) -> dict[str, str]:
    """``["+a.b=1", "system=harmonic"]`` -> ``{"a.b": "1", "system": "harmonic"}`` (deletions skipped)."""
    columns = {}
    for override in overrides:
        if override.startswith("~") or "=" not in override:
            continue
        key, value = override.split("=", 1)
        columns[key.lstrip("+")] = value
    return columns


def read_job_num(job_dir: Path) -> Optional[int]:
    try:
        hydra_cfg = yaml.safe_load((job_dir / ".hydra" / "hydra.yaml").read_text())
        return int(hydra_cfg["hydra"]["job"]["num"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        return None


def read_error(job_dir: Path) -> tuple[Optional[str], Optional[int]]:
    """(message, exit code) from a job's error.txt; (None, None) when it has none."""
    path = job_dir / ERROR_FILE
    if not path.is_file():
        return None, None
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    message = lines[0] if lines else "failed (empty error.txt)"
    codes = [int(m.group(1)) for m in map(EXIT_LINE.match, lines[1:]) if m]
    return message, (codes[0] if codes else None)


def read_status(job_dir: Path) -> Optional[str]:
    """The status named by a job's error.txt (``status timeout``), or None (then: failed)."""
    path = job_dir / ERROR_FILE
    if not path.is_file():
        return None
    found = [m.group(1) for m in map(STATUS_LINE.match, path.read_text().splitlines()[1:]) if m]
    return found[0] if found else None


def metric_columns(metrics: dict[str, Any]) -> dict[str, Any]:
    """The key metrics of one job, flattened: best loss, each ratio's estimate, its standard
    error (where the fit estimated one) and its error against the truth, runtime."""
    row: dict[str, Any] = {}
    for key in CONTEXT_METRICS + KEY_METRICS:
        if key in metrics:
            row[key] = metrics[key]
    errors = (metrics.get("uncertainty") or {}).get("values") or {}
    for name, ratio in (metrics.get("ratios") or {}).items():
        row[name] = ratio.get("estimate")
        if name in errors:
            row[f"{name}_std_error"] = errors[name].get("std_error")
        row[f"{name}_rel_error"] = ratio.get("rel_error")
    return row


def job_row(job_dir: Path, sweep_dir: Path) -> dict[str, Any]:
    """One summary row: where the job is, what it was asked, how it ended, what it measured."""
    check_job_files(job_dir)  # raises ValueError on a malformed file (see safe_job_row)
    overrides = read_overrides(job_dir)
    num = read_job_num(job_dir)
    row: dict[str, Any] = {"job": num if num is not None else str(job_dir.relative_to(sweep_dir))}
    message, code = read_error(job_dir)
    metrics_path = job_dir / METRICS_FILE
    metrics: dict[str, Any] = {}
    if metrics_path.is_file():
        try:
            metrics = json.loads(metrics_path.read_text())
        except json.JSONDecodeError as err:
            message, code = message or f"unreadable metrics.json: {err}", code or EXIT_UNKNOWN
            metrics = {}
    if metrics:
        status = metrics.get("status", OK)
        if status != OK and code is None:
            code = EXIT_UNKNOWN
        row.update(status=status, error=message or "", exit_code=code or 0)
    elif message is not None:
        row.update(status=read_status(job_dir) or FAILED, error=message, exit_code=code if code is not None else EXIT_UNKNOWN)
    else:
        row.update(status=INCOMPLETE, error="neither metrics.json nor error.txt: interrupted or still running",
                   exit_code=EXIT_UNKNOWN)
    row.update(override_columns(overrides))
    row.update(metric_columns(metrics))
    row["dir"] = str(job_dir.relative_to(sweep_dir))
    row["overrides"] = " ".join(overrides)
    return row


def planned_row(num: int, overrides: list[str], sweep_dir: Path,
                cluster: Optional[tuple[str, str]]) -> dict[str, Any]:
    """The row of a planned job without a job folder: what the cluster says of it, or not_started."""
    status, message = cluster or (NOT_STARTED, "no job folder: the job has not started (or never will)")
    row: dict[str, Any] = {"job": num, "status": status, "error": message, "exit_code": EXIT_UNKNOWN}
    row.update(override_columns(overrides))
    folder = sweep_dir / str(num)
    row["dir"] = str(num) if folder.is_dir() else ""
    row["overrides"] = " ".join(overrides)
    return row


def collect(
    sweep_dir: Path,
    cluster: Optional[dict[int, tuple[str, str]]] = None,
    planned: Optional[list[list[str]]] = None,
) -> pd.DataFrame:
    """The summary table of a sweep folder: one row per planned job (``multirun.yaml``), from its
    folder where it has one. ``cluster``: {job number: (status, message)} from the scheduler,
    for jobs that left no result (pending, running, cancelled, timeout, ...)."""
    sweep_dir = Path(sweep_dir)
    cluster = cluster or {}
    if not sweep_dir.is_dir():
        raise LagfitError(f"summarize: {sweep_dir} is not a folder")
    jobs = job_dirs(sweep_dir)
    if not jobs and not planned:
        raise LagfitError(f"summarize: no job folders (with .hydra/overrides.yaml) under {sweep_dir}")
    rows = [safe_job_row(job_row, job, sweep_dir, FAILED) for job in jobs]
    for row in rows:
        if row["status"] == INCOMPLETE and row["job"] in cluster:
            row["status"], row["error"] = cluster[row["job"]]
    seen = {row["job"] for row in rows}
    rows += [planned_row(num, overrides, sweep_dir, cluster.get(num))
             for num, overrides in enumerate(planned or []) if num not in seen]
    rows.sort(key=lambda row: (0, row["job"], "") if isinstance(row["job"], int) else (1, 0, row["job"]))
    table = pd.DataFrame(rows)
    first = ["job", "status", "error"]
    last = ["exit_code", "dir", "overrides"]
    middle = [c for c in table.columns if c not in first + last]
    return table[first + middle + last]


def exit_code(table: pd.DataFrame) -> int:
    """0 for a clean sweep, else the largest exit code of its jobs."""
    codes = pd.to_numeric(table["exit_code"], errors="coerce").fillna(EXIT_UNKNOWN)
    return int(codes.max()) if len(codes) else 0


def headline(table: pd.DataFrame) -> str:
    """One line: how many jobs ended how."""
    counts = table["status"].value_counts()
    parts = [f"{counts.get(OK, 0)} of {len(table)} jobs ok"]
    parts += [f"{n} {status.replace('_', ' ')}" for status, n in counts.items() if status != OK]
    return ", ".join(parts)


# --------------------------------------------------------------------------- the figure's plan


@dataclass
class Series:
    label: str
    #: x value of every finished job in the series (str for a categorical x)
    x: list
    y: dict[str, list[float]]


@dataclass
class PlotPlan:
    """What summary.png shows, decided from the table alone (no drawing here)."""

    x_key: Optional[str]
    x_numeric: bool
    x_order: list
    metrics: list[str]
    series: list[Series]
    repeat_keys: list[str]
    #: overrides and settings shared by every job, for the subtitle
    constants: dict[str, str] = field(default_factory=dict)
    n_failed: int = 0
    ratio_names: list[str] = field(default_factory=list)
    #: how many values the repeat keys take (e.g. 4 seeds)
    n_repeats: int = 1
    #: reported values with a finite ``{name}_std_error`` in some finished job: drawn with
    #: error bars (Series.y carries ``{name}`` and ``{name}_std_error``)
    error_names: list[str] = field(default_factory=list)


def swept_keys(table: pd.DataFrame) -> list[str]:
    """Override columns that take more than one value across the jobs, in override order."""
    keys = []
    for job_overrides in table["overrides"]:
        for key in override_columns(str(job_overrides).split()):
            if key in table and key not in keys and table[key].astype(str).nunique() > 1:
                keys.append(key)
    return keys


def _as_float(value: Any) -> Optional[float]:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def is_numeric(values: pd.Series) -> bool:
    return all(_as_float(v) is not None for v in values.dropna())


def plot_plan(table: pd.DataFrame) -> PlotPlan:
    """Pick the x axis (the swept numeric parameter with most values, else a categorical one),
    one series per value of the other swept keys, and aggregate over repeat keys (seed)."""
    keys = swept_keys(table)
    candidates = [k for k in keys if k not in REPEAT_KEYS] or keys
    numeric = [k for k in candidates if is_numeric(table[k])]
    if numeric:
        x_key: Optional[str] = max(numeric, key=lambda k: table[k].nunique())
    else:
        x_key = candidates[0] if candidates else None
    x_numeric = x_key is not None and x_key in numeric
    repeats = [k for k in keys if k in REPEAT_KEYS and k != x_key]
    group_keys = [k for k in keys if k != x_key and k not in repeats]

    done = table[table["status"].isin([OK, CHECK_FAILED])]
    metrics = [m for m in PLOT_METRICS if m in done and pd.to_numeric(done[m], errors="coerce").notna().any()]
    error_names = [c[: -len("_std_error")] for c in done.columns if c.endswith("_std_error")
                   and c[: -len("_std_error")] in done
                   and pd.to_numeric(done[c], errors="coerce").notna().any()]
    value_columns = [c for name in error_names for c in (name, f"{name}_std_error")]

    if x_key is None:
        x_order: list = ["all jobs"]
    elif x_numeric:
        x_order = sorted({_as_float(v) for v in done[x_key].dropna()})
    else:
        x_order = list(dict.fromkeys(done[x_key].astype(str)))

    series = []
    groups = done.groupby(group_keys, sort=False, dropna=False) if group_keys else [((), done)]
    for values, rows in groups:
        values = values if isinstance(values, tuple) else (values,)
        label = ", ".join(f"{k}={v}" for k, v in zip(group_keys, values)) or "all jobs"
        if x_key is None:
            xs = ["all jobs"] * len(rows)
        elif x_numeric:
            xs = [_as_float(v) for v in rows[x_key]]
        else:
            xs = list(rows[x_key].astype(str))
        ys = {m: [_nan_if_missing(v) for v in rows[m]] for m in metrics + value_columns}
        series.append(Series(label, xs, ys))

    constants = {}
    described = set(override_columns(" ".join(map(str, table["overrides"])).split())) | set(CONTEXT_METRICS)
    for key in table.columns:
        if key in described and key not in keys:
            values = table[key].dropna().astype(str).unique()
            if len(values) == 1:
                constants[key] = values[0]
    ratio_names = [c[: -len("_rel_error")] for c in table.columns
                   if c.endswith("_rel_error") and c != "max_ratio_rel_error"]
    n_failed = int((~table["status"].isin([OK, CHECK_FAILED])).sum())
    n_repeats = len(table[repeats].drop_duplicates()) if repeats else 1
    return PlotPlan(x_key, x_numeric, x_order, metrics, series, repeats, constants, n_failed, ratio_names,
                    n_repeats, error_names)


def _nan_if_missing(value: Any) -> float:
    number = _as_float(value)
    return float("nan") if number is None else number


def axis_scale(values: list[float], decades: int = 2) -> tuple[str, Optional[float]]:
    """'linear', or 'log' / 'symlog' (with its linear threshold, when 0 is among the values)
    for positive values spanning at least ``decades`` decades."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    positive = [v for v in finite if v > 0]
    if len(positive) < 2 or any(v < 0 for v in finite):
        return "linear", None
    if max(positive) / min(positive) < 10**decades:
        return "linear", None
    if any(v == 0 for v in finite):
        return "symlog", min(positive)
    return "log", None
