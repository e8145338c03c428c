"""Figures of the noise study (seed Figs. 4, 5, 6), in the style of :mod:`plots`."""

from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from lagfit_cli.core.landscape import Landscape
from lagfit_cli.io.plots import landscape_axes, style, symbol

LOSS_LABEL = "loss (mean squared $\\ddot q$ error)"


def slice_label(x_name: str, y_name: str) -> str:
    return f"$s$: distance from the truth ⊥ valley in ({symbol(x_name, True)}, {symbol(y_name, True)})"


def noise_slice_figure(
    s: np.ndarray, clean: np.ndarray, noisy: np.ndarray, sigma: float, x_name: str, y_name: str, title: str
) -> Figure:
    """Seed Fig. 4: the loss along the slice, clean (left) and with noise σ (right).

    noisy (R, S): one curve per noise realization; the mean and the min–max band are drawn.
    """
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.4), sharey=True)
        axes[0].plot(s, clean, color="tab:blue", lw=1.6, label="no noise")
        axes[0].set_title("without noise")
        mean = np.nanmean(noisy, axis=0)
        axes[1].fill_between(s, np.nanmin(noisy, axis=0), np.nanmax(noisy, axis=0), color="tab:orange",
                             alpha=0.3, lw=0, label=f"min–max over {noisy.shape[0]} realizations")
        axes[1].plot(s, mean, color="tab:orange", lw=1.6, label="mean over realizations")
        axes[1].plot(s, clean, color="tab:blue", lw=1.0, ls="--", label="no noise")
        axes[1].set_title(f"with noise, $\\sigma$ = {sigma:g}")
        for ax in axes:
            ax.axvline(0.0, color="gray", lw=0.8, ls=":")
            ax.set_xlabel(slice_label(x_name, y_name))
            ax.legend(loc="upper center")
        axes[0].set_ylabel(LOSS_LABEL)
        fig.suptitle(title)
    return fig


def noise_rms_figure(
    sigmas: np.ndarray,
    rms: np.ndarray,
    clean_range: float,
    fraction: float,
    threshold: Optional[float],
    title: str,
) -> Figure:
    """Seed Fig. 5: RMS error of the noisy loss on the slice vs σ, log-log; rms (n_σ, R)."""
    with style():
        fig, ax = plt.subplots(figsize=(6.8, 5.0))
        mean = rms.mean(axis=1)
        ax.fill_between(sigmas, rms.min(axis=1), rms.max(axis=1), color="tab:blue", alpha=0.25, lw=0,
                        label=f"min–max over {rms.shape[1]} realizations")
        ax.loglog(sigmas, mean, "o-", color="tab:blue", ms=4, label="mean RMS error")
        ax.axhline(fraction * clean_range, color="tab:red", ls="--", lw=1.0,
                   label=f"{fraction:g} × clean loss range on the slice")
        if threshold is not None:
            ax.axvline(threshold, color="tab:red", ls=":", lw=1.0, label=f"threshold $\\sigma$ = {threshold:g}")
        ax.set_xlabel("noise $\\sigma$")
        ax.set_ylabel("RMS error of the loss on the slice")
        ax.legend(loc="upper left")
        ax.set_title(title)
    return fig


def noise_landscapes_figure(clean: Landscape, noisy: Landscape, sigma: float, title: str) -> Figure:
    """Seed Fig. 6: loss density without (left) and with noise σ (right), one colour scale."""
    values = np.concatenate([clean.loss.cpu().numpy().ravel(), noisy.loss.cpu().numpy().ravel()])
    positive = values[np.isfinite(values) & (values > 0)]
    vmax = float(positive.max())
    vmin = max(float(positive.min()), vmax * 1e-12)
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(12.5, 5.0))
        for ax, landscape, name in ((axes[0], clean, "without noise"), (axes[1], noisy, f"with noise, $\\sigma$ = {sigma:g}")):
            landscape_axes(ax, landscape, fig, label=LOSS_LABEL, vmin=vmin, vmax=vmax)
            ax.set_title(name)
            ax.legend(loc="upper left", framealpha=0.85)
        fig.suptitle(title)
    return fig


def valley_figure(
    sigmas: Sequence[float], widths: np.ndarray, decades: np.ndarray, title: str,
    at_edge: Optional[np.ndarray] = None,
) -> Figure:
    """How the valley along the slice flattens with σ: its log-scale depth and its width
    (at_edge marks the σ whose minimum lies at an end of the slice: no valley left in it)."""
    with style():
        fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.2))
        axes[0].semilogx(sigmas, decades, "o-", ms=4)
        axes[0].set_ylabel("decades log$_{10}$(max/min) of the loss")
        axes[1].semilogx(sigmas, widths, "o-", ms=4, color="tab:green")
        axes[1].set_ylabel("width in $s$ below √(min·max) of the loss")
        if at_edge is not None and at_edge.any():
            sig = np.asarray(sigmas)[at_edge]
            for ax, values in ((axes[0], decades), (axes[1], widths)):
                ax.plot(sig, values[at_edge], "o", ms=9, mfc="none", mec="tab:red",
                        label="minimum at the end of the slice")
                ax.legend()
        for ax in axes:
            ax.set_xlabel("noise $\\sigma$")
        fig.suptitle(title)
    return fig
