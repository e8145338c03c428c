"""``data=csv``: the user's own measurements (q, q̇, q̈) from a CSV file.

The file has a header row and one row per measured state. lagfit reads, for a system with
D coordinates, the columns

    q0 … q(D−1)      the coordinates
    qd0 … qd(D−1)    their velocities q̇
    qdd0 … qdd(D−1)  their accelerations q̈ (the fit's targets)

Other columns (a time stamp, a label) are ignored. Columns named otherwise in the file are
mapped with ``data.columns``, lagfit's name -> the file's header, e.g.
``data.columns="{q0: theta, qd0: omega, qdd0: alpha}"``.

Every problem is one line naming the file, the column and the row (rows are counted from
1 after the header, and the file line is given too): a missing column, an empty or
non-numeric cell, a NaN or infinite value, fewer rows than parameters, or columns for more
coordinates than the system has.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch

from lagfit_cli.core.data import DataRequest, Dataset, register_dataset
from lagfit_cli.errors import ArgumentError, LagfitError, printable

KINDS = ("q", "qd", "qdd")


def column_names(dof: int) -> list[str]:
    """lagfit's names of the columns a D-coordinate system needs, q's first."""
    return [f"{kind}{i}" for kind in KINDS for i in range(dof)]


def _fail(path: Path, message: str) -> LagfitError:
    return ArgumentError("path", f"{path}: {message}")


def _where(row: int) -> str:
    return f"row {row + 1} (file line {row + 2})"


def read_text_table(path: Path) -> tuple[list[str], pd.DataFrame]:
    """The CSV file as text cells: its header (as written: pandas would rename duplicates)
    and its rows under those names; an unreadable file is one line naming it."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True, header=None)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise _fail(path, f"not a readable CSV file ({printable(str(err).splitlines()[0])})") from None
    except OSError as err:
        raise _fail(path, f"cannot read it: {err.strerror or err}") from None
    header = [str(c).strip() for c in raw.iloc[0]] if len(raw) else []
    table = raw.iloc[1:].reset_index(drop=True)
    table.columns = header
    return header, table


def read_states(
    path: Path, dof: int, mapping: Mapping[str, str], min_rows: int
) -> dict[str, torch.Tensor]:
    """Read and check the file; return {"q": (N, D), "qd": (N, D), "qdd": (N, D)} float64."""
    unknown = [name for name in mapping if _index(name) < 0]
    if unknown:
        raise ArgumentError(
            "columns", f"{unknown[0]!r} is not one of lagfit's column names "
            f"(q0.., qd0.., qdd0..; here {', '.join(column_names(dof))})"
        )
    if not path.exists():
        raise _fail(path, "no such file")
    if path.is_dir():
        raise _fail(path, "is a folder, not a CSV file")
    if not path.is_file():
        raise _fail(path, "is not a regular file (a device, pipe or socket); give a CSV file")
    targets: dict[str, list[str]] = {}
    for name, column in mapping.items():
        targets.setdefault(column, []).append(name)
    shared = next((names for names in targets.values() if len(names) > 1), None)
    if shared:
        raise ArgumentError(
            "columns", f"maps {' and '.join(shared)} to the same column "
            f"{printable(mapping[shared[0]])!r}; each of lagfit's columns needs its own"
        )
    header, table = read_text_table(path)
    file_name = {name: mapping.get(name, name) for name in column_names(dof)}
    # unmapped names that collide with a mapped one are many-to-one maps too
    reads: dict[str, str] = {}
    for name, column in file_name.items():
        if column in reads:
            raise ArgumentError(
                "columns", f"{reads[column]} and {name} would both read the file's column "
                f"{printable(column)!r}; map each to its own column"
            )
        reads[column] = name
    for column in file_name.values():
        positions = [i + 1 for i, c in enumerate(header) if c == column]
        if len(positions) > 1:
            raise _fail(
                path, f"column {printable(column)!r} appears {len(positions)} times (columns "
                f"{', '.join(map(str, positions))}); give each column a unique name"
            )

    # columns for more coordinates than the system has
    extra = [
        int(m.group(2))
        for c in table.columns
        if (m := re.fullmatch(r"(q|qd|qdd)(\d+)", c)) and c not in mapping.values()
    ]
    extra += [_index(name) for name in mapping]
    if extra and max(extra) >= dof:
        raise _fail(
            path,
            f"has columns for {max(extra) + 1} coordinates (up to q{max(extra)}), but the "
            f"system has {dof} (columns {', '.join(column_names(dof))})",
        )
    for name in column_names(dof):
        if file_name[name] not in table.columns:
            mapped = f" (data.columns maps {name} to it)" if name in mapping else ""
            found = ", ".join(repr(printable(c, 60)) for c in table.columns[:20])
            found += ", ..." if len(table.columns) > 20 else ""
            raise _fail(
                path,
                f"missing column {printable(file_name[name])!r}{mapped}; the system has {dof} coordinate"
                f"{'s' if dof > 1 else ''} and needs {', '.join(column_names(dof))}; "
                f"found {found or 'none'}",
            )
    if len(table) < min_rows:
        raise _fail(
            path,
            f"has {len(table)} data rows; fitting {min_rows} parameters needs at least {min_rows}",
        )

    values = {}
    for name in column_names(dof):
        column = file_name[name]
        text = table[column].str.strip()
        numbers = pd.to_numeric(text, errors="coerce")
        bad = numbers.isna() & ~text.str.lower().isin({"nan", "+nan", "-nan"})
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            cell = text.iloc[row]
            what = "empty cell" if cell == "" else f"not a number: {printable(cell, 60)!r}"
            raise _fail(path, f"column {printable(column)!r}, {_where(row)}: {what}")
        array = numbers.to_numpy(dtype=float)
        not_finite = ~np.isfinite(array)
        if not_finite.any():
            row = int(not_finite.nonzero()[0][0])
            cell = text.iloc[row]
            raise _fail(path, f"column {printable(column)!r}, {_where(row)}: value {printable(cell, 60)!r} is not finite")
        values[name] = torch.tensor(array, dtype=torch.float64)

    return {
        kind: torch.stack([values[f"{kind}{i}"] for i in range(dof)], dim=1) for kind in KINDS
    }


def _index(name: str) -> int:
    match = re.fullmatch(r"(q|qd|qdd)(\d+)", name)
    return int(match.group(2)) if match else -1


@register_dataset("csv")
def csv_dataset(request: DataRequest) -> Dataset:
    """The user's measured states and accelerations, as they are (no synthetic targets)."""
    raw = request.spec.get("path")
    if not raw:
        raise ArgumentError("path", "data=csv needs the file to read: data.path=FILE.csv")
    path = Path(str(raw)).expanduser()
    mapping = dict(request.spec.get("columns") or {})
    states = read_states(path, request.system.dof, mapping, min_rows=request.system.n_params)
    return Dataset(states["q"], states["qd"], states["qdd"])
