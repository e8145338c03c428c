"""task=fit: fit θ from many random starts, report raw values and identifiable ratios."""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from lagfit_cli.io import plots
from lagfit_cli.core.solvers import check_mass_matrix, make_loss_and_grad
from lagfit_cli.core.errors import LagfitError
from lagfit_cli.core.fit import (
    DIVERGED,
    IDENTIFIABLE,
    FitResult,
    gradient_descent,
    ratio_label,
    relative_error,
    reported_values,
)
from lagfit_cli.core.landscape import landscape_pair, loss_landscape, span
from lagfit_cli.io.report import Report
from lagfit_cli.core.step_size import auto_lr
from . import register_task
from lagfit_cli.app.tasks.common import Problem, generator, initial_guesses, prepare_problem, problem_metrics


def progress_bar(cfg: DictConfig, total: int, desc: str):
    """A tqdm bar on stderr when it is a terminal (progress=auto) or when asked for."""
    show = cfg.progress == "true" or (cfg.progress == "auto" and sys.stderr.isatty())
    if not show:
        return nullcontext(None)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="it", file=sys.stderr, leave=False)


def run_fit(cfg: DictConfig, problem: Problem) -> FitResult:
    data = problem.data
    loss_and_grad = make_loss_and_grad(
        problem.system, data.q, data.qd, data.qdd, cfg.solver.name, cfg.solver.compile,
        expected_calls=cfg.optim.iters + 1,
    )
    theta0 = initial_guesses(problem, cfg.init.n_starts, cfg.init.box_width)
    lr, lr_info = resolve_lr(cfg, problem, loss_and_grad, theta0)
    with progress_bar(cfg, cfg.optim.iters + 1, "fit") as bar:

        def on_iteration(t: int, loss: torch.Tensor) -> None:
            if bar is not None:
                bar.update(1)
                bar.set_postfix(best_loss=f"{float(loss.nan_to_num(float('inf')).min()):.3e}")

        result = gradient_descent(
            loss_and_grad,
            theta0,
            lr=lr,
            iters=cfg.optim.iters,
            adaptive=cfg.optim.adaptive,
            grad_tol=cfg.optim.grad_tol,
            loss_tol=cfg.optim.loss_tol,
            on_iteration=on_iteration,
            history_every=cfg.report.history_every,
            history_max_rows=cfg.report.history_max_rows,
        )
    result.lr_info = lr_info
    return result


def resolve_lr(cfg: DictConfig, problem: Problem, loss_and_grad, theta0: torch.Tensor) -> tuple[float, dict]:
    """ε₀: optim.lr itself, or (optim.lr=auto) chosen from gradients sampled over the init box."""
    if cfg.optim.lr != "auto":
        return float(cfg.optim.lr), {"lr_mode": "fixed"}
    box = cfg.init.box_width
    unit = torch.rand((cfg.optim.auto_samples, problem.system.n_params), generator=generator(problem.seed, "auto_lr"))
    truth = problem.truth.to(device="cpu", dtype=torch.float64)
    samples = (truth + box * (2 * unit - 1)).to(dtype=problem.dtype, device=problem.device)
    target = cfg.optim.auto_step_fraction * 2 * box
    try:
        choice = auto_lr(loss_and_grad, torch.cat([samples, theta0]), target, cfg.optim.adaptive)
    except ValueError as err:
        raise LagfitError(f"optim.lr: auto cannot choose ε₀: {err}") from None
    return choice.lr, {
        "lr_mode": "auto",
        "auto_max_grad_norm": choice.max_grad_norm,
        "auto_target_step": choice.target_step,
        "auto_step_fraction": float(cfg.optim.auto_step_fraction),
        "auto_samples": choice.n_samples,
    }


def history_table(problem: Problem, result: FitResult) -> pd.DataFrame:
    """One row per (start, iteration) up to where each start stopped."""
    h = result.history
    n_rows, n_starts = h.loss.shape
    stop = result.stop_iter.cpu().numpy()
    row_iter = h.iteration().cpu().numpy()
    # each start's rows up to its stop; in a thinned history its stop row is the first row
    # at or after it (the same frozen state), labelled with the stop iteration
    last_row = np.searchsorted(row_iter, stop, side="left")
    t_idx, b_idx = np.nonzero(np.arange(n_rows)[:, None] <= last_row[None, :])
    order = np.lexsort((t_idx, b_idx))
    t_idx, b_idx = t_idx[order], b_idx[order]
    columns = {
        "start": b_idx,
        "iter": t_idx if h.iters is None else np.minimum(row_iter[t_idx], stop[b_idx]),
        "loss": h.loss.cpu().numpy()[t_idx, b_idx],
        "grad_norm": h.grad_norm.cpu().numpy()[t_idx, b_idx],
        "lr": h.lr.cpu().numpy()[t_idx, b_idx],
    }
    theta = h.theta.cpu().numpy()
    for j, name in enumerate(problem.system.param_names):
        columns[name] = theta[t_idx, b_idx, j]
    return pd.DataFrame(columns)


