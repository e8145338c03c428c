"""The estimators' figure (issue 12): the error of each fitted value against the noise σ,
one line per estimator (the median over seeds) with its band (min–max over seeds)."""

from __future__ import annotations

import contextlib
from typing import Optional

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

try:  # the house style, where io.plots provides it
    from lagfit_cli.io.plots import style
except ImportError:  # pragma: no cover - a restyled io.plots without it
    style = contextlib.nullcontext

#: colours and labels per estimator (others get matplotlib's cycle)
ESTIMATOR_LOOK = {
    "ls": ("tab:red", "least squares (ls)"),
    "eiv": ("tab:blue", "errors in variables (eiv)"),
    "tls": ("tab:green", "bias-corrected equation error (tls)"),
}


def estimator_error_figure(table: pd.DataFrame, title: str, value_col: str = "signed_rel_error") -> Figure:
    """Signed relative error (%) vs σ: one panel per reported value, one line per estimator.

    Args:
        table: rows with columns ``ratio``, ``estimator``, ``sigma``, ``seed`` and ``value_col``
            (the signed relative error of that fit).
    """
    ratios = list(dict.fromkeys(table["ratio"]))
    with style():
        fig, axes = plt.subplots(1, len(ratios), figsize=(max(7.5, 5.2 * len(ratios) + 0.6), 4.8), squeeze=False)
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
                line = ax.plot(sigmas, median, marker="o", ms=4, lw=1.6, color=colour, label=f"{label}, median")
                ax.fill_between(sigmas, low, high, color=line[0].get_color(), alpha=0.2, lw=0,
                                label=f"min–max over {seeds} seeds")
            ax.axhline(0.0, color="gray", lw=0.8, ls=":")
            positive = table["sigma"] > 0
            if bool(positive.all()):
                ax.set_xscale("log")
            ax.set_yscale("symlog", linthresh=0.1)
            ax.set_xlabel("noise $\\sigma$")
            ax.set_ylabel(f"signed relative error of {ratio} (%)")
            ax.set_title(ratio)
            ax.grid(True, which="both", alpha=0.3)
        axes[0][0].legend(fontsize=8, loc="best")
        import textwrap

        fig.suptitle("\n".join(textwrap.wrap(title, 90)), fontsize=10)
        fig.tight_layout()
    return fig


def save(fig: Figure, path, dpi: Optional[int] = 150) -> None:
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
