"""task=noise_study: how noise washes out the valley (seed Figs. 4, 5, 6).

For every σ in task.sigmas and each of task.realizations noise draws, the
loss along the slice through the truth perpendicular to the valley is compared with the
clean loss. Realization r uses the same standard-normal draw at every σ (scaled by σ),
so the curves over σ differ by σ alone. noise.apply_to says what the noise perturbs;
noise.sigma is not used (the study sets σ itself).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from lagfit_cli.core.data import Dataset
from lagfit_cli.errors import LagfitError
from lagfit_cli.core.fit import loss_on_batch
from lagfit_cli.core.landscape import followers
from lagfit_cli.core.noise import add_noise
from lagfit_cli.io.report import Report
from lagfit_cli.core.slices import perpendicular_slice, rms_error, valley_shape
from . import register_task
from lagfit_cli.app.tasks.common import Problem, generator, prepare_problem, problem_metrics
from lagfit_cli.app.tasks.landscape import landscape_indices, landscape_on, singular_cells


def noisy_copies(problem: Problem, sigma: float, apply_to: str, realizations: int) -> list[Dataset]:
    """``realizations`` noisy copies of the clean data; copy r is σ × the same draw at every σ."""
    gen = generator(problem.seed, "noise_study")
    return [add_noise(problem.clean, sigma, apply_to, gen) for _ in range(realizations)]


def slice_losses(problem: Problem, theta, datasets: list[Dataset]) -> np.ndarray:
    """Loss at each slice point for each dataset: (R, S)."""
    return np.stack([
        loss_on_batch(problem.system, problem.solver, d.q, d.qd, d.qdd, theta).cpu().numpy() for d in datasets
    ])


def noise_study_report(cfg: DictConfig, problem: Problem) -> Report:
    ns = cfg.task
    apply_to = cfg.noise.apply_to
    ix, iy = landscape_indices(cfg, problem)
    names = problem.system.param_names
    started = time.perf_counter()
    try:
        line = perpendicular_slice(problem.truth, ix, iy, followers(problem.system, ix, iy), ns.slice_halfwidth, ns.slice_points)
    except ValueError as err:
        raise LagfitError(f"noise_study: {err}") from None
    s = line.s.cpu().numpy()
    theta_np = line.theta.cpu().numpy()
    clean = slice_losses(problem, line.theta, [problem.clean])[0]
    if not np.isfinite(clean).all():
        raise LagfitError(
            f"task.slice_halfwidth: the slice reaches parameters where the loss is not finite "
            f"(e.g. {names[ix]} = {float(line.x[~np.isfinite(clean)][0]):.3g}); make it shorter"
        )
    clean_range = float(clean.max() - clean.min())
    sigmas = np.array(sorted(set(float(v) for v in ns.sigmas)))

    slice_rows, rms_rows, rms_all, shapes = [], [], [], {}
    for sigma in sigmas:
        noisy = slice_losses(problem, line.theta, noisy_copies(problem, sigma, apply_to, ns.realizations))
        rms = rms_error(noisy, clean)  # (R,)
        rms_all.append(rms)
        shape = valley_shape(s, noisy.mean(axis=0))
        shapes[sigma] = shape
        for r in range(ns.realizations):
            rows = {"sigma": sigma, "realization": r, "s": s}
            rows.update({name: theta_np[:, j] for j, name in enumerate(names)})
            rows.update({"loss": noisy[r], "clean_loss": clean})
            slice_rows.append(pd.DataFrame(rows))
        rms_rows.append({
            "sigma": sigma,
            "rms_mean": float(rms.mean()),
            "rms_std": float(rms.std(ddof=1)) if len(rms) > 1 else 0.0,
            "rms_min": float(rms.min()),
            "rms_max": float(rms.max()),
            "rms_over_clean_range": float(rms.mean()) / clean_range,
            "valley_floor": shape.floor,
            "valley_s_min": shape.s_min,
            "valley_depth": shape.depth,
            "valley_relative_depth": shape.relative_depth,
            "valley_decades": shape.decades,
            "valley_width": shape.width,
        })
    rms_table = pd.DataFrame(rms_rows)
    clean_shape = valley_shape(s, clean)
    over = rms_table["rms_mean"] > ns.threshold_fraction * clean_range
    threshold = float(rms_table["sigma"][over].iloc[0]) if bool(over.any()) else None
    crossing = threshold_crossing(sigmas, rms_table["rms_mean"].to_numpy(), ns.threshold_fraction * clean_range)
    show = shown_sigma(float(ns.show_sigma), sigmas)
    at_edge = np.isclose(np.abs(rms_table["valley_s_min"].to_numpy()), abs(float(s[-1])))
    below = rms_table["sigma"][~over]
    largest = shapes[sigmas[-1]]

    estimator_table = estimator_sweep(cfg, problem, sigmas, apply_to)

    report = Report()
    report.tables["noise_slice"] = pd.concat(slice_rows, ignore_index=True)
    report.tables["noise_rms"] = rms_table
    report.metrics = {
        "slice": {
            "x": names[ix], "y": names[iy], "halfwidth": float(ns.slice_halfwidth), "points": int(ns.slice_points),
            "s_range": [float(s[0]), float(s[-1])],
        },
        "noise_apply_to": apply_to,
        "realizations": int(ns.realizations),
        "sigmas": sigmas.tolist(),
        "clean_loss_range": clean_range,
        "threshold_fraction": float(ns.threshold_fraction),
        "threshold_sigma": threshold,
        #: where the mean RMS error crosses the threshold, interpolated in log σ – log RMS
        "threshold_sigma_interpolated": crossing,
        "show_sigma": show,
        "largest_sigma_below_threshold": float(below.iloc[-1]) if len(below) else None,
        "rms_mean": dict(zip(map(str, sigmas), rms_table["rms_mean"])),
        "valley": {
            "clean": vars(clean_shape),
            **{str(sigma): vars(shape) for sigma, shape in shapes.items()},
        },
        "valley_flattening": {
            "sigma": float(sigmas[-1]),
            "relative_depth": [clean_shape.relative_depth, largest.relative_depth],
            "decades": [clean_shape.decades, largest.decades],
            "width": [clean_shape.width, largest.width],
            "floor": [clean_shape.floor, largest.floor],
        },
    }

    if estimator_table is not None:
        report.tables["noise_estimators"] = estimator_table
        report.metrics["estimators"] = estimator_metrics(estimator_table)
    if cfg.report.figures and estimator_table is not None and len(estimator_table):
        from lagfit_cli.io.estimator_plots import estimator_error_figure

        report.figures["noise_estimators"] = estimator_error_figure(
            estimator_table,
            f"Error of the fitted values vs noise ({problem.system.name}, noise on {apply_to}; "
            f"{ns.realizations} realizations per σ)",
        )
    if cfg.report.figures:
        from lagfit_cli.io import study_plots  # matplotlib: only when figures are drawn

        copies = noisy_copies(problem, show, apply_to, ns.realizations)
        shown = slice_losses(problem, line.theta, copies)
        system = problem.system.name
        where = f"{system}, noise on {apply_to}"
        report.figures["fig4_noise_slice"] = study_plots.noise_slice_figure(
            s, clean, shown, show, names[ix], names[iy], f"Loss on the slice ⊥ valley through the truth ({where})"
        )
        report.figures["fig5_noise_rms"] = study_plots.noise_rms_figure(
            sigmas, np.stack(rms_all), clean_range, ns.threshold_fraction, crossing,
            f"RMS error of the loss on the slice vs noise ({where})",
        )
        clean_land = landscape_on(cfg, problem, problem.clean, ix, iy)
        noisy_land = landscape_on(cfg, problem, copies[0], ix, iy)
        report.figures["fig6_noise_landscapes"] = study_plots.noise_landscapes_figure(
            clean_land, noisy_land, show, f"Loss landscape without and with noise ({where})",
            truth_xy=(float(problem.truth[ix]), float(problem.truth[iy])),
            singular=singular_cells(problem, problem.clean, problem.truth, ix, iy, clean_land),
            singular_noisy=singular_cells(problem, copies[0], problem.truth, ix, iy, noisy_land),
        )
        report.figures["noise_valley"] = study_plots.valley_figure(
            sigmas, rms_table["valley_width"].to_numpy(), rms_table["valley_decades"].to_numpy(),
            f"The valley along the slice vs noise ({where}; mean over realizations)",
            at_edge=at_edge,
        )
    report.metrics["noise_study_s"] = time.perf_counter() - started

    level = f"{ns.threshold_fraction:g} × the clean loss range ({clean_range:.3g})"
    if crossing is not None:
        t = f"crosses {level} at σ ≈ {crossing:.2g} (interpolated; first sampled σ above it: {threshold:g})"
    elif threshold is not None:
        t = f"exceeds {level} already at the smallest σ = {threshold:g}"
    else:
        t = f"stays below {level} at every sampled σ"
    report.summary.append(
        f"noise study {problem.system.name} (noise on {apply_to}, {len(sigmas)} σ × {ns.realizations} realizations): "
        f"the RMS error of the loss {t}"
    )
    if show != float(ns.show_sigma):
        report.summary.append(
            f"NOTE: task.show_sigma={float(ns.show_sigma):g} is not among task.sigmas; Figs. 4 and 6 show σ = {show:g}"
        )
    picks = [("clean", clean_shape, False), (f"σ = {sigmas[0]:g}", shapes[sigmas[0]], bool(at_edge[0])),
             (f"σ = {sigmas[-1]:g}", largest, bool(at_edge[-1]))]
    report.summary.append(
        "  valley on the slice, " + " → ".join(name for name, _, _ in picks) + ": "
        f"log10(max/min) {' → '.join(_decades(shape) for _, shape, _ in picks)}, "
        f"width {' → '.join(_width(shape, edge) for _, shape, edge in picks)}, "
        f"floor {clean_shape.floor:.3g} → {largest.floor:.3g}, minimum at s = {largest.s_min:.3g}"
        + (" (the end of the slice)" if at_edge[-1] else "")
    )
    return report


def estimator_sweep(cfg: DictConfig, problem: Problem, sigmas: np.ndarray, apply_to: str) -> pd.DataFrame | None:
    """Each noisy copy fitted with each of task.estimators (σ's: the noise's own), one row
    per (σ, realization, estimator, reported value): its signed relative error."""
    names = list(cfg.task.get("estimators") or [])
    if not names:
        return None
    from dataclasses import replace

    from lagfit_cli.app.tasks.fit import fit_options
    from lagfit_cli.core.api import IDENTIFIABLE, fit_dataset
    from lagfit_cli.core.eiv import sigmas_from_noise
    from lagfit_cli.core.noise import NOISE_TARGETS

    base = replace(fit_options(cfg), uncertainty="none", profiles=False)
    truth = problem.truth.to(device="cpu", dtype=torch.float64)
    rows = []
    for sigma in sigmas:
        copies = noisy_copies(problem, float(sigma), apply_to, cfg.task.realizations)
        for r, data in enumerate(copies):
            for name in names:
                opts = replace(base, estimator=name, **sigmas_from_noise(float(sigma), NOISE_TARGETS[apply_to]))
                fitted = fit_dataset(problem.system, data, truth, opts, gauge=cfg.system.gauge)
                for label, value in fitted.metrics["ratios"].items():
                    if value["status"] not in IDENTIFIABLE:
                        continue
                    rows.append({
                        "sigma": float(sigma), "seed": r, "estimator": name, "ratio": label,
                        "value": value["estimate"], "true": value["true"],
                        "signed_rel_error": (value["estimate"] - value["true"]) / value["true"]
                        if value["true"] not in (None, 0) else np.nan,
                        "fit_ok": fitted.fit_ok,
                    })
    return pd.DataFrame(rows)


def estimator_metrics(table: pd.DataFrame) -> dict:
    """Per estimator and reported value: the median signed error and its min–max at each σ."""
    out: dict = {}
    for (name, label), part in table.groupby(["estimator", "ratio"], sort=False):
        grouped = part.groupby("sigma")["signed_rel_error"]
        out.setdefault(name, {})[label] = {
            str(sigma): {"median": float(g.median()), "min": float(g.min()), "max": float(g.max())}
            for sigma, g in grouped
        }
    return out


def threshold_crossing(sigmas: np.ndarray, rms_mean: np.ndarray, level: float) -> float | None:
    """The σ where the mean RMS error first crosses ``level``, interpolated linearly in
    log σ – log RMS between the samples on either side; None when it never does (or already
    at the smallest σ: then the crossing lies below the sampled range)."""
    sigmas, rms_mean = np.asarray(sigmas, float), np.asarray(rms_mean, float)
    above = np.nonzero(rms_mean > level)[0]
    if not above.size or above[0] == 0:
        return None
    i = int(above[0])
    (s0, s1), (r0, r1) = sigmas[i - 1:i + 1], rms_mean[i - 1:i + 1]
    if s0 <= 0 or r0 <= 0:  # no log scale at σ = 0 or an exact zero: linear
        return float(s0 + (level - r0) / (r1 - r0) * (s1 - s0))
    frac = (np.log(level) - np.log(r0)) / (np.log(r1) - np.log(r0))
    return float(np.exp(np.log(s0) + frac * (np.log(s1) - np.log(s0))))


def _width(shape, at_edge: bool) -> str:
    """A valley's width: 'no valley' where the minimum is at the slice's end, '0 (a line)'
    where the minimum is exactly 0 (nothing lies below √(min·max) = 0 but the line)."""
    if at_edge:
        return "no valley"
    if shape.floor == 0:
        return "0 (a line: minimum exactly 0)"
    return f"{shape.width:.2g}"


def _decades(shape) -> str:
    """log10(max/min) of a valley: 'inf' where its minimum is exactly 0 (unbounded depth)."""
    if shape.floor == 0 and shape.depth > 0:
        return "inf (minimum exactly 0)"
    return f"{shape.decades:.3g}"


def shown_sigma(requested: float, sigmas: np.ndarray) -> float:
    """The σ of the with-noise panels: task.show_sigma when it is one of task.sigmas, else
    the sampled σ nearest to it (in log σ), so the figures show a σ the tables hold."""
    if np.isclose(sigmas, requested, rtol=1e-9, atol=0).any() or not len(sigmas):
        return requested
    positive = sigmas[sigmas > 0]
    if requested > 0 and len(positive):
        return float(positive[np.argmin(np.abs(np.log(positive) - np.log(requested)))])
    return float(sigmas[np.argmin(np.abs(sigmas - requested))])


@register_task("noise_study")
def noise_study_task(cfg: DictConfig) -> Report:
    problem = prepare_problem(cfg)
    report = noise_study_report(cfg, problem)
    report.metrics = {
        **problem_metrics("noise_study", problem),
        **report.metrics,
        "seed": cfg.seed,
    }
    return report
