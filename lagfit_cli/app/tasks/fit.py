"""task=fit: fit θ from many starts through the Python API (``core.api.fit_dataset``) and
write what it reports: tables, metrics.json, figures, the console summary."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from omegaconf import DictConfig

from lagfit_cli.app.tasks import register_task
from lagfit_cli.app.tasks.common import Problem, prepare_problem, problem_metrics
from lagfit_cli.core.api import FitOptions, FitReport, fit_dataset
from lagfit_cli.core.fit import reported_values
from lagfit_cli.core.fit import ratio_label as plots_label
from lagfit_cli.core.landscape import loss_landscape, span
from lagfit_cli.io.report import Report
from lagfit_cli.io.tables import history_table, parameters_table, results_table


def progress_bar(cfg: DictConfig, total: int, desc: str):
    """A tqdm bar on stderr when it is a terminal (progress=auto) or when asked for."""
    show = cfg.progress == "true" or (cfg.progress == "auto" and sys.stderr.isatty())
    if not show:
        return nullcontext(None)
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="it", file=sys.stderr, leave=False)


def fit_options(cfg: DictConfig, optimizer: str | None = None) -> FitOptions:
    """The config's fit settings as API options (``optimizer`` overrides optim.name)."""
    name = optimizer or cfg.optim.name
    init = cfg.init.name if optimizer is None else "box"
    same_optimizer = name == cfg.optim.name
    return FitOptions(
        optimizer=name,
        n_starts=cfg.init.n_starts,
        iters=cfg.optim.iters if same_optimizer else None,
        init=init,
        init_center=cfg.init.center,
        init_width=cfg.init.decades if init == "decades" else cfg.init.box_width,
        exact_start=cfg.init.exact_start,
        solver=cfg.solver.name,
        compile=str(cfg.solver.compile).lower(),
        seed=cfg.seed,
        device=cfg.device,
        dtype=cfg.dtype,
        ftol=cfg.optim.ftol,
        xtol=cfg.optim.xtol,
        gtol=cfg.optim.gtol,
        lr=cfg.optim.lr,
        adaptive=cfg.optim.adaptive,
        grad_tol=cfg.optim.grad_tol,
        loss_tol=cfg.optim.loss_tol,
        auto_step_fraction=cfg.optim.auto_step_fraction,
        auto_samples=cfg.optim.auto_samples,
        history_every=cfg.report.history_every,
        history_max_rows=cfg.report.history_max_rows,
        uncertainty=cfg.uncertainty.name,
        n_boot=cfg.uncertainty.n_boot,
        # the profiles belong to task=fit's own fit (not landscape's gd paths)
        profiles=bool(cfg.uncertainty.profiles) and optimizer is None and cfg.task.name == "fit",
        weak=weak_options(cfg) if optimizer is None else None,
        **(estimator_options(cfg) if optimizer is None else {}),
    )


def weak_options(cfg: DictConfig):
    """The weak form's test functions when derivatives=weak fits a time series, else None."""
    from lagfit_cli.core.weak import WeakOptions

    d = cfg.get("derivatives")
    if d is None or d.name != "weak" or cfg.data.name != "trajectory":
        return None
    return WeakOptions(window=d.window, overlap=d.overlap, power=d.power)


def estimator_options(cfg: DictConfig, synthetic: bool = True) -> dict:
    """estimator.* as API options; a null σ is the noise config's (synthetic data only:
    measured data need the σ's given, which ``core.eiv`` says in one line)."""
    from lagfit_cli.core.eiv import sigmas_from_noise
    from lagfit_cli.core.noise import NOISE_TARGETS

    est = cfg.estimator
    if est.name == "ls":  # least squares takes no σ's: the API's defaults
        return {"estimator": "ls", **{key: est[key] for key in ("sigma_q", "sigma_qd", "sigma_qdd")}}
    defaults = sigmas_from_noise(float(cfg.noise.sigma), NOISE_TARGETS.get(cfg.noise.apply_to, ()))
    sigmas = {
        key: (est[key] if est[key] is not None else (defaults[key] if synthetic else None))
        for key in ("sigma_q", "sigma_qd", "sigma_qdd")
    }
    return {"estimator": est.name, **sigmas}


