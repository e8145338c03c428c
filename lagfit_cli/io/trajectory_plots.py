"""Figures of time series: simulated runs q(t) (``task=simulate``) and the rollout check,
measured vs predicted q per coordinate (``fig_rollout``, task=fit on trajectory data)."""

from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from lagfit_cli.core.rollout import Rollout
from lagfit_cli.core.trajectory import Trajectories
from lagfit_cli.io.plots import style

#: at most this many runs are drawn (the rest are in the CSV)
MAX_RUNS_SIMULATED, MAX_RUNS_ROLLOUT = 10, 4


def coordinate_label(name: str) -> str:
    return f"${name[0]}_{{{name[1:]}}}$" if len(name) > 1 and name[0] == "q" and name[1:].isdigit() else name


def trajectories_figure(trajectories: Trajectories, title: str) -> Figure:
    """q(t): one panel per coordinate, one line per run (the first ``MAX_RUNS_SIMULATED``)."""
    names = list(trajectories.coordinate_names) or [f"q{i}" for i in range(trajectories.dof)]
    runs = trajectories.runs[:MAX_RUNS_SIMULATED]
    with style():
        fig, axes = plt.subplots(len(names), 1, figsize=(7.2, 2.4 * len(names) + 0.8), sharex=True, squeeze=False)
        for i, (ax, name) in enumerate(zip(axes[:, 0], names)):
            for run in runs:
                ax.plot(run.t, run.q[:, i], lw=1.0, label=f"run {run.name}")
            ax.set_ylabel(coordinate_label(name))
            ax.grid(True, alpha=0.3)
        axes[-1, 0].set_xlabel("time $t$ (s)")
        shown = "" if len(trajectories.runs) <= MAX_RUNS_SIMULATED else f" (first {MAX_RUNS_SIMULATED} of {len(trajectories.runs)} runs)"
        axes[0, 0].set_title(title + shown)
        if len(runs) > 1:
            axes[0, 0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def rollout_figure(check: Rollout, title: str, runs: Sequence[int] | None = None) -> Figure:
    """Measured (dots) vs predicted (line) q per coordinate: one column per run (up to
    ``MAX_RUNS_ROLLOUT``), one row per coordinate; the tolerance band shaded around the
    prediction and the time it is left marked."""
    chosen = list(runs) if runs is not None else list(range(min(len(check.runs), MAX_RUNS_ROLLOUT)))
    names = list(check.coordinate_names)
    with style():
        fig, axes = plt.subplots(
            len(names), len(chosen), figsize=(3.6 * len(chosen) + 1.2, 2.4 * len(names) + 1.0),
            sharex="col", squeeze=False,
        )
        for c, r in enumerate(chosen):
            run = check.runs[r]
            for i, name in enumerate(names):
                ax = axes[i, c]
                step = max(1, len(run.t) // 200)
                ax.plot(run.t[::step], run.measured[::step, i], ".", ms=3, color="black", label="measured")
                ax.plot(run.t, run.predicted[:, i], "-", lw=1.2, color="tab:blue", label="predicted")
                band = check.tolerance_abs[i]
                ax.fill_between(run.t, run.predicted[:, i] - band, run.predicted[:, i] + band,
                                color="tab:blue", alpha=0.15, lw=0, label=f"±{check.tolerance:g} of range")
                if run.left_tolerance:
                    ax.axvline(run.time_within, color="tab:red", ls="--", lw=1.0, label="leaves tolerance")
                ax.grid(True, alpha=0.3)
                if c == 0:
                    ax.set_ylabel(coordinate_label(name))
                if i == 0:
                    within = f"{run.time_within:.3g} s" if run.left_tolerance else f"≥ {run.time_within:.3g} s"
                    ax.set_title(f"run {run.name}: within tolerance {within}", fontsize=9)
                if i == len(names) - 1:
                    ax.set_xlabel("time from the run's start (s)")
        shown_labels: dict = {}
        for ax in axes.flat:  # every label once ("leaves tolerance" only where a run does)
            for handle, label in zip(*ax.get_legend_handles_labels()):
                shown_labels.setdefault(label, handle)
        handles, labels = list(shown_labels.values()), list(shown_labels)
        fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, -0.02))
        shown = "" if len(check.runs) <= len(chosen) else f" (first {len(chosen)} of {len(check.runs)} runs)"
        fig.suptitle(f"{title}{shown}\nRMS error {check.rms:.3g} over {check.horizon:g} s")
        fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig
