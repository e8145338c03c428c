"""Reading measured time series (``data=trajectory``) into :class:`Trajectories`.

A trajectory file is a CSV with a header row and one row per sample:

    t                 the time (``data.time_column``)
    q0 … q(D−1)       the coordinates (required)
    qd0 … qd(D−1)     measured velocities (optional; used instead of estimated ones)
    Q0 … Q(D−1)       applied generalised forces (optional; all D or none)
    run               which recording the row belongs to (optional, ``data.run_column``)

Columns named otherwise are mapped with ``data.columns`` (lagfit's name -> the file's
header, e.g. ``{t: time, q0: theta}``); other columns are ignored. ``data.path`` is a file
or a glob (``runs/*.csv``); with several files each file is a run (and a run column inside
a file splits it further). Runs may have different lengths.

Reading only reads and checks: no derivative is estimated here (``core.derivatives`` does
that). Every problem is one line naming the file, the column and the row: a missing column,
an empty or non-numeric cell, a NaN gap or infinite value, time that goes back or repeats
within a run, a run with too few samples.

Options applied while reading, in this order:

``unwrap``  coordinates (lagfit names, ``[q1]``) whose jumps of more than π are removed
            (``numpy.unwrap``, per run): angles recorded in (−π, π].
``scale``   a number, or a mapping {q0: 0.001, ...}, multiplying positions and measured
            velocities (pixels or millimetres to the units of the Lagrangian).
``trim``    [start, end] seconds dropped at each run's start and end (transients, a
            hand releasing the pendulum, the run's last frames).
``outliers`` a number k: samples whose position differs from the run's running median
            (7 samples) by more than k robust standard deviations (1.4826·MAD of those
            differences) are dropped, with a warning saying how many (velocity spikes,
            tracking glitches). null (default): nothing is dropped.
"""

from __future__ import annotations

import glob as globbing
import logging
import math
import re
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from lagfit_cli.core.datafile import read_text_table
from lagfit_cli.core.trajectory import Run, Trajectories
from lagfit_cli.errors import ArgumentError, LagfitError, printable

log = logging.getLogger("lagfit")

#: sampling intervals that differ from the median by more than this fraction: irregular
IRREGULAR_RTOL = 1e-3
#: the running median window used by outlier rejection (samples, odd)
OUTLIER_WINDOW = 7
KINDS = ("q", "qd", "Q")


def _fail(path: Path | str, message: str) -> LagfitError:
    return ArgumentError("path", f"{path}: {message}")


def _where(row: int) -> str:
    return f"row {row + 1} (file line {row + 2})"


def expand_paths(pattern: str) -> list[Path]:
    """The files ``data.path`` names: the file itself, or a glob's matches in sorted order."""
    path = Path(str(pattern)).expanduser()
    if any(ch in str(pattern) for ch in "*?["):
        matches = sorted(Path(p) for p in globbing.glob(str(path)))
        files = [p for p in matches if p.is_file()]
        if not files:
            raise _fail(pattern, "no file matches this pattern")
        return files
    if not path.exists():
        raise _fail(path, "no such file")
    if path.is_dir():
        raise _fail(path, "is a folder, not a CSV file (give a file, or a glob like DIR/*.csv)")
    return [path]


def read_trajectories(
    pattern: str | Path | Sequence[str | Path],
    dof: Optional[int] = None,
    columns: Optional[Mapping[str, str]] = None,
    time_column: str = "t",
    run_column: Optional[str] = "run",
    unwrap: Sequence[str] = (),
    scale: Any = None,
    trim: Optional[Sequence[float]] = None,
    outliers: Optional[float] = None,
    min_samples: int = 2,
    need_text: Optional[str] = None,
) -> Trajectories:
    """Read every file of ``pattern`` into :class:`Trajectories` (see the module docstring).

    Args:
        dof: the number of coordinates D (default: as many as the first file's q columns).
        columns: lagfit's name (t, run, q0, qd0, Q0, ...) -> the file's column name.
        min_samples: the fewest samples a run may keep after trimming; ``need_text`` says
            who needs them (``derivatives=spline ``).
    """
    paths = (
        [p for item in pattern for p in expand_paths(str(item))]
        if isinstance(pattern, (list, tuple))
        else expand_paths(str(pattern))
    )
    mapping = dict(columns or {})
    for name in mapping:
        if name not in ("t", "run") and not re.fullmatch(r"(q|qd|Q)\d+", name):
            raise ArgumentError(
                "columns", f"{name!r} is not one of lagfit's trajectory column names "
                "(t, run, q0.., qd0.., Q0..)"
            )
    time_name = mapping.get("t", time_column)
    run_name = mapping.get("run", run_column)
    runs: list[Run] = []
    sources: list[Path] = []
    notes: list[str] = []
    for path in paths:
        table = _read_table(path)
        if dof is None:
            dof = _count_coordinates(path, table.columns, mapping)
        found = _runs_of(path, table, dof, mapping, time_name, run_name, len(paths) > 1)
        runs.extend(found)
        sources.extend([path] * len(found))
    assert dof is not None
    names = tuple(mapping.get(f"q{i}", f"q{i}") for i in range(dof))
    unwrap_index = []
    for name in unwrap or ():
        match = re.fullmatch(r"q(\d+)", str(name))
        if not match or int(match.group(1)) >= dof:
            raise ArgumentError(
                "unwrap", f"{name!r} is not a coordinate of this system (q0..q{dof - 1})"
            )
        unwrap_index.append(int(match.group(1)))
    factors = _scale_factors(scale, dof)
    start, end = _trim(trim)
    processed = []
    for run, path in zip(runs, sources):
        kept = _process(run, unwrap_index, factors, start, end, outliers, notes)
        if kept.n_samples < min_samples:
            dropped = run.n_samples - kept.n_samples
            after = f" ({dropped} dropped by data.trim and data.outliers)" if dropped else ""
            raise _fail(
                path, f"run {run.name!r} has {kept.n_samples} samples{after}; {need_text or ''}"
                f"at least {min_samples} are needed",
            )
        processed.append(kept)
    jumps = [
        (run.name, i) for run in processed for i in range(dof)
        if i not in unwrap_index and run.n_samples > 1 and np.abs(np.diff(run.q[:, i])).max() > np.pi
    ]
    if jumps:
        names = sorted({f"q{i}" for _, i in jumps})
        notes.append(
            f"{', '.join(names)} jump{'s' if len(names) == 1 else ''} by more than π between two samples "
            f"(first in run {jumps[0][0]!r}): a wrapped angle? data.unwrap=[{','.join(names)}] unwraps "
            "it (positions in other units: ignore this, or set data.scale)"
        )
    irregular = [run.name for run in processed if not is_regular(run.t)]
    if irregular:
        notes.append(
            f"irregular sampling in {len(irregular)} of {len(processed)} runs (first: "
            f"{irregular[0]!r}): intervals differ by more than {IRREGULAR_RTOL:.0e} of the median; "
            "spline, finite_difference and weak use the actual times, savgol resamples each run "
            "to its median interval"
        )
    for note in notes:
        log.warning(f"WARNING: {note}")
    has_q = [run.Q is not None for run in processed]
    if any(has_q) and not all(has_q):
        missing = processed[has_q.index(False)].name
        raise _fail(missing, "has no force columns Q0.., but other runs do; give forces for every run or none")
    return Trajectories(tuple(processed), names, tuple(notes))


def is_regular(t: np.ndarray) -> bool:
    if t.shape[0] < 3:
        return True
    dt = np.diff(t)
    median = float(np.median(dt))
    return bool(np.all(np.abs(dt - median) <= IRREGULAR_RTOL * median))


def _read_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise _fail(path, "is not a regular file; give a CSV file")
    header, table = read_text_table(path)
    for i, column in enumerate(header):
        if header.count(column) > 1:
            raise _fail(path, f"column {printable(column)!r} appears {header.count(column)} times; give each column a unique name")
    return table


def _count_coordinates(path: Path, header: Sequence[str], mapping: Mapping[str, str]) -> int:
    present = set(header)
    dof = 0
    while mapping.get(f"q{dof}", f"q{dof}") in present:
        dof += 1
    if dof == 0:
        raise _fail(path, "has no column q0 (map yours with data.columns={q0: NAME})")
    return dof