def run_fit(cfg: DictConfig, problem: Problem, optimizer: str | None = None) -> FitReport:
    """The fit the config describes, on the problem's data, with a progress bar."""
    opts = fit_options(cfg, optimizer)
    if optimizer is None and not problem.clean.synthetic:  # measured data: the σ's must be given
        opts = replace(opts, **estimator_options(cfg, synthetic=False))
    truth = problem.truth.to(device="cpu", dtype=torch.float64)
    with progress_bar(cfg, opts.n_iters + 1, "fit") as bar:

        def on_iteration(t: int, loss: torch.Tensor) -> None:
            if bar is not None:
                bar.update(1)
                bar.set_postfix(best_loss=f"{float(loss.nan_to_num(float('inf')).min()):.3e}")

        return fit_dataset(
            problem.system, problem.data, truth, opts, gauge=cfg.system.gauge, on_iteration=on_iteration
        )


def fit_figures(
    cfg: DictConfig, problem: Problem, fitted: FitReport, pair: Optional[tuple[int, int]]
) -> dict:
    from lagfit_cli.io import plots  # matplotlib: only when figures are drawn

    system, data, result, ratios_ = problem.system, problem.data, fitted.result, fitted.ratios
    truth_known = bool(torch.isfinite(fitted.truth).all())
    method = "Levenberg–Marquardt" if result.method == "lm" else "Gradient-descent"
    measured = cfg.data.name in ("csv", "trajectory")
    label = f"{system.name}, σ = {cfg.noise.sigma:g}" if not measured or cfg.noise.sigma else (
        f"{system.name}, measured data")
    best_theta = result.theta[result.best]
    # the file's name, not its folder (a long path cannot be wrapped into a title)
    source = f"data from {Path(str(cfg.data.path)).name}" if measured else f"synthetic data, σ = {cfg.noise.sigma:g}"
    if cfg.data.name == "trajectory" and cfg.get("derivatives") is not None:
        source += f", derivatives={cfg.derivatives.name}"
    columns = dict(cfg.data.columns) if cfg.data.name == "csv" and cfg.data.get("columns") else None
    if data.grid_shape is not None:
        figures = {"fig1_qdd": plots.qdd_figure(data, f"{system.name}: q̈ of the data ({source})", columns)}
    else:
        with torch.no_grad():
            predicted = problem.solver(system, data.q, data.qd, best_theta[None])[0]
        figures = {"fig1_qdd": plots.qdd_scatter_figure(
            data, predicted, f"{system.name}: fitted vs data q̈ ({source})", columns
        )}

    # Figs. 3/8: paths of two parameters over their loss landscape (the q̈ loss: not the
    # landscape a weak-form fit descends, so not drawn for derivatives=weak)
    if pair is not None and fitted.metrics.get("weak") is None:
        from lagfit_cli.app.tasks.landscape import singular_cells, slice_note

        ix, iy = pair
        reference = fitted.truth if truth_known else best_theta
        theta_path = result.history.theta  # (T, B, P)
        xs = theta_path[..., ix].reshape(-1)
        ys = theta_path[..., iy].reshape(-1)
        res = cfg.task.resolution
        x_lo, x_hi = span(xs, float(reference[ix]))
        y_lo, y_hi = span(ys, float(reference[iy]))
        grid = lambda lo, hi: torch.linspace(lo, hi, res, dtype=problem.dtype, device=problem.device)  # noqa: E731
        reference = reference.to(dtype=problem.dtype, device=problem.device)
        landscape = loss_landscape(
            system, problem.solver, data.q, data.qd, data.qdd, reference,
            ix, iy, grid(x_lo, x_hi), grid(y_lo, y_hi),
        )
        paths = [
            theta_path[: result.history.rows_until(int(result.stop_iter[b])), b][:, [ix, iy]].cpu().numpy()
            for b in range(len(result.status))
        ]
        figures["fig3_fit_paths"] = plots.paths_figure(
            landscape, paths, (float(reference[ix]), float(reference[iy])),
            f"{method} paths over the loss landscape ({label})",
            reference_label="true parameters" if truth_known else "best fit",
            statuses=result.status, valley=truth_known,
            singular=singular_cells(problem, data, reference, ix, iy, landscape),
            note=slice_note(system, ix, iy, "true values" if truth_known else "best fit"),
        )

    rows = [r for r, row in enumerate(ratios_) if row.status in ("ratio", "absolute")]
    ratios = reported_values(system, ratios_, result.history.theta)[..., rows].cpu().numpy()
    true_values = reported_values(system, ratios_, fitted.truth)[rows].tolist()
    rlabels = [
        plots.symbol(row.name)
        + (f"/{plots.symbol(row.denominator)}" if row.status == "ratio" else "")
        for row in (ratios_[r] for r in rows)
    ]
    notes = []
    gauges = [row.name for row in ratios_ if row.status == "gauge"]
    hidden = [row.name for row in ratios_ if row.status == "unidentifiable"]
    if gauges:
        notes.append(", ".join(plots.symbol(n) for n in gauges) + " sets the scale (the values shown are ratios to it)")
    if hidden:
        notes.append("not identifiable: " + ", ".join(plots.symbol(n) for n in hidden))
    unc = fitted.uncertainty
    if unc is not None and unc.correlation is not None and len(unc.correlation_labels) >= 2:
        index = {ratio_label: r for r, ratio_label in enumerate(unc.labels)}
        clabels = [rlabels[rows.index(index[name])] for name in unc.correlation_labels]
        figures["fig_correlations"] = plots.correlations_figure(
            clabels, unc.correlation.numpy(), f"Correlations of the estimates ({unc.method})",
            note=label + (f", condition number = {unc.condition_number:.3g}"
                          if unc.condition_number == unc.condition_number else ""),
        )
    prof = fitted.profiles
    if prof is not None and prof.profiles:
        index = {ratio_label: r for r, ratio_label in enumerate(unc.labels)} if unc is not None else {}
        plabels, intervals = [], []
        for p in prof.profiles:
            r = next(r for r, row in enumerate(ratios_) if plots_label(row) == p.label)
            plabels.append(rlabels[rows.index(r)])
            u = index.get(p.label)
            intervals.append((float(unc.ci_low[u]), float(unc.ci_high[u])) if u is not None else (np.nan, np.nan))
        figures["fig_profiles"] = plots.profiles_figure(
            plabels, [p.grid.numpy() for p in prof.profiles],
            [(p.rss - prof.rss_best).numpy() for p in prof.profiles],
            [p.estimate for p in prof.profiles], prof.threshold,
            "Loss profiles: RSS minimised over the other parameters",
            std_errors=[p.std_error for p in prof.profiles], intervals=intervals,
            note=label + f", 95 % level ΔRSS = s²t² = {prof.threshold:.3g}"
            + (f" ({unc.method} interval shaded)" if unc is not None and unc.method != "none" else ""),
        )
    figures["fit_convergence"] = plots.convergence_figure(
        result.history.loss.cpu().numpy(), ratios, rlabels, true_values, f"Convergence ({label})",
        note="; ".join(notes), iterations=result.history.iteration().cpu().numpy(), statuses=result.status,
    )
    return figures