def identifiable_rows(problem: Problem) -> list[int]:
    """Indices (into problem.ratios) of the rows whose value q̈ determines."""
    return [r for r, row in enumerate(problem.ratios) if row.status in IDENTIFIABLE]


def results_table(problem: Problem, result: FitResult) -> pd.DataFrame:
    """One row per start: raw θ, identifiable values (+ errors where the truth is known)."""
    names = problem.system.param_names
    values = reported_values(problem.system, problem.ratios, result.theta).cpu().numpy()
    true = reported_values(problem.system, problem.ratios, problem.truth)
    errors = relative_error(
        reported_values(problem.system, problem.ratios, result.theta), true
    ).cpu().numpy()
    table = pd.DataFrame(
        {
            "start": np.arange(result.theta.shape[0]),
            "status": result.status,
            "iters": result.stop_iter.cpu().numpy(),
            "loss": result.loss.cpu().numpy(),
            "grad_norm": result.grad_norm.cpu().numpy(),
        }
    )
    for j, name in enumerate(names):
        table[f"{name}_init"] = result.theta_init[:, j].cpu().numpy()
    for j, name in enumerate(names):
        table[name] = result.theta[:, j].cpu().numpy()
    for r in identifiable_rows(problem):
        label = ratio_label(problem.ratios[r])
        if problem.ratios[r].status == "ratio":
            table[label] = values[:, r]
        if bool(torch.isfinite(true[r])):
            table[f"{label}_rel_error"] = errors[:, r]
    return table


def fit_metrics(cfg: DictConfig, problem: Problem, result: FitResult, fit_s: float) -> dict:
    names = problem.system.param_names
    best = result.best
    est = reported_values(problem.system, problem.ratios, result.theta[best])
    true = reported_values(problem.system, problem.ratios, problem.truth)
    err = relative_error(est, true)

    def number(value: torch.Tensor):
        return float(value) if bool(torch.isfinite(value)) else None

    ratios = {
        ratio_label(problem.ratios[r]): {
            "status": problem.ratios[r].status,
            "estimate": float(est[r]),
            "true": number(true[r]),
            "rel_error": number(err[r]),
        }
        for r in identifiable_rows(problem)
    }
    known_errors = [v["rel_error"] for v in ratios.values() if v["rel_error"] is not None]
    counts = {s: result.status.count(s) for s in ("converged", "max_iters", "diverged")}
    return {
        **problem_metrics("fit", problem),
        "truth_known": problem.truth_known,
        "gauges": [row.name for row in problem.ratios if row.status == "gauge"],
        "unidentifiable": [row.name for row in problem.ratios if row.status == "unidentifiable"],
        "data": cfg.data.name,
        "noise_sigma": float(cfg.noise.sigma),
        "noise_apply_to": cfg.noise.apply_to,
        "n_starts": len(result.status),
        "n_converged": counts["converged"],
        "n_max_iters": counts["max_iters"],
        "n_diverged": counts["diverged"],
        "best_start": best,
        "best_loss": float(result.loss[best]),
        "best_params": {n: float(v) for n, v in zip(names, result.theta[best].tolist())},
        "ratios": ratios,
        # the recovery criterion: identifiable values with a known truth only
        "max_ratio_rel_error": max(known_errors) if known_errors else None,
        "warnings": fitted_mass_matrix_warnings(problem, result.theta[best]),
        "fit_s": fit_s,
        "optim_lr": result.lr0,
        **result.lr_info,
        "solver": cfg.solver.name,
        "device": str(problem.device),
        "dtype": cfg.dtype,
        "seed": cfg.seed,
    }


def fitted_mass_matrix_warnings(problem: Problem, theta: torch.Tensor) -> list[str]:
    """The mass-matrix check at the fitted θ, as a warning (the results are still written)."""
    data = problem.data
    try:
        check_mass_matrix(problem.system, data.q, data.qd, theta)
    except LagfitError as err:
        return [f"at the fitted parameters: {err}"]
    return []


def summary_lines(problem: Problem, metrics: dict) -> list[str]:
    """The identifiability part of the summary: one line per parameter row."""
    lines = []
    for label, r in metrics["ratios"].items():
        truth = (
            f"true {r['true']:.10g}, rel. error {r['rel_error']:.2e}"
            if r["true"] is not None else "true value unknown"
        )
        lines.append(f"  {label} = {r['estimate']:.10g} ({truth})")
    for row in problem.ratios:
        if row.status == "gauge":
            lines.append(f"  {row.name}: gauge (ratio 1 by definition; the ratios above are to it)")
        elif row.status == "unidentifiable":
            lines.append(f"  {row.name}: not identifiable (no scaling of it changes q̈)")
    return lines + [f"  warning: {w}" for w in metrics["warnings"]]


