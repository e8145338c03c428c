"""Figures of the noise study (seed Figs. 4, 5, 6), in the style of :mod:`lagfit_cli.io.style`."""

from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lagfit_cli.core.landscape import Landscape
from lagfit_cli.io.plots import landscape_axes, outside_legend, symbol
from lagfit_cli.io.style import BLUE, GREEN, LOSS_LABEL, VERMILION, figsize, style, wrap

CLEAN_COLOR, NOISY_COLOR = BLUE, VERMILION


def slice_label(x_name: str, y_name: str) -> str:
    return f"$s$: distance from the truth ⊥ valley in ({symbol(x_name, True)}, {symbol(y_name, True)})"


def noise_slice_figure(
    s: np.ndarray, clean: np.ndarray, noisy: np.ndarray, sigma: float, x_name: str, y_name: str, title: str
) -> Figure:
    """Seed Fig. 4: the loss along the slice, clean (left) and with noise σ (right).

    noisy (R, S): one curve per noise realization; the mean and the min–max band are drawn,
    and the noisy mean's minimum (where a fit to the noisy data lands: the bias) is marked.
    Each panel has its own y scale: the noisy loss sits far above the clean one.
    """
    with style():
        fig, axes = plt.subplots(1, 2, figsize=figsize(2, aspect=0.36))
        axes[0].plot(s, clean, color=CLEAN_COLOR, lw=1.4, label="no noise (dashed on the right)")
        axes[0].set_title("without noise")
        mean = np.nanmean(noisy, axis=0)
        band = axes[1].fill_between(s, np.nanmin(noisy, axis=0), np.nanmax(noisy, axis=0), color=NOISY_COLOR,
                                    alpha=0.25, lw=0, label=f"min–max over {noisy.shape[0]} realizations")
        (line,) = axes[1].plot(s, mean, color=NOISY_COLOR, lw=1.4, label="mean over realizations")
        axes[1].plot(s, clean, color=CLEAN_COLOR, lw=0.9, ls="--")
        i_min = int(np.nanargmin(mean))
        (marker,) = axes[1].plot(s[i_min], mean[i_min], "v", color="black", ms=6, zorder=4,
                                 label=f"noisy minimum, $s$ = {s[i_min]:.3g}")
        axes[1].set_title(f"with noise, $\\sigma$ = {sigma:g}")
        for ax in axes:
            truth = ax.axvline(0.0, color="gray", lw=0.8, ls=":", label="truth ($s$ = 0)")
            ax.set_xlabel(slice_label(x_name, y_name))
            ax.set_ylabel(LOSS_LABEL)
        fig.suptitle(wrap(title, fig))
        outside_legend(fig, [axes[0].lines[0], band, line, marker, truth])
    return fig


def noise_rms_figure(
    sigmas: np.ndarray,
    rms: np.ndarray,
    clean_range: float,
    fraction: float,
    threshold: Optional[float],
    title: str,
) -> Figure:
    """Seed Fig. 5: RMS error of the noisy loss on the slice vs σ, log-log; rms (n_σ, R).

    ``threshold``: the σ where the mean crosses ``fraction`` × the clean range (interpolated,
    ``app.tasks.noise_study.threshold_crossing``), marked on the curve."""
    with style():
        fig, ax = plt.subplots(figsize=figsize(1, aspect=0.8))
        mean = rms.mean(axis=1)
        handles = []
        if rms.shape[1] > 1:
            handles.append(ax.fill_between(sigmas, rms.min(axis=1), rms.max(axis=1), color=BLUE, alpha=0.25, lw=0,
                                           label=f"min–max over {rms.shape[1]} realizations"))
        handles += ax.loglog(sigmas, mean, "o-", color=BLUE, ms=3.5,
                             label="mean RMS error" if rms.shape[1] > 1 else "RMS error")
        level = fraction * clean_range
        handles.append(ax.axhline(level, color=VERMILION, ls="--", lw=1.0,
                                  label=f"{fraction:g} × clean loss range on the slice"))
        if threshold is not None:
            handles.append(ax.axvline(threshold, color=VERMILION, ls=":", lw=1.0,
                                      label=f"crossing at $\\sigma$ ≈ {threshold:.2g} (interpolated)"))
            ax.plot([threshold], [level], "o", mfc="none", mec=VERMILION, ms=7)
        else:
            handles.append(Line2D([], [], ls="none", label="no crossing within the sampled σ"))
        ax.set_xlabel("noise $\\sigma$")
        ax.set_ylabel("RMS error of the loss on the slice")
        ax.set_title(wrap(title, fig, 0.8))
        outside_legend(fig, handles, ncols=1)
    return fig