@register_task("fit")
def fit_task(cfg: DictConfig) -> Report:
    problem = prepare_problem(cfg)
    from lagfit_cli.app.tasks.landscape import landscape_indices

    # the pair of Fig. 3, checked before the fit runs
    pair = landscape_indices(cfg, problem) if problem.system.n_params >= 2 else None
    fitted = run_fit(cfg, problem)

    report = Report()
    report.tables["fit_history"] = history_table(problem.system, fitted.result)
    report.tables["fit_results"] = results_table(fitted)
    report.tables["fitted_params"] = parameters_table(fitted)
    if fitted.profiles is not None:
        report.tables["profiles"] = fitted.profiles.table()
    report.metrics = {
        **problem_metrics("fit", problem),
        **fitted.metrics,
        "data": cfg.data.name,
        **({"derivatives": cfg.derivatives.name, "n_runs": int(problem.data.run.max()) + 1}
           if cfg.data.name == "trajectory" and problem.data.run is not None else {}),
        "noise_sigma": float(cfg.noise.sigma),
        "noise_apply_to": cfg.noise.apply_to,
    }
    if cfg.report.figures:
        report.figures.update(fit_figures(cfg, problem, fitted, pair))
    report.summary.extend(fitted.summary())
    from lagfit_cli.app.tasks.simulate import fit_rollout

    fit_rollout(cfg, problem, fitted, report)  # trajectory data only (rollout.*)
    if not fitted.fit_ok and cfg.check.require_converged:
        reasons = [w for w in fitted.warnings if any(k in w for k in ("did not converge", "disagree", "not trustworthy"))]
        report.failed_check = "check failed: the fit cannot be trusted: " + (
            "; ".join(reasons) or "see the WARNING lines above")
    return report