def _numbers(path: Path, table: pd.DataFrame, column: str, what: str) -> np.ndarray:
    text = table[column].str.strip()
    numbers = pd.to_numeric(text, errors="coerce")
    nan_text = text.str.lower().isin({"nan", "+nan", "-nan", ""})
    bad = numbers.isna() & ~nan_text
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise _fail(path, f"column {printable(column)!r}, {_where(row)}: not a number: {printable(text.iloc[row], 60)!r}")
    array = numbers.to_numpy(dtype=float)
    gap = ~np.isfinite(array)
    if gap.any():
        row = int(gap.nonzero()[0][0])
        cell = text.iloc[row]
        if cell == "" or cell.lower().endswith("nan"):
            count = int(gap.sum())
            raise _fail(
                path, f"column {printable(column)!r}, {_where(row)}: a gap ({'empty cell' if cell == '' else 'NaN'}; "
                f"{count} in this column): the {what} must be recorded at every sample; drop those rows "
                "(irregular sampling is fine) or split the run there"
            )
        raise _fail(path, f"column {printable(column)!r}, {_where(row)}: value {printable(cell, 60)!r} is not finite")
    return array


def _runs_of(
    path: Path, table: pd.DataFrame, dof: int, mapping: Mapping[str, str],
    time_name: str, run_name: Optional[str], name_by_file: bool,
) -> list[Run]:
    header = list(table.columns)
    found = ", ".join(repr(printable(c, 60)) for c in header[:20]) or "none"
    if time_name not in header:
        mapped = " (data.columns maps t to it)" if "t" in mapping else ""
        raise _fail(path, f"missing time column {printable(time_name)!r}{mapped} (data.time_column); found {found}")
    extra = [
        int(m.group(2)) for c in header
        if (m := re.fullmatch(r"(q|qd|Q)(\d+)", c)) and c not in mapping.values()
    ]
    if extra and max(extra) >= dof:
        raise _fail(path, f"has columns for {max(extra) + 1} coordinates (up to index {max(extra)}), but the system has {dof}")
    file_name = {f"{k}{i}": mapping.get(f"{k}{i}", f"{k}{i}") for k in KINDS for i in range(dof)}
    for i in range(dof):
        if file_name[f"q{i}"] not in header:
            mapped = f" (data.columns maps q{i} to it)" if f"q{i}" in mapping else ""
            raise _fail(
                path, f"missing column {printable(file_name[f'q{i}'])!r}{mapped}; the system has {dof} "
                f"coordinate{'s' if dof > 1 else ''} and needs positions "
                f"{', '.join(f'q{j}' for j in range(dof))}; found {found}"
            )
    optional = {}
    for kind, what in (("qd", "velocities"), ("Q", "forces")):
        present = [file_name[f"{kind}{i}"] in header for i in range(dof)]
        if any(present) and not all(present):
            missing = file_name[f"{kind}{present.index(False)}"]
            raise _fail(path, f"missing column {printable(missing)!r}: {what} are given for some coordinates, so every one needs its column")
        optional[kind] = all(present)
    if len(table) == 0:
        raise _fail(path, "has no data rows")
    t = _numbers(path, table, time_name, "time")
    q = np.stack([_numbers(path, table, file_name[f"q{i}"], "position") for i in range(dof)], axis=1)
    qd = (
        np.stack([_numbers(path, table, file_name[f"qd{i}"], "velocity") for i in range(dof)], axis=1)
        if optional["qd"] else None
    )
    Q = (
        np.stack([_numbers(path, table, file_name[f"Q{i}"], "force") for i in range(dof)], axis=1)
        if optional["Q"] else None
    )
    if run_name and run_name in header:
        ids = table[run_name].str.strip().to_numpy()
        empty = np.nonzero(ids == "")[0]
        if empty.size:
            raise _fail(path, f"column {printable(run_name)!r}, {_where(int(empty[0]))}: empty run id")
        order = list(dict.fromkeys(ids.tolist()))  # first appearance
        groups = [(str(name), np.nonzero(ids == name)[0]) for name in order]
    else:
        groups = [("", np.arange(len(table)))]
    runs = []
    for name, rows in groups:
        label = (f"{path.name}" if name_by_file else "") + (f"#{name}" if name and name_by_file else name)
        label = label or "0"
        _check_time(path, t[rows], rows, time_name, name)
        runs.append(Run(
            t[rows], q[rows], None if qd is None else qd[rows], None if Q is None else Q[rows], label,
        ))
    return runs


