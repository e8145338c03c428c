"""Figures of time series: simulated runs q(t) (``task=simulate``) and the rollout check,
measured vs predicted q per coordinate (``fig_rollout``, task=fit on trajectory data)."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from lagfit_cli.core.rollout import Rollout
from lagfit_cli.core.trajectory import Trajectories
from lagfit_cli.io.plots import outside_legend
from lagfit_cli.io.style import BLACK, BLUE, VERMILION, figsize, style, wrap

#: at most this many runs are drawn (the rest are in the CSV)
MAX_RUNS_SIMULATED, MAX_RUNS_ROLLOUT = 10, 4


def coordinate_label(name: str) -> str:
    return f"${name[0]}_{{{name[1:]}}}$" if len(name) > 1 and name[0] == "q" and name[1:].isdigit() else name


def trajectories_figure(trajectories: Trajectories, title: str) -> Figure:
    """q(t): one panel per coordinate, one line per run (the first ``MAX_RUNS_SIMULATED``)."""
    names = list(trajectories.coordinate_names) or [f"q{i}" for i in range(trajectories.dof)]
    runs = trajectories.runs[:MAX_RUNS_SIMULATED]
    with style():
        fig, axes = plt.subplots(len(names), 1, figsize=figsize(2, height=0.55 * len(names) + 0.35), sharex=True, squeeze=False)
        for i, (ax, name) in enumerate(zip(axes[:, 0], names)):
            for run in runs:
                ax.plot(run.t, run.q[:, i], lw=1.0, label=f"run {run.name}")
            ax.set_ylabel(coordinate_label(name))
            ax.grid(True, alpha=0.3)
        axes[-1, 0].set_xlabel("time $t$ (s)")
        shown = "" if len(trajectories.runs) <= MAX_RUNS_SIMULATED else f" (first {MAX_RUNS_SIMULATED} of {len(trajectories.runs)} runs)"
        fig.suptitle(wrap(title + shown, fig))
        if len(runs) > 1:
            outside_legend(fig, axes[0, 0].get_lines(), where="right")
    return fig


def rollout_figure(check: Rollout, title: str, runs: Sequence[int] | None = None) -> Figure:
    """Measured (dots) vs predicted (line) q per coordinate: one column per run (up to
    ``MAX_RUNS_ROLLOUT``), one row per coordinate; the tolerance band shaded around the
    prediction and the time it is left marked."""
    chosen = list(runs) if runs is not None else list(range(min(len(check.runs), MAX_RUNS_ROLLOUT)))
    names = list(check.coordinate_names)
    with style():
        fig, axes = plt.subplots(
            len(names), len(chosen), figsize=figsize(2, height=0.6 * len(names) + 0.45),
            sharex="col", squeeze=False,
        )
        for c, r in enumerate(chosen):
            run = check.runs[r]
            for i, name in enumerate(names):
                ax = axes[i, c]
                step = max(1, len(run.t) // 200)
                ax.plot(run.t[::step], run.measured[::step, i], ".", ms=2.5, color=BLACK, label="measured")
                ax.plot(run.t, run.predicted[:, i], "-", color=BLUE, label="predicted by the fit")
                band = check.tolerance_abs[i]
                ax.fill_between(run.t, run.predicted[:, i] - band, run.predicted[:, i] + band,
                                color=BLUE, alpha=0.2, lw=0, label=f"tolerance ±{check.tolerance:g} × range of q")
                if run.left_tolerance:
                    ax.axvline(run.time_within, color=VERMILION, ls="--", lw=1.0, label="leaves the tolerance")
                ax.grid(True, alpha=0.3)
                if c == 0:
                    ax.set_ylabel(coordinate_label(name))
                if i == 0:
                    within = f"{run.time_within:.3g} s" if run.left_tolerance else f"≥ {run.time_within:.3g} s"
                    ax.set_title(f"run {run.name}: within {within}")
                if i == len(names) - 1:
                    ax.set_xlabel("time $t$ (s)")
        shown_labels: dict = {}
        for ax in axes.flat:  # every label once ("leaves tolerance" only where a run does)
            for handle, label in zip(*ax.get_legend_handles_labels()):
                shown_labels.setdefault(label, handle)
        handles = list(shown_labels.values())
        outside_legend(fig, handles)
        shown = "" if len(check.runs) <= len(chosen) else f" (first {len(chosen)} of {len(check.runs)} runs)"
        fig.suptitle(wrap(f"{title}{shown}: measured vs simulated from the first state; RMS error "
                          f"{check.rms:.3g} over {check.horizon:g} s", fig))
    return fig
