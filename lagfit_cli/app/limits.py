"""Resource estimate before any work: refuse a run that cannot fit, in one line, at once.

From the composed config alone (and the system's size), :func:`check` estimates what the
run's biggest pieces need and refuses, naming the key that drives the estimate, when

- the peak memory exceeds ``limits.max_memory_gb`` (``null``: the memory available now,
  ``MemAvailable`` of /proc/meminfo, where there is one);
- the work, points × starts × parameters × iterations (+ landscape cells × points ×
  parameters), exceeds ``limits.max_work``;
- a figure has more than ``limits.max_figure_pixels`` pixels (figure size × dpi²);
- ``threads`` exceeds the machine's cores.

The memory estimate is an upper bound of the largest terms, not an exact account: the
per-iteration history is bounded by ``report.history_max_rows`` (see core.fit), so no term
grows with ``optim.iters``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from lagfit_cli.errors import LagfitError

BYTES = 8  # float64
#: (N, D)-sized float64 tensors alive at once while a synthetic dataset is made (autodiff graph)
DATA_TENSORS = 40
#: (B, N, D)-sized tensors alive at once in one fit step (q̈, residual, adjoint, graph)
STEP_TENSORS = 8
#: bytes per figure pixel at its peak (RGBA buffer, its copy for the PNG encoder)
PIXEL_BYTES = 8
#: how the widest figure grows: inches per coordinate (Fig. 1 draws one panel per coordinate)
FIGURE_INCHES_PER_DOF, FIGURE_MIN_WIDTH, FIGURE_HEIGHT = 5.8, 12.5, 5.4


@dataclass
class Estimate:
    key: str  #: the config key that drives this term
    bytes: float
    what: str  #: how it was counted


def available_memory() -> Optional[float]:
    """MemAvailable of /proc/meminfo in bytes (None where there is none)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _f(value: float) -> float:
    """float(value), inf for integers beyond float range."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def human(n_bytes: float) -> str:
    if not math.isfinite(n_bytes):
        return "more than 1e308 B"
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= size:
            return f"{n_bytes / size:.3g} {unit}"
    return f"{n_bytes:.0f} B"


def count(n: float) -> str:
    """A count for a message: 1,234,567 or 1.2e+40 (never hundreds of digits)."""
    if n < 1e15:
        return f"{int(n):,}"
    try:
        return f"{float(n):.2g}"
    except OverflowError:
        return f"about 10^{int(math.log10(n))}"


def system_size(cfg: DictConfig) -> tuple[int, int]:
    """(D, P): the system's coordinates and parameters."""
    from lagfit_cli.core.systems import build_system

    system = build_system(OmegaConf.to_container(cfg.system, resolve=True))
    return system.dof, system.n_params


def data_points(cfg: DictConfig, dof: int) -> tuple[float, str]:
    """(N, the key that sets it); N = 0 for a file (it is as large as it is)."""
    if cfg.data.name == "grid":
        from lagfit_cli.core.data import MAX_GRID_POINTS

        if 2 * dof * math.log10(max(cfg.data.n, 1)) > math.log10(MAX_GRID_POINTS) + 1:
            return 0.0, "data.n"  # the grid's own limit refuses it, with its message
        return float(cfg.data.n) ** (2 * dof), "data.n"
    if cfg.data.name == "uniform":
        return _f(cfg.data.n_points), "data.n_points"
    # a file: about one row per 8 characters of each of its 3·D columns (an upper estimate)
    try:
        size = os.stat(os.path.expanduser(str(cfg.data.path))).st_size
    except (OSError, TypeError, ValueError):
        size = 0
    return max(1.0, size / (3 * dof * 8)), "data.path"


def history_rows(cfg: DictConfig) -> tuple[float, str]:
    rows = _f(cfg.optim.iters + 1) / _f(max(1, cfg.report.history_every))
    cap = cfg.report.history_max_rows
    if cap and rows > cap:
        return float(cap), "report.history_max_rows"
    return float(rows), "optim.iters"


def landscape_cells(cfg: DictConfig) -> tuple[float, str]:
    """Cells of the largest loss landscape the task draws (task.resolution²)."""
    resolution = cfg.task.get("resolution")
    if resolution is None or (cfg.task.name == "fit" and not cfg.report.figures):
        return 0.0, "task.resolution"
    return _f(resolution) ** 2, "task.resolution"


def figure_pixels(cfg: DictConfig, dof: int, n_params: int) -> float:
    if not cfg.report.figures:
        return 0.0
    width = max(FIGURE_MIN_WIDTH, FIGURE_INCHES_PER_DOF * dof, 5.0 * (1 + n_params))
    return width * FIGURE_HEIGHT * _f(cfg.report.dpi) ** 2


def estimates(cfg: DictConfig, dof: int, n_params: int) -> tuple[list[Estimate], float, str]:
    """The memory terms, the work (and the key that drives it)."""
    n, data_key = data_points(cfg, dof)
    starts = _f(cfg.init.n_starts)
    rows, rows_key = history_rows(cfg)
    cells, cells_key = landscape_cells(cfg)
    pixels = figure_pixels(cfg, dof, n_params)
    fits = cfg.task.name in ("fit", "seed_report") or (cfg.task.name == "landscape" and cfg.init.n_starts > 1)
    terms = [
        Estimate(data_key, n * dof * BYTES * DATA_TENSORS, f"{count(n)} data points × {dof} coordinates"),
        Estimate("report.dpi", pixels * PIXEL_BYTES, f"{count(pixels)} pixels in the largest figure"),
        Estimate(cells_key, cells * (n_params + 2) * BYTES * 2, f"{count(cells)} landscape cells"),
    ]
    if fits:
        terms += [
            Estimate("init.n_starts" if starts >= n else data_key, starts * n * dof * BYTES * STEP_TENSORS,
                     f"{count(starts)} starts × {count(n)} points"),
            # the history tensors, their numpy copy and the fit_history table
            Estimate(rows_key if rows > starts else "init.n_starts", rows * starts * (n_params + 5) * BYTES * 3,
                     f"{count(rows)} history rows × {count(starts)} starts"),
        ]
    iters = _f(cfg.optim.iters) + 1
    work = (n * starts * n_params * iters if fits else 0.0) + cells * n * n_params
    work_key = "optim.iters" if fits and iters > max(starts, cells) else (
        "init.n_starts" if fits and starts >= cells else cells_key)
    if fits and n > max(starts, iters, cells):
        work_key = data_key
    return terms, work, work_key


def check(cfg: DictConfig) -> None:
    """Refuse (LagfitError, one line) a run whose estimate exceeds the machine or ``limits``."""
    limits = cfg.limits
    cores = os.cpu_count() or 1
    if cfg.threads > cores:
        raise LagfitError(
            f"threads: {count(cfg.threads)} is more than the {cores} CPU cores of this machine; "
            f"use 1..{cores} (or 0: all of them)"
        )
    dof, n_params = system_size(cfg)
    terms, work, work_key = estimates(cfg, dof, n_params)

    pixels = figure_pixels(cfg, dof, n_params)
    if limits.max_figure_pixels is not None and pixels > limits.max_figure_pixels:
        raise LagfitError(
            f"report.dpi: {cfg.report.dpi} dpi makes figures of about {count(pixels)} pixels, "
            f"more than limits.max_figure_pixels={limits.max_figure_pixels:g}; lower report.dpi "
            "(or set report.figures=false)"
        )

    if limits.max_memory_gb is not None:
        budget, source = float(limits.max_memory_gb) * 1e9, f"limits.max_memory_gb={limits.max_memory_gb:g}"
    else:
        budget, source = available_memory(), "available memory (MemAvailable)"
    total = sum(t.bytes for t in terms)
    if budget is not None and total > budget:
        worst = max(terms, key=lambda t: t.bytes)
        raise LagfitError(
            f"{worst.key}: the run would need about {human(total)} of memory ({worst.what}: "
            f"{human(worst.bytes)}), more than the {human(budget)} of {source}; lower {worst.key}"
        )
    if limits.max_work is not None and work > limits.max_work:
        raise LagfitError(
            f"{work_key}: the run would take about {work:.2g} point-evaluations (points × starts "
            f"× parameters × iterations + landscape cells × points × parameters), more than "
            f"limits.max_work={limits.max_work:g}; lower {work_key} (or raise limits.max_work)"
        )