def _grid_minimum(landscape: Landscape, singular: Optional[np.ndarray]) -> tuple[float, float]:
    loss = landscape.loss.detach().cpu().numpy().astype(float)
    masked = np.where(np.isfinite(loss), loss, np.inf)
    if singular is not None:
        masked = np.where(singular, np.inf, masked)
    iy, ix = np.unravel_index(int(np.argmin(masked)), loss.shape)
    return float(landscape.x[ix]), float(landscape.y[iy])


def noise_landscapes_figure(
    clean: Landscape, noisy: Landscape, sigma: float, title: str,
    truth_xy: Optional[Sequence[float]] = None, singular: Optional[np.ndarray] = None,
    singular_noisy: Optional[np.ndarray] = None,
) -> Figure:
    """Seed Fig. 6: loss density without (left) and with noise σ (right), each on its own
    colour scale (on a shared one the noisy panel is one uniform colour: the noise lifts
    its floor by orders of magnitude), the noisy grid minimum marked (the bias).
    ``singular``/``singular_noisy``: the cells whose mass matrix is singular in the clean /
    the noisy data (masked)."""
    with style():
        fig, axes = plt.subplots(1, 2, figsize=figsize(2, aspect=0.42))
        handles: list = []
        for ax, landscape, name, noisy_panel, mask in (
            (axes[0], clean, "without noise", False, singular),
            (axes[1], noisy, f"with noise, $\\sigma$ = {sigma:g} (own colour scale)", True, singular_noisy),
        ):
            drawn = landscape_axes(ax, landscape, fig, label=LOSS_LABEL, singular=mask)
            handles += [h for h in drawn if h.get_label() not in {g.get_label() for g in handles}]
            ax.set_title(name)
            if truth_xy is not None and all(np.isfinite(truth_xy)):
                (star,) = ax.plot(*truth_xy, "*", color="gold", mec="black", ms=9, label="true parameters", zorder=5)
            if noisy_panel:
                (low,) = ax.plot(*_grid_minimum(landscape, mask), "X", color=GREEN, mec="black", ms=7,
                                 zorder=6, label="noisy grid minimum")
        if truth_xy is not None and all(np.isfinite(truth_xy)):
            handles.insert(0, star)
        handles.append(low)
        fig.suptitle(wrap(title, fig))
        outside_legend(fig, handles)
    return fig


def valley_figure(
    sigmas: Sequence[float], widths: np.ndarray, decades: np.ndarray, title: str,
    at_edge: Optional[np.ndarray] = None,
) -> Figure:
    """How the valley along the slice flattens with σ: its log-scale depth and its width.
    at_edge marks the σ whose minimum lies at an end of the slice: no valley left in it,
    so no width is drawn there."""
    sigmas = np.asarray(sigmas, float)
    widths, decades = np.asarray(widths, float).copy(), np.asarray(decades, float)
    edge = np.zeros(len(sigmas), bool) if at_edge is None else np.asarray(at_edge, bool)
    with style():
        fig, axes = plt.subplots(1, 2, figsize=figsize(2, aspect=0.34), sharex=True)
        handles = axes[0].semilogx(sigmas, decades, "o-", ms=3.5, color=BLUE, label="valley on the slice")
        axes[0].set_ylabel("valley depth:\nlog$_{10}$(max/min) of the loss")
        shown = np.where(edge, np.nan, widths)
        axes[1].semilogx(sigmas, shown, "o-", ms=3.5, color=BLUE)
        axes[1].set_ylabel("valley width in $s$\n(loss below √(min·max))")
        if edge.any():
            handles += axes[0].plot(sigmas[edge], decades[edge], "o", ms=7, mfc="none", mec=VERMILION,
                                    label="no valley: minimum at the end of the slice (width not drawn)")
        for ax in axes:
            ax.set_xlabel("noise $\\sigma$")
        fig.suptitle(wrap(title, fig))
        outside_legend(fig, handles)
    return fig