def fit_figures(
    cfg: DictConfig, problem: Problem, result: FitResult, pair: tuple[int, int]
) -> dict:
    system, data = problem.system, problem.data
    label = f"{system.name}, σ = {cfg.noise.sigma:g}"
    best_theta = result.theta[result.best]
    source = (
        f"data from {cfg.data.path}" if cfg.data.name == "csv"
        else f"synthetic data, σ = {cfg.noise.sigma:g}"
    )
    if data.grid_shape is not None:
        figures = {"fig1_qdd": plots.qdd_figure(data, f"{system.name}: {source}")}
    else:
        with torch.no_grad():
            predicted = problem.solver(system, data.q, data.qd, best_theta[None])[0]
        figures = {"fig1_qdd": plots.qdd_scatter_figure(
            data, predicted, f"{system.name}: fitted vs data q̈ ({source})"
        )}

    # Figs. 3/8: paths of two parameters over their loss landscape
    if system.n_params >= 2:
        ix, iy = pair
        reference = problem.truth if problem.truth_known else best_theta
        theta_path = result.history.theta  # (T, B, P)
        xs = theta_path[..., ix].reshape(-1)
        ys = theta_path[..., iy].reshape(-1)
        res = cfg.report.landscape_resolution
        x_lo, x_hi = span(xs, float(reference[ix]))
        y_lo, y_hi = span(ys, float(reference[iy]))
        grid = lambda lo, hi: torch.linspace(lo, hi, res, dtype=problem.dtype, device=problem.device)  # noqa: E731
        landscape = loss_landscape(
            system, problem.solver, data.q, data.qd, data.qdd, reference,
            ix, iy, grid(x_lo, x_hi), grid(y_lo, y_hi),
        )
        paths = [
            theta_path[: result.history.rows_until(int(result.stop_iter[b])), b][:, [ix, iy]].cpu().numpy()
            for b in range(len(result.status))
        ]
        diverged = np.array([s == DIVERGED for s in result.status])
        figures["fig3_fit_paths"] = plots.paths_figure(
            landscape, paths, (float(reference[ix]), float(reference[iy])),
            f"Gradient-descent paths over the loss landscape ({label})", diverged,
            reference_label="true parameters" if problem.truth_known else "best fit",
        )

    rows = identifiable_rows(problem)
    ratios = reported_values(system, problem.ratios, result.history.theta)[..., rows].cpu().numpy()
    true_values = reported_values(system, problem.ratios, problem.truth)[rows].tolist()
    rlabels = [
        plots.symbol(row.name)
        + (f"/{plots.symbol(row.denominator)}" if row.status == "ratio" else "")
        for row in (problem.ratios[r] for r in rows)
    ]
    notes = []
    gauges = [row.name for row in problem.ratios if row.status == "gauge"]
    hidden = [row.name for row in problem.ratios if row.status == "unidentifiable"]
    if gauges:
        notes.append("gauge (ratio 1): " + ", ".join(plots.symbol(n) for n in gauges))
    if hidden:
        notes.append("not identifiable: " + ", ".join(plots.symbol(n) for n in hidden))
    figures["fit_convergence"] = plots.convergence_figure(
        result.history.loss.cpu().numpy(), ratios, rlabels, true_values, f"Convergence ({label})",
        note="; ".join(notes), iterations=result.history.iteration().cpu().numpy(),
    )
    return figures


@register_task("fit")
def fit_task(cfg: DictConfig) -> Report:
    problem = prepare_problem(cfg)
    pair = landscape_pair(problem.system, cfg.report.landscape_params, cfg.system.gauge)
    started = time.perf_counter()
    result = run_fit(cfg, problem)
    fit_s = time.perf_counter() - started

    report = Report()
    report.tables["fit_history"] = history_table(problem, result)
    report.tables["fit_results"] = results_table(problem, result)
    report.metrics = fit_metrics(cfg, problem, result, fit_s)
    if cfg.report.figures:
        report.figures.update(fit_figures(cfg, problem, result, pair))

    m = report.metrics
    report.summary.append(
        f"fit {m['system']} (σ={m['noise_sigma']:g}, {m['n_points']} points): "
        f"{m['n_converged']}/{m['n_starts']} starts converged, {m['n_diverged']} diverged, "
        f"best loss {m['best_loss']:.3e} in {fit_s:.2f} s"
    )
    if m["lr_mode"] == "auto":
        report.summary.append(
            f"  optim.lr=auto: ε₀ = {m['optim_lr']:.4g} (largest sampled |∇loss| {m['auto_max_grad_norm']:.4g}, "
            f"longest first step ≤ {m['auto_target_step']:.4g})"
        )
    report.summary.extend(summary_lines(problem, m))
    return report
