"""The estimators' figure (issue 12): the error of each fitted value against the noise σ,
one line per estimator (the median over seeds) with its band (min–max over seeds)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from lagfit_cli.io.plots import outside_legend
from lagfit_cli.io.style import BLUE, GREEN, VERMILION, figsize, style, wrap

#: colours and labels per estimator (others get the style's cycle)
ESTIMATOR_LOOK = {
    "ls": (VERMILION, "least squares (ls)"),
    "eiv": (BLUE, "errors in variables (eiv)"),
    "tls": (GREEN, "bias-corrected equation error (tls)"),
}


def estimator_error_figure(table: pd.DataFrame, title: str, value_col: str = "signed_rel_error") -> Figure:
    """Signed relative error (%) vs σ: one panel per reported value, one line per estimator.

    Args:
        table: rows with columns ``ratio``, ``estimator``, ``sigma``, ``seed`` and ``value_col``
            (the signed relative error of that fit).
    """
    ratios = list(dict.fromkeys(table["ratio"]))
    with style():
        columns = 1 if len(ratios) == 1 else 2
        fig, axes = plt.subplots(1, len(ratios), figsize=figsize(columns, aspect=0.85 if columns == 1 else 0.42), squeeze=False)
        for ax, ratio in zip(axes[0], ratios):
            part = table[table["ratio"] == ratio]
            for est in dict.fromkeys(part["estimator"]):
                rows = part[part["estimator"] == est]
                grouped = rows.groupby("sigma")[value_col]
                sigmas = np.array(sorted(grouped.groups))
                median = grouped.median().reindex(sigmas).to_numpy() * 100
                low = grouped.min().reindex(sigmas).to_numpy() * 100
                high = grouped.max().reindex(sigmas).to_numpy() * 100
                colour, label = ESTIMATOR_LOOK.get(est, (None, est))
                seeds = int(grouped.size().max())
                line = ax.plot(sigmas, median, marker="o", color=colour, label=f"{label}, median")
                ax.fill_between(sigmas, low, high, color=line[0].get_color(), alpha=0.2, lw=0,
                                label=f"min–max over {seeds} seeds")
            ax.axhline(0.0, color="gray", lw=0.8, ls=":")
            positive = table["sigma"] > 0
            if bool(positive.all()):
                ax.set_xscale("log")
            # the sampled σ's as the ticks: log axes over less than a decade label minor ticks
            shown = np.array(sorted(set(table["sigma"])))
            ax.set_xticks(shown, [f"{v:g}" for v in shown])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_yscale("symlog", linthresh=0.1)
            ax.set_xlabel("noise $\\sigma$")
            ax.set_ylabel("signed relative error (%)")
            ax.set_title(ratio)
            ax.grid(True, which="both", alpha=0.3)
        outside_legend(fig, axes[0][0].get_legend_handles_labels()[0])
        fig.suptitle(wrap(title, fig, 0.92))
    return fig
