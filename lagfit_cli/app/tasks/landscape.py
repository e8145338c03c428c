"""task=landscape: the loss over a grid of two parameters (seed Fig. 2), and with
init.n_starts > 1 the gradient-descent paths from random starts over it (seed Fig. 8)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from lagfit_cli.core.data import Dataset
from lagfit_cli.errors import LagfitError
from lagfit_cli.core.api import IDENTIFIABLE
from lagfit_cli.core.fit import STATUSES, relative_error, reported_values
from lagfit_cli.core.landscape import Landscape, followers, landscape_pair, loss_landscape, parameter_grid
from lagfit_cli.io.report import Report
from . import register_task
from lagfit_cli.app.tasks.common import Problem, prepare_problem, problem_metrics
from lagfit_cli.app.tasks.fit import run_fit
from lagfit_cli.io.tables import history_table


#: a start's status as the console names it
STATUS_NAMES = {"converged": "converged", "stalled": "stalled", "max_iters": "reached the iteration limit",
                "diverged": "diverged"}


def landscape_indices(cfg: DictConfig, problem: Problem) -> tuple[int, int]:
    """Indices of task.x and task.y (defaults: a pair with a valley, see landscape_pair)."""
    names = problem.system.param_names
    if len(names) < 2:
        raise LagfitError(f"task: a landscape needs two parameters; {problem.system.name!r} has {len(names)}")
    default = landscape_pair(problem.system, None, cfg.system.gauge)
    chosen = []
    for key, value, fallback in (("x", cfg.task.x, default[0]), ("y", cfg.task.y, default[1])):
        if value is None:
            chosen.append(fallback)
        elif value in names:
            chosen.append(names.index(value))
        else:
            raise LagfitError(
                f"task.{key}: {value!r} is not a parameter of {problem.system.name!r} ({', '.join(names)})"
            )
    if chosen[0] == chosen[1]:
        raise LagfitError(f"task.y: must differ from task.x (both are {names[chosen[0]]!r})")
    return chosen[0], chosen[1]


def axis_range(value, truth: float) -> tuple[float, float]:
    """task.x_range/y_range, or [0.05, 2] × the true value ([−1, 1] when it is 0)."""
    if value is not None:
        return float(value[0]), float(value[1])
    if truth == 0:
        return -1.0, 1.0
    ends = (0.05 * truth, 2.0 * truth)
    return min(ends), max(ends)


def landscape_on(cfg: DictConfig, problem: Problem, data: Dataset, ix: int, iy: int) -> Landscape:
    """The loss of ``data`` over the configured grid of parameters ix, iy, as one batch."""
    res = cfg.task.resolution
    axes = []
    for i, value in ((ix, cfg.task.x_range), (iy, cfg.task.y_range)):
        low, high = axis_range(value, float(problem.truth[i]))
        axes.append(torch.linspace(low, high, res, dtype=problem.dtype, device=problem.device))
    return loss_landscape(
        problem.system, problem.solver, data.q, data.qd, data.qdd, problem.truth,
        ix, iy, axes[0], axes[1],
    )


def singular_cells(problem: Problem, data: Dataset, reference, ix: int, iy: int, landscape: Landscape):
    """(ny, nx) bool: the grid cells whose parameters make the mass matrix ∂²L/∂q̇∂q̇ᵀ
    singular somewhere in the data (its determinant changes sign between data points or
    vanishes at one): q̈ and the loss there are meaningless and are masked in the figures.
    Computed for systems linear in θ or in coefficients c(θ), where H = H₀ + Σₖ cₖ Hₖ is one
    product per cell; None for other systems (nothing is masked)."""
    from lagfit_cli.core.solvers.jacobian import BasisModel, make_residual_model

    try:
        model = make_residual_model(problem.system, data.q, data.qd, data.qdd, compile="false")
    except LagfitError:
        return None
    if not isinstance(model, BasisModel):
        return None
    basis = model.basis
    follow = followers(problem.system, ix, iy)
    theta = parameter_grid(reference, ix, iy, follow, landscape.x, landscape.y)
    n_points, dof = basis.shape
    chunk = max(1, 4_000_000 // max(1, n_points * dof * dof))
    cells = []
    with torch.no_grad():
        for part in theta.split(chunk):
            c = model._coefficients(part.to(basis.hessian.dtype))  # noqa: SLF001 θ, or c(θ)
            det = torch.linalg.det(basis._terms(c)[0])  # noqa: SLF001 (g, N)
            scale = det.abs().amax(dim=1)
            cells.append(((det.amin(dim=1) <= 0) & (det.amax(dim=1) >= 0)) | (det.abs().amin(dim=1) <= 1e-12 * scale))
    mask = torch.cat(cells).reshape(len(landscape.y), len(landscape.x)).cpu().numpy()
    return mask if mask.any() else None


def slice_note(system, ix: int, iy: int, reference: str) -> str:
    """Under a landscape of two of P > 2 parameters: it is a 2-D slice."""
    names = system.param_names
    if len(names) <= 2:
        return ""
    follow = followers(system, ix, iy)
    others = [n for j, n in enumerate(names) if j not in (ix, iy)]
    moving = [names[j] for j in follow]
    fixed = [n for n in others if n not in moving]
    parts = []
    if fixed:
        parts.append(f"{', '.join(fixed)} held at the {reference}")
    if moving:
        parts.append(f"{', '.join(moving)} scaled with {names[ix]}")
    return f"2-D slice of the {len(names)}-parameter loss: " + "; ".join(parts)


def landscape_table(problem: Problem, landscape: Landscape, ix: int, iy: int) -> pd.DataFrame:
    """One row per grid point: every parameter (see landscape.followers) and the loss."""
    follow = followers(problem.system, ix, iy)
    theta = parameter_grid(problem.truth, ix, iy, follow, landscape.x, landscape.y).cpu().numpy()
    table = pd.DataFrame({name: theta[:, j] for j, name in enumerate(problem.system.param_names)})
    table["loss"] = landscape.loss.reshape(-1).cpu().numpy()
    return table


def landscape_metrics(problem: Problem, landscape: Landscape) -> dict:
    loss = landscape.loss.cpu().numpy()
    x, y = landscape.x.cpu().numpy(), landscape.y.cpu().numpy()
    masked = np.where(np.isfinite(loss), loss, np.inf)
    iy_min, ix_min = np.unravel_index(int(np.argmin(masked)), loss.shape)
    return {
        "x": landscape.x_name,
        "y": landscape.y_name,
        "x_range": [float(x[0]), float(x[-1])],
        "y_range": [float(y[0]), float(y[-1])],
        "resolution": len(x),
        "valley_slope": landscape.valley_slope,
        "grid_min_loss": float(loss[iy_min, ix_min]),
        "grid_min_at": {landscape.x_name: float(x[ix_min]), landscape.y_name: float(y[iy_min])},
        "grid_max_loss": float(np.nanmax(np.where(np.isfinite(loss), loss, np.nan))),
        "n_nonfinite": int((~np.isfinite(loss)).sum()),
    }


def landscape_report(cfg: DictConfig, problem: Problem) -> Report:
    """Fig. 2 (and Fig. 8 with init.n_starts > 1) on the data the run sees."""
    ix, iy = landscape_indices(cfg, problem)
    started = time.perf_counter()
    landscape = landscape_on(cfg, problem, problem.data, ix, iy)
    report = Report()
    report.tables["landscape"] = landscape_table(problem, landscape, ix, iy)
    metrics = landscape_metrics(problem, landscape)
    metrics["landscape_s"] = time.perf_counter() - started
    names = problem.system.param_names
    label = f"{problem.system.name}, σ = {cfg.noise.sigma:g}"
    if cfg.report.figures:
        from lagfit_cli.io import plots  # matplotlib: only when figures are drawn

        xs, ys = plots.symbol(names[ix]), plots.symbol(names[iy])
        singular = singular_cells(problem, problem.data, problem.truth, ix, iy, landscape)
        fig = plots.landscape_figure(
            landscape, (float(problem.truth[ix]), float(problem.truth[iy])),
            f"Loss landscape ({label}): valley {ys}/{xs} = {landscape.valley_slope:.4g}",
            singular=singular, note=slice_note(problem.system, ix, iy, "true values"),
        )
        report.figures["fig2_landscape"] = fig

    if cfg.init.n_starts > 1:
        # Fig. 8 is the report's gradient descent from starts in a box around the truth
        result = run_fit(cfg, problem, optimizer="gd").result
        report.tables["landscape_paths"] = history_table(problem.system, result)
        counts = {s: result.status.count(s) for s in STATUSES}
        converged = [b for b, status in enumerate(result.status) if status == "converged"]
        known = [r for r, row in enumerate(problem.ratios) if row.status in IDENTIFIABLE]
        ratios = reported_values(problem.system, problem.ratios, result.theta)[:, known]
        true_ratios = reported_values(problem.system, problem.ratios, problem.truth)[known]
        metrics["paths"] = {
            "n_starts": len(result.status),
            **{f"n_{k}": v for k, v in counts.items()},
            "optim_lr": result.lr0,
            **result.lr_info,
            "max_ratio_rel_error_converged": (
                float(relative_error(ratios[converged], true_ratios).max()) if converged else None
            ),
        }
        if cfg.report.figures:
            from lagfit_cli.io import plots

            paths = [
                result.history.theta[: result.history.rows_until(int(result.stop_iter[b])), b][:, [ix, iy]].cpu().numpy()
                for b in range(len(result.status))
            ]
            report.figures["fig8_paths"] = plots.paths_figure(
                landscape, paths, (float(problem.truth[ix]), float(problem.truth[iy])),
                f"{len(paths)} gradient-descent paths from random starts ({label}, ε₀ = {result.lr0:.3g})",
                statuses=result.status, singular=singular,
                note=slice_note(problem.system, ix, iy, "true values"),
            )
    report.metrics = metrics
    report.summary.append(
        f"landscape {problem.system.name} ({landscape.x_name} × {landscape.y_name}, {len(landscape.x)}² points): "
        f"grid minimum {metrics['grid_min_loss']:.3e} at "
        + ", ".join(f"{k} = {v:.4g}" for k, v in metrics["grid_min_at"].items())
        + f" (valley {landscape.y_name}/{landscape.x_name} = {landscape.valley_slope:.4g})"
    )
    if "paths" in metrics:
        p = metrics["paths"]
        counts = ", ".join(f"{p['n_' + s]} {STATUS_NAMES[s]}" for s in STATUSES if p["n_" + s])
        report.summary.append(f"  {p['n_starts']} descent paths: {counts} (ε₀ = {p['optim_lr']:.4g})")
    return report


@register_task("landscape")
def landscape_task(cfg: DictConfig) -> Report:
    problem = prepare_problem(cfg)
    report = landscape_report(cfg, problem)
    report.metrics = {
        **problem_metrics("landscape", problem),
        "noise_sigma": float(cfg.noise.sigma),
        **report.metrics,
        "seed": cfg.seed,
    }
    return report
