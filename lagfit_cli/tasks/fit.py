"""task=fit: fit θ from many random starts, report raw values and identifiable ratios."""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from .. import plots
from ..fit import (
    DIVERGED,
    FitResult,
    gradient_descent,
    identifiable_ratios,
    make_loss_and_grad,
    ratio_names,
    relative_error,
)
from ..landscape import loss_landscape, span
from ..report import Report
from . import register_task
from ..errors import LagfitError
from ..step_size import auto_lr
from .common import Problem, generator, initial_guesses, prepare_problem


def progress_bar(cfg: DictConfig, total: int, desc: str):
    """A tqdm bar on stderr when it is a terminal (progress=auto) or when asked for."""
    show = cfg.progress == "true" or (cfg.progress == "auto" and sys.stderr.isatty())
    if not show:
        return nullcontext(None)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="it", file=sys.stderr, leave=False)


def run_fit(cfg: DictConfig, problem: Problem) -> FitResult:
    data = problem.data
    loss_and_grad = make_loss_and_grad(problem.system, problem.solver, data.q, data.qd, data.qdd)
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
    t_idx, b_idx = np.nonzero(np.arange(n_rows)[:, None] <= stop[None, :])
    order = np.lexsort((t_idx, b_idx))
    t_idx, b_idx = t_idx[order], b_idx[order]
    columns = {
        "start": b_idx,
        "iter": t_idx,
        "loss": h.loss.cpu().numpy()[t_idx, b_idx],
        "grad_norm": h.grad_norm.cpu().numpy()[t_idx, b_idx],
        "lr": h.lr.cpu().numpy()[t_idx, b_idx],
    }
    theta = h.theta.cpu().numpy()
    for j, name in enumerate(problem.system.param_names):
        columns[name] = theta[t_idx, b_idx, j]
    return pd.DataFrame(columns)


def results_table(problem: Problem, result: FitResult) -> pd.DataFrame:
    names = problem.system.param_names
    rnames = ratio_names(problem.system, problem.gauge)
    ratios = identifiable_ratios(result.theta, problem.gauge).cpu().numpy()
    true_ratios = identifiable_ratios(problem.truth, problem.gauge)
    errors = relative_error(identifiable_ratios(result.theta, problem.gauge), true_ratios).cpu().numpy()
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
    for r, rname in enumerate(rnames):
        table[rname] = ratios[:, r]
        table[f"{rname}_rel_error"] = errors[:, r]
    return table


def fit_metrics(cfg: DictConfig, problem: Problem, result: FitResult, fit_s: float) -> dict:
    names = problem.system.param_names
    best = result.best
    rnames = ratio_names(problem.system, problem.gauge)
    est = identifiable_ratios(result.theta[best], problem.gauge)
    true = identifiable_ratios(problem.truth, problem.gauge)
    err = relative_error(est, true)
    ratios = {
        rname: {"estimate": float(est[r]), "true": float(true[r]), "rel_error": float(err[r])}
        for r, rname in enumerate(rnames)
    }
    counts = {s: result.status.count(s) for s in ("converged", "max_iters", "diverged")}
    return {
        "task": "fit",
        "system": problem.system.name,
        "params": list(names),
        "true_params": {n: float(v) for n, v in zip(names, problem.truth.tolist())},
        "gauge": names[problem.gauge],
        "noise_sigma": float(cfg.noise.sigma),
        "noise_apply_to": cfg.noise.apply_to,
        "n_points": problem.data.n_points,
        "n_starts": len(result.status),
        "n_converged": counts["converged"],
        "n_max_iters": counts["max_iters"],
        "n_diverged": counts["diverged"],
        "best_start": best,
        "best_loss": float(result.loss[best]),
        "best_params": {n: float(v) for n, v in zip(names, result.theta[best].tolist())},
        "ratios": ratios,
        "max_ratio_rel_error": max((r["rel_error"] for r in ratios.values()), default=0.0),
        "fit_s": fit_s,
        "optim_lr": result.lr0,
        **result.lr_info,
        "solver": cfg.solver.name,
        "device": str(problem.device),
        "dtype": cfg.dtype,
        "seed": cfg.seed,
    }


def fit_figures(cfg: DictConfig, problem: Problem, result: FitResult) -> dict:
    system, data = problem.system, problem.data
    label = f"{system.name}, σ = {cfg.noise.sigma:g}"
    figures = {"fig1_qdd": plots.qdd_figure(data, f"{system.name}: synthetic data ({label})")}

    # Figs. 3/8: paths of the first two parameters over their loss landscape
    if system.n_params >= 2:
        ix, iy = (0, 1) if problem.gauge in (0, 1) else (problem.gauge, 0 if problem.gauge else 1)
        theta_path = result.history.theta  # (T, B, P)
        xs = theta_path[..., ix].reshape(-1)
        ys = theta_path[..., iy].reshape(-1)
        res = cfg.report.landscape_resolution
        x_lo, x_hi = span(xs, float(problem.truth[ix]))
        y_lo, y_hi = span(ys, float(problem.truth[iy]))
        grid = lambda lo, hi: torch.linspace(lo, hi, res, dtype=problem.dtype, device=problem.device)  # noqa: E731
        landscape = loss_landscape(
            system, problem.solver, data.q, data.qd, data.qdd, problem.truth,
            ix, iy, problem.gauge, grid(x_lo, x_hi), grid(y_lo, y_hi),
        )
        paths = [
            theta_path[: int(result.stop_iter[b]) + 1, b][:, [ix, iy]].cpu().numpy()
            for b in range(len(result.status))
        ]
        diverged = np.array([s == DIVERGED for s in result.status])
        figures["fig3_fit_paths"] = plots.paths_figure(
            landscape, paths, (float(problem.truth[ix]), float(problem.truth[iy])),
            f"Gradient-descent paths over the loss landscape ({label})", diverged,
        )

    ratios = identifiable_ratios(result.history.theta, problem.gauge).cpu().numpy()
    true_ratios = identifiable_ratios(problem.truth, problem.gauge).tolist()
    rlabels = [
        f"{plots.symbol(n)}/{plots.symbol(system.param_names[problem.gauge])}"
        for n in system.param_names if n != system.param_names[problem.gauge]
    ]
    figures["fit_convergence"] = plots.convergence_figure(
        result.history.loss.cpu().numpy(), ratios, rlabels, true_ratios, f"Convergence ({label})"
    )
    return figures


@register_task("fit")
def fit_task(cfg: DictConfig) -> Report:
    problem = prepare_problem(cfg)
    started = time.perf_counter()
    result = run_fit(cfg, problem)
    fit_s = time.perf_counter() - started

    report = Report()
    report.tables["fit_history"] = history_table(problem, result)
    report.tables["fit_results"] = results_table(problem, result)
    report.metrics = fit_metrics(cfg, problem, result, fit_s)
    if cfg.report.figures:
        report.figures.update(fit_figures(cfg, problem, result))

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
    for name, r in m["ratios"].items():
        report.summary.append(
            f"  {name} = {r['estimate']:.10g} (true {r['true']:.10g}, rel. error {r['rel_error']:.2e})"
        )
    return report