def _check_time(path: Path, t: np.ndarray, rows: np.ndarray, column: str, run: str) -> None:
    dt = np.diff(t)
    where = f" in run {run!r}" if run else ""
    back = np.nonzero(dt < 0)[0]
    same = np.nonzero(dt == 0)[0]
    first = min(back[0] if back.size else math.inf, same[0] if same.size else math.inf)
    if first == math.inf:
        return
    i = int(first)
    row, prev = int(rows[i + 1]), int(rows[i])
    if dt[i] == 0:
        raise _fail(path, f"column {printable(column)!r}, {_where(row)}: duplicate time {t[i + 1]:.10g}{where} (also at row {prev + 1}); each sample needs its own time")
    raise _fail(path, f"column {printable(column)!r}, {_where(row)}: time goes back{where} ({t[i + 1]:.10g} after {t[i]:.10g}); sort the rows by time, or give each recording its own run id")


def _scale_factors(scale: Any, dof: int) -> np.ndarray:
    if scale is None:
        return np.ones(dof)
    if isinstance(scale, Mapping):
        factors = np.ones(dof)
        for name, value in scale.items():
            match = re.fullmatch(r"q(\d+)", str(name))
            if not match or int(match.group(1)) >= dof:
                raise ArgumentError("scale", f"{name!r} is not a coordinate of this system (q0..q{dof - 1})")
            factors[int(match.group(1))] = _positive("scale", value)
        return factors
    return np.full(dof, _positive("scale", scale))


def _positive(argument: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ArgumentError(argument, f"must be a number, got {value!r}") from None
    if not (math.isfinite(number) and number != 0):
        raise ArgumentError(argument, f"must be a finite, non-zero number, got {value!r}")
    return number


def _trim(trim: Optional[Sequence[float]]) -> tuple[float, float]:
    if trim is None:
        return 0.0, 0.0
    values = [trim, 0.0] if isinstance(trim, (int, float)) else list(trim)
    if len(values) != 2:
        raise ArgumentError("trim", f"must be [start, end] in seconds, got {values}")
    for v in values:
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ArgumentError("trim", f"must be two finite numbers of seconds >= 0, got {values}")
    return float(values[0]), float(values[1])


def _process(run: Run, unwrap, factors, start, end, outliers, notes: list[str]) -> Run:
    t, q, qd, Q = run.t, run.q.copy(), None if run.qd is None else run.qd.copy(), run.Q
    for i in unwrap:
        q[:, i] = np.unwrap(q[:, i])
    q = q * factors
    if qd is not None:
        qd = qd * factors
    keep = (t >= t[0] + start) & (t <= t[-1] - end)
    if outliers is not None:
        bad = _outliers(q[keep], float(outliers))
        if bad.any():
            notes.append(f"run {run.name!r}: {int(bad.sum())} outlying samples dropped (data.outliers={outliers:g})")
            idx = np.nonzero(keep)[0]
            keep[idx[bad]] = False
    take = lambda a: None if a is None else a[keep]  # noqa: E731
    return Run(t[keep], q[keep], take(qd), take(Q), run.name)


def _outliers(q: np.ndarray, k: float) -> np.ndarray:
    """(n,) True where a position is more than k robust σ from the running median."""
    from scipy.ndimage import median_filter

    if q.shape[0] < OUTLIER_WINDOW:
        return np.zeros(q.shape[0], dtype=bool)
    median = median_filter(q, size=(OUTLIER_WINDOW, 1), mode="nearest")
    dev = q - median
    spread = np.abs(dev - np.median(dev, axis=0))
    mad = 1.4826 * np.median(spread, axis=0)
    # a monotone stretch makes most deviations exactly 0: fall back to the mean deviation
    mad = np.where(mad > 0, mad, 1.2533 * spread.mean(axis=0))
    mad = np.where(mad > 0, mad, np.inf)
    return np.any(np.abs(dev) > k * mad, axis=1)
