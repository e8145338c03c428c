"""summary.png: a sweep's headline metrics against its swept parameter (drawn from a PlotPlan)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lagfit_cli.io.plots import outside_legend, symbol
from lagfit_cli.io.style import LOSS_LABEL, figsize, save, style, wrap
from lagfit_cli.io.sweep_safety import escape_formulas
from lagfit_cli.io.sweep import SUMMARY_CSV, SUMMARY_FIGURE, PlotPlan, Series, axis_scale, collect, plot_plan

#: settings that do not change the numbers, left out of the figure's subtitle
HIDDEN_PREFIXES = ("report.", "progress", "hydra")
#: axis labels of the keys people sweep most; any other key is labelled by its name
KEY_LABELS = {
    "noise.sigma": "noise level σ (noise.sigma)",
    "data.n": "grid points per state variable n (data.n)",
    "init.n_starts": "starts per fit (init.n_starts)",
    "init.box_width": "initial-guess box half-width (init.box_width)",
    "optim.lr": "learning rate ε₀ (optim.lr)",
    "optim.iters": "iterations (optim.iters)",
    "seed": "seed",
    "system": "system",
    "solver": "solver",
}


def ratio_label(name: str) -> str:
    """'k/m' -> '$k$/$m$'."""
    return "/".join(symbol(part) for part in name.split("/"))


def metric_label(metric: str, ratio_names: list[str]) -> str:
    if metric == "max_ratio_rel_error":
        if len(ratio_names) == 1:
            return f"relative error of fitted {ratio_label(ratio_names[0])}"
        return "largest relative error of the fitted ratios"
    return {
        "best_loss": "best " + LOSS_LABEL,
        "runtime_s": "runtime of the job (s)",
    }.get(metric, metric)


def _panel_title(metric: str, plan: PlotPlan) -> str:
    if metric == "max_ratio_rel_error" and len(plan.ratio_names) > 1:
        # the ratios may belong to different systems (a sweep over system=): not listed
        return "largest relative error of each job's ratios"
    return {"max_ratio_rel_error": "identifiable-ratio error", "best_loss": "best loss",
            "runtime_s": "runtime"}.get(metric, metric)


def _median_by_x(series: Series, metric: str, x_order: list) -> tuple[list, list[float]]:
    xs, medians = [], []
    for x in x_order:
        values = [y for xv, y in zip(series.x, series.y[metric]) if xv == x and np.isfinite(y)]
        if values:
            xs.append(x)
            medians.append(float(np.median(values)))
    return xs, medians


def summary_figure(plan: PlotPlan, sweep_dir: Path) -> Figure:
    """One panel per metric; one line per value of the other swept keys; a dot per job. Then
    one panel per reported value with standard errors: each job's estimate ± its std_error."""
    n_panels = len(plan.metrics) + len(plan.error_names)
    repeated = any(len(s.x) > len(set(s.x)) for s in plan.series)
    repeat = " and ".join(plan.repeat_keys) or "repeat"
    # with few x values a line between the medians suggests a trend the sweep cannot show
    few = len(plan.x_order) <= 3
    with style():
        cols = min(n_panels, 2)
        rows = -(-n_panels // cols)
        width, _ = figsize(1 if cols == 1 else 2)
        fig, grid = plt.subplots(rows, cols, figsize=(width, 0.8 * width / cols * rows + 0.6), squeeze=False)
        flat = list(grid.flat)
        for extra in flat[n_panels:]:
            extra.remove()
        axes = np.array([flat[:n_panels]], dtype=object)
        colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        positions = {x: i for i, x in enumerate(plan.x_order)}
        for ax, metric in zip(axes[0], plan.metrics):
            all_y: list[float] = []
            for k, series in enumerate(plan.series):
                color = colors[k % len(colors)]
                if plan.x_numeric:
                    to_pos = lambda xs: list(xs)  # noqa: E731
                else:  # categories side by side, series shifted a little so markers don't hide
                    shift = 0.08 * (k - (len(plan.series) - 1) / 2)
                    to_pos = lambda xs, shift=shift: [positions[x] + shift for x in xs]  # noqa: E731
                ys = series.y[metric]
                all_y += [y for y in ys if np.isfinite(y)]
                if repeated:
                    ax.plot(to_pos(series.x), ys, "o", color=color, ms=3.5, alpha=0.45, mec="none")
                xs, medians = _median_by_x(series, metric, plan.x_order)
                label = series.label if len(plan.series) > 1 else (f"median over {repeat}s" if repeated else None)
                line = "o" if few else ("-o" if plan.x_numeric else "--o")
                ax.plot(to_pos(xs), medians, line, color=color, lw=1.2, ms=5 if few else 3.5, label=label)
            ax.set_title(_panel_title(metric, plan))
            ax.set_ylabel(metric_label(metric, plan.ratio_names))
            _scale(ax, "y", all_y)
            _swept_axis(ax, plan)
        for ax, name in zip(axes[0][len(plan.metrics):], plan.error_names):
            _error_panel(ax, plan, name, colors, positions)
        first = axes[0, 0]
        if repeated:
            first.plot([], [], "o", color="grey", ms=3.5, alpha=0.6, mec="none", label=f"one job (one {repeat})")
            if len(plan.series) > 1:
                first.plot([], [], "o" if few else "-", color="grey", lw=1.2, label=f"median over {repeat}s")
        handles = first.get_legend_handles_labels()[0]
        if len(plan.series) == 1:
            for ax in axes[0][len(plan.metrics):]:
                handles += ax.get_legend_handles_labels()[0][:1]
        if len(plan.series) > 1 or repeated or len(handles):
            outside_legend(fig, handles)
        fig.suptitle(wrap(_suptitle(plan, sweep_dir), fig))
    return fig


def _swept_axis(ax, plan: PlotPlan) -> None:
    """The x axis of every summary panel: the swept parameter, scaled or as categories."""
    ax.set_xlabel(KEY_LABELS.get(plan.x_key, plan.x_key) if plan.x_key else "")
    if plan.x_numeric:
        _scale(ax, "x", plan.x_order, decades=1)
    else:
        ax.set_xticks(range(len(plan.x_order)), [str(x) for x in plan.x_order],
                      rotation=20 if len(plan.x_order) > 4 else 0)
        ax.set_xlim(-0.5, len(plan.x_order) - 0.5)
    ax.grid(True, which="major", alpha=0.3)


def _error_panel(ax, plan: PlotPlan, name: str, colors: list, positions: dict) -> None:
    """Each job's fitted ``name`` with its ± std_error bar against the swept parameter."""
    n_series = len(plan.series)
    for k, series in enumerate(plan.series):
        color = colors[k % len(colors)]
        values, errors = series.y[name], series.y[f"{name}_std_error"]
        if plan.x_numeric:
            xs = list(series.x)
        else:
            shift = 0.08 * (k - (n_series - 1) / 2)
            xs = [positions[x] + shift for x in series.x]
        keep = [i for i, v in enumerate(values) if np.isfinite(v)]
        if not keep:
            continue
        ax.errorbar([xs[i] for i in keep], [values[i] for i in keep],
                    yerr=[errors[i] if np.isfinite(errors[i]) else 0.0 for i in keep],
                    fmt="o", color=color, ms=4, capsize=3, lw=1.2, alpha=0.8,
                    label=(series.label if n_series > 1 else "estimate ± std_error") if k == 0 or n_series > 1
                    else "_")
    ax.set_title(f"fitted {ratio_label(name)} ± std_error")
    ax.set_ylabel(f"fitted {ratio_label(name)}")
    _swept_axis(ax, plan)


def _suptitle(plan: PlotPlan, sweep_dir: Path) -> str:
    n_jobs = sum(len(s.x) for s in plan.series) + plan.n_failed
    headline = metric_label(plan.metrics[0], plan.ratio_names)
    x = KEY_LABELS.get(plan.x_key, plan.x_key) if plan.x_key else "job"
    title = f"{headline[0].upper()}{headline[1:]} vs {x}"
    if plan.repeat_keys:
        title += f", {plan.n_repeats} {' and '.join(plan.repeat_keys)}s per point"
    lines = [title + f" ({n_jobs} jobs)"]
    shown = {k: v for k, v in plan.constants.items() if not k.startswith(HIDDEN_PREFIXES)}
    if shown:
        text = "same in every job: " + ", ".join(_describe(k, v) for k, v in shown.items())
        lines.append(text)
    if plan.n_failed:
        lines.append(f"{plan.n_failed} failed job(s) not shown; see summary.csv")
    return "\n".join(lines)


NOISE_TARGETS = {"inputs": "noise on q, q̇", "targets": "noise on q̈", "both": "noise on q, q̇ and q̈"}


def _describe(key: str, value: str) -> str:
    if key == "noise_apply_to":
        return NOISE_TARGETS.get(value, f"noise on {value}")
    if key == "n_points":
        return f"{_short(value)} data points"
    return f"{key}={_short(value)}"


def _short(value: str) -> str:
    """'64.0' -> '64'; anything else unchanged."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:g}" if number == int(number) else value


def _scale(ax, axis: str, values: list, decades: int = 2) -> None:
    values = [float(v) for v in values]
    scale, threshold = axis_scale(values, decades)
    setter = ax.set_xscale if axis == "x" else ax.set_yscale
    if scale == "symlog":
        setter("symlog", linthresh=threshold, linscale=0.5)
    else:
        setter(scale)
    if axis == "y" and scale == "symlog" and values and min(values) >= 0:
        ax.set_ylim(bottom=0)  # errors and losses are ≥ 0: no −threshold tick beside +threshold
    if axis == "x" and scale != "linear":  # symlog's automatic limits reach below 0
        low = -0.3 * threshold if scale == "symlog" else min(values) / 1.5
        ax.set_xlim(low, max(values) * 1.5)


# --------------------------------------------------------------------------- writing


def summarize(sweep_dir: Path, figure_format: str = "png", dpi: int = 150,
              cluster: Optional[dict[int, tuple[str, str]]] = None,
              planned: Optional[list[list[str]]] = None) -> pd.DataFrame:
    """Write summary.csv (and summary.png when any job finished) into ``sweep_dir``;
    ``cluster``: what the scheduler says of jobs without results (see ``sweep.collect``)."""
    sweep_dir = Path(sweep_dir)
    table = collect(sweep_dir, cluster, planned)
    escape_formulas(table).to_csv(sweep_dir / SUMMARY_CSV, index=False, float_format="%.17g")
    plan = plot_plan(table)
    figure_path = sweep_dir / f"{SUMMARY_FIGURE}.{figure_format}"
    if plan.metrics and any(s.x for s in plan.series):
        save(summary_figure(plan, sweep_dir), figure_path, dpi=dpi, figure_format=figure_format)
    else:
        figure_path.unlink(missing_ok=True)
    return table
