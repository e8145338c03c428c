"""Figures of a fit and of a landscape, in the one style of :mod:`lagfit_cli.io.style`
(paper or slides sizes, constrained layout, colour-blind-safe colours, legends outside the
data). Each function returns a Figure; writing it is the report's job (``style.save``)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Mapping, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import patheffects
from matplotlib.collections import LineCollection
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from lagfit_cli.io.style import (
    BLACK, CMAP_LOSS, CMAP_SIGNED, LOSS_LABEL, STATUS_COLORS, STATUS_LABELS, figsize, style, wrap,
)

if TYPE_CHECKING:  # annotations only: a sweep's summary figure needs no torch
    from lagfit_cli.core.data import Dataset
    from lagfit_cli.core.landscape import Landscape

GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "theta", "lambda", "mu", "nu", "omega", "sigma", "kappa", "phi", "psi", "rho", "tau", "eta", "zeta", "xi", "chi"}

#: a line drawn over a colour map: white with a black outline, visible on any colour (and
#: in a legend on a white box)
OUTLINED = [patheffects.withStroke(linewidth=2.6, foreground="black")]
#: the colour of grid cells whose loss is exactly 0 (below any log colour scale)
ZERO_COLOR = "white"
SINGULAR_LABEL = "mass matrix singular in the data (loss masked)"
#: a loss below this fraction of the landscape's largest is 0 up to rounding (exact data)
ZERO_RTOL = 1e-24

__all__ = [
    "style", "symbol", "state_symbols", "qdd_figure", "qdd_scatter_figure", "landscape_axes",
    "landscape_figure", "paths_figure", "convergence_figure", "correlations_figure",
    "profiles_figure", "outside_legend", "LOSS_LABEL",
]


def symbol(name: str, trial: bool = False) -> str:
    """Mathtext for a parameter name: 'alpha' -> α, 'm1' -> m₁, with a 'trial' subscript."""
    match = re.fullmatch(r"([A-Za-z]+?)_?(\d*)", name)
    base, index = (match.group(1), match.group(2)) if match else (name, "")
    base = "\\" + base if base in GREEK else base
    subscript = ",".join(s for s in (index, r"\mathrm{trial}" if trial else "") if s)
    return f"${base}_{{{subscript}}}$" if subscript else f"${base}$"


def state_symbols(dof: int) -> tuple[list[str], list[str], list[str]]:
    """Mathtext names of q, q̇, q̈ per coordinate."""
    if dof == 1:
        return [r"$q$"], [r"$\dot q$"], [r"$\ddot q$"]
    idx = range(dof)
    return [f"$q_{i}$" for i in idx], [f"$\\dot q_{i}$" for i in idx], [f"$\\ddot q_{i}$" for i in idx]


def state_labels(dof: int, columns: Optional[Mapping[str, str]] = None) -> tuple[list[str], list[str], list[str]]:
    """Axis labels of q, q̇, q̈ per coordinate: the user's column name (as in the file, units
    included when the header has them) with the symbol, e.g. 'omega ($\\dot q$)'."""
    symbols = state_symbols(dof)
    columns = dict(columns or {})
    out = []
    for prefix, names in zip(("q", "qd", "qdd"), symbols):
        out.append([
            f"{columns[f'{prefix}{i}']} ({sym})" if columns.get(f"{prefix}{i}") else sym
            for i, sym in enumerate(names)
        ])
    return out[0], out[1], out[2]


def outside_legend(fig: Figure, handles: Sequence, ncols: Optional[int] = None, where: str = "lower") -> None:
    """One legend for the figure, outside every axes (below them by default)."""
    handles = [h for h in handles if h.get_label() and not h.get_label().startswith("_")]
    if not handles:
        return
    if ncols is None:  # as many columns as fit the width (label widths estimated from their length)
        size = plt.rcParams["legend.fontsize"]
        size = size if isinstance(size, (int, float)) else 8.0
        longest = max(len(re.sub(r"\$|\\[a-z]+|[{}_^]", "", h.get_label())) for h in handles)
        per_column = (0.52 * longest + 3.5) * size  # points: text plus the handle and spacing
        ncols = max(1, min(len(handles), 4, int(0.95 * fig.get_figwidth() * 72 // per_column)))
    fig.legend(handles=handles, loc=f"outside {where} center", ncols=ncols, frameon=False)


def _signed_norm(values: np.ndarray) -> Normalize:
    top = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 1.0
    top = top if top > 0 else 1.0
    return Normalize(-top, top)


def qdd_figure(data: Dataset, title: str, columns: Optional[Mapping[str, str]] = None) -> Figure:
    """Seed Fig. 1: q̈ over (q, q̇), one panel per coordinate of q̈ (over q₀, q̇₀).

    For a grid with D > 1 the panels show q̈ᵢ over the first two state variables (q₀, q₁)
    on the slice of the grid where every other state variable sits at its middle node.
    ``columns``: the data file's column names (lagfit's name -> the file's), used as labels.
    """
    if data.dof > 1 and data.grid_shape is not None:
        return _qdd_slice_figure(data, title, columns)
    q_lab, qd_lab, qdd_lab = state_labels(data.dof, columns)
    with style():
        fig, axes = _panel_grid(data.dof, aspect=0.85)
        x = data.q[:, 0].cpu().numpy()
        y = data.qd[:, 0].cpu().numpy()
        for i, ax in enumerate(axes):
            z = data.qdd[:, i].cpu().numpy()
            norm = _signed_norm(z)
            if data.dof == 1 and data.grid_shape is not None:
                n_q, n_qd = data.grid_shape
                mesh = ax.pcolormesh(x.reshape(n_q, n_qd), y.reshape(n_q, n_qd), z.reshape(n_q, n_qd),
                                     shading="auto", cmap=CMAP_SIGNED, norm=norm, rasterized=True)
            else:
                mesh = ax.scatter(x, y, c=z, s=5, cmap=CMAP_SIGNED, norm=norm, rasterized=True)
            fig.colorbar(mesh, ax=ax, label=qdd_lab[i])
            ax.set_xlabel(q_lab[0])
            ax.set_ylabel(qd_lab[0])
        _title(fig, axes, title)
    return fig


def _title(fig: Figure, axes: Sequence, title: str) -> None:
    """One title: on the axes when there is one panel, above the figure otherwise."""
    if len(axes) == 1:
        axes[0].set_title(wrap(title, fig, 0.8))
    else:
        fig.suptitle(wrap(title, fig))


def _panel_grid(n: int, aspect: float = 0.8, max_cols: int = 2, **kwargs) -> tuple[Figure, list]:
    """``n`` panels in rows of at most ``max_cols``: one column wide for one panel, the
    page width otherwise; the surplus axes of the last row are removed."""
    cols = min(n, max_cols)
    rows = -(-n // cols)
    width, _ = figsize(1 if cols == 1 else 2)
    fig, axes = plt.subplots(rows, cols, figsize=(width, aspect * width / cols * rows + 0.3),
                             squeeze=False, **kwargs)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.remove()
    return fig, flat[:n]


def landscape_axes(
    ax, landscape: Landscape, fig: Figure, label: str = LOSS_LABEL,
    vmin: Optional[float] = None, vmax: Optional[float] = None,
    singular: Optional[np.ndarray] = None, valley: bool = True,
) -> list:
    """Log-scaled loss density with the analytic valley y = slope·x drawn over it; returns
    legend handles for what it drew.

    The colour range comes from the data unless vmin/vmax are given. Cells whose loss is 0
    (to rounding: below ZERO_RTOL × the largest) are drawn in white (below the colour bar, which then says so); cells in
    ``singular`` (ny, nx) — parameters at which the mass matrix vanishes somewhere in the
    data, so q̈ and the loss there are meaningless — are masked, hatched and labelled, and
    do not set the colour range. ``valley``: draw the valley line (only through a known
    truth)."""
    loss = landscape.loss.detach().cpu().numpy().astype(float)
    bad = ~np.isfinite(loss)
    if singular is not None:
        bad |= np.asarray(singular, dtype=bool)
    finite = loss[~bad]
    top = float(finite.max()) if finite.size else 0.0
    # exact data: cells on the valley have loss 0, or a rounding residue ~1e-30 of it
    zero = ~bad & (loss <= ZERO_RTOL * max(top, 0.0))
    positive = loss[~bad & ~zero]
    if vmax is None:
        vmax = float(positive.max()) if positive.size else 1.0
    if vmin is None:
        vmin = max(float(positive.min()), vmax * 1e-12) if positive.size else vmax * 1e-12
    vmin = min(vmin, vmax * (1 - 1e-9))
    shown = np.where(bad, np.nan, np.clip(loss, vmin, vmax))
    shown[zero] = vmin * 0.5  # under the scale: drawn in ZERO_COLOR
    cmap = plt.get_cmap(CMAP_LOSS).with_extremes(under=ZERO_COLOR, bad="#d9d9d9")
    x = landscape.x.cpu().numpy()
    y = landscape.y.cpu().numpy()
    mesh = ax.pcolormesh(x, y, shown, norm=LogNorm(vmin=vmin, vmax=vmax), shading="auto", cmap=cmap,
                         rasterized=True)
    bar = fig.colorbar(mesh, ax=ax, extend="min" if zero.any() else "neither")
    bar.set_label(label)
    handles = []
    if zero.any():
        handles.append(Patch(facecolor=ZERO_COLOR, edgecolor="black", lw=0.5, label="loss = 0 (to rounding)"))
    if singular is not None and np.asarray(singular).any():
        ax.contourf(x, y, np.asarray(singular, dtype=float), levels=[0.5, 1.5], colors="none",
                    hatches=["////"])
        handles.append(Patch(facecolor="#d9d9d9", edgecolor="black", hatch="////", lw=0.5, label=SINGULAR_LABEL))
    if valley and np.isfinite(landscape.valley_slope):
        xs = np.linspace(x.min(), x.max(), 100)
        (line,) = ax.plot(xs, landscape.valley_slope * xs, "--", color="white", lw=1.0, path_effects=OUTLINED,
                          label=f"valley {symbol(landscape.y_name)}/{symbol(landscape.x_name)} = "
                                f"{landscape.valley_slope:.4g}")
        handles.append(line)
    ax.set_xlim(x.min(), x.max())
    ax.set_ylim(y.min(), y.max())
    ax.set_xlabel(symbol(landscape.x_name, trial=True))
    ax.set_ylabel(symbol(landscape.y_name, trial=True))
    return handles


def landscape_figure(
    landscape: Landscape, truth_xy: Optional[Sequence[float]], title: str,
    singular: Optional[np.ndarray] = None, note: str = "",
) -> Figure:
    """Seed Fig. 2: the loss over two parameters, the valley and the truth marked."""
    with style():
        fig, ax = plt.subplots(figsize=figsize(1, aspect=1.15 if note else 1.05))
        known = truth_xy is not None and all(np.isfinite(truth_xy))
        handles = landscape_axes(ax, landscape, fig, singular=singular, valley=known)
        if known:
            (star,) = ax.plot(*truth_xy, "*", color="gold", mec="black", ms=10, label="true parameters")
            handles.append(star)
        ax.set_title(wrap(title + (f"\n{note}" if note else ""), fig, 0.75))
        outside_legend(fig, handles, ncols=1)
    return fig


def _status_of(paths: Sequence, statuses: Optional[Sequence[str]], diverged) -> list[str]:
    if statuses is not None:
        return list(statuses)
    bad = np.zeros(len(paths), dtype=bool) if diverged is None else np.asarray(diverged, dtype=bool)
    return ["diverged" if b else "converged" for b in bad]


def paths_figure(
    landscape: Landscape,
    paths: Sequence[np.ndarray],
    truth_xy: Sequence[float],
    title: str,
    diverged: Optional[np.ndarray] = None,
    reference_label: str = "true parameters",
    statuses: Optional[Sequence[str]] = None,
    singular: Optional[np.ndarray] = None,
    note: str = "",
    valley: bool = True,
) -> Figure:
    """Seed Figs. 3/8: descent paths (each (T, 2)) over the loss landscape, coloured by the
    start's status (``statuses``, or ``diverged`` alone).

    ``truth_xy`` is marked with a star labelled ``reference_label`` (the best fit when the
    true values are unknown: then pass ``valley=False``, as the valley through an unknown
    truth is not known). A start that never moved (its path is one point) is drawn as a
    hollow square and named in the legend. ``note`` is printed under the title (e.g. that
    the landscape is a 2-D slice of a larger parameter space)."""
    status = _status_of(paths, statuses, diverged)
    with style():
        fig, ax = plt.subplots(figsize=figsize(1, aspect=1.3 if note else 1.2))
        handles = landscape_axes(ax, landscape, fig, singular=singular, valley=valley)
        moved = [len(p) > 1 and np.ptp(p[:, :2], axis=0).max() > 0 for p in paths]
        colors = [STATUS_COLORS.get(s, BLACK) for s in status]
        # one collection for all paths: hundreds of starts draw as fast as a few
        ax.add_collection(LineCollection(
            [p[:, :2] for p, m in zip(paths, moved) if m], colors=[c for c, m in zip(colors, moved) if m],
            linewidths=0.7, alpha=0.55, zorder=2,
        ))
        starts = np.array([p[0, :2] for p in paths])
        ends = np.array([p[-1, :2] for p in paths])
        still = np.array([not m for m in moved])
        ax.scatter(starts[~still, 0], starts[~still, 1], s=9, facecolors="white", edgecolors="black",
                   linewidths=0.5, zorder=3)
        ax.scatter(ends[~still, 0], ends[~still, 1], s=22, c=[c for c, s in zip(colors, still) if not s],
                   edgecolors="black", linewidths=0.6, zorder=4)
        if still.any():
            ax.scatter(ends[still, 0], ends[still, 1], s=26, marker="s", facecolors="none",
                       edgecolors=[c for c, s in zip(colors, still) if s], linewidths=1.2, zorder=4)
        (star,) = ax.plot(*truth_xy, "*", color="gold", mec="black", ms=10, label=reference_label, zorder=5)
        handles = [star] + handles
        handles.append(Line2D([], [], ls="none", marker="o", mfc="white", mec="black", ms=3.5, label="start"))
        for name in STATUS_COLORS:
            n = status.count(name)
            if n:
                handles.append(Line2D([], [], color=STATUS_COLORS[name], marker="o", mec="black", ms=4.5, lw=1,
                                      label=f"end: {STATUS_LABELS[name]} ({n})"))
        if still.any():
            frozen = [st for st, s_ in zip(status, still) if s_]
            why = ("already at a minimum" if all(st == "converged" for st in frozen)
                   else "stopped at its first step")
            handles.append(Line2D([], [], ls="none", marker="s", mfc="none", mec="black", ms=4.5,
                                  label=f"start that never moved ({len(frozen)}): {why}"))
        ax.set_title(wrap(title + (f"\n{note}" if note else ""), fig, 0.75))
        outside_legend(fig, handles, ncols=1)
    return fig


def convergence_figure(
    loss: np.ndarray, ratios: np.ndarray, ratio_labels: Sequence[str], true_ratios: Sequence[float], title: str,
    note: str = "", iterations: Optional[np.ndarray] = None, statuses: Optional[Sequence[str]] = None,
) -> Figure:
    """Loss (T, B) and each identifiable value (T, B, R) against the iteration (row t is
    iteration ``iterations[t]``, by default t), one line per start coloured by its status;
    panels wrap into rows of two.

    A NaN true value (unknown) draws no truth line; ``note`` is printed under the title
    (e.g. which parameters only set the scale or are not identifiable)."""
    n_ratios = ratios.shape[-1]
    n_starts = loss.shape[1]
    status = list(statuses) if statuses is not None else ["converged"] * n_starts
    colors = [STATUS_COLORS.get(s, BLACK) for s in status]
    each = f" ({n_starts} starts)" if n_starts > 1 else ""
    with style():
        fig, axes = _panel_grid(1 + n_ratios, aspect=0.75)
        iters = np.arange(loss.shape[0]) if iterations is None else iterations
        ax = axes[0]
        for b in range(n_starts):
            ax.semilogy(iters, np.where(loss[:, b] > 0, loss[:, b], np.nan), lw=0.8, alpha=0.7, color=colors[b])
        ax.set_xlabel("iteration")
        ax.set_ylabel(LOSS_LABEL)
        ax.set_title("loss" + each)
        handles = []
        for r in range(n_ratios):
            ax = axes[1 + r]
            for b in range(n_starts):
                ax.plot(iters, ratios[:, b, r], lw=0.8, alpha=0.7, color=colors[b])
            if np.isfinite(true_ratios[r]):
                line = ax.axhline(true_ratios[r], color="black", ls="--", lw=1.0, label="true value")
                if not handles:
                    handles.append(line)
            ax.set_xlabel("iteration")
            ax.set_ylabel(ratio_labels[r])
            ax.set_title(ratio_labels[r] + each)
        for ax in axes:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for name in STATUS_COLORS:
            n = status.count(name)
            if n:
                handles.append(Line2D([], [], color=STATUS_COLORS[name], lw=1.2, label=f"{STATUS_LABELS[name]} ({n})"))
        fig.suptitle(wrap(f"{title}\n{note}" if note else title, fig))
        outside_legend(fig, handles)
    return fig


def _qdd_slice_figure(data: Dataset, title: str, columns: Optional[Mapping[str, str]] = None) -> Figure:
    """q̈ᵢ over (q₀, q₁) on a D > 1 grid, the other state variables at their middle node."""
    q_lab, _, qdd_lab = state_labels(data.dof, columns)
    shape = data.grid_shape
    index = tuple([slice(None), slice(None)] + [n // 2 for n in shape[2:]])

    def sliced(values: np.ndarray) -> np.ndarray:
        return values.reshape(shape)[index]

    states = np.concatenate([data.q.cpu().numpy(), data.qd.cpu().numpy()], axis=1)
    fixed = ", ".join(
        f"{name} = {states.reshape(*shape, -1)[index][0, 0, 2 + k]:.3g}"
        for k, name in enumerate(_all_state_symbols(data.dof)[2:])
    )
    with style():
        fig, axes = _panel_grid(data.dof, aspect=0.85)
        x, y = sliced(states[:, 0]), sliced(states[:, 1])
        for i, ax in enumerate(axes):
            z = sliced(data.qdd[:, i].cpu().numpy())
            mesh = ax.pcolormesh(x, y, z, shading="auto", cmap=CMAP_SIGNED, norm=_signed_norm(z), rasterized=True)
            fig.colorbar(mesh, ax=ax, label=qdd_lab[i])
            ax.set_xlabel(q_lab[0])
            ax.set_ylabel(q_lab[1])
        fig.suptitle(wrap(f"{title}\n(2-D slice of the state grid at {fixed})", fig))
    return fig


def _all_state_symbols(dof: int) -> list[str]:
    q_sym, qd_sym, _ = state_symbols(dof)
    return q_sym + qd_sym


def qdd_scatter_figure(data: Dataset, predicted, title: str, columns: Optional[Mapping[str, str]] = None) -> Figure:
    """Fig. 1 where no grid view applies (random or measured states): the fitted model's q̈
    against the data's, one panel per coordinate, with the line of perfect agreement."""
    _, _, qdd_lab = state_labels(data.dof, columns)
    with style():
        fig, axes = _panel_grid(data.dof, aspect=0.9)
        handles = []
        for i, ax in enumerate(axes):
            true = data.qdd[:, i].cpu().numpy()
            pred = predicted[:, i].detach().cpu().numpy()
            points = ax.scatter(true, pred, s=5, alpha=0.6, color=STATUS_COLORS["converged"], label="data points",
                                rasterized=True)
            finite = np.concatenate([true, pred])
            finite = finite[np.isfinite(finite)]
            if finite.size:
                lo, hi = float(finite.min()), float(finite.max())
                (line,) = ax.plot([lo, hi], [lo, hi], "k--", lw=0.9, label="fitted = data")
                if i == 0:
                    handles += [points, line]
            ax.set_xlabel(f"{qdd_lab[i]}, data")
            ax.set_ylabel(f"{qdd_lab[i]}, fitted model")
        _title(fig, axes, title)
        outside_legend(fig, handles)
    return fig


def correlations_figure(labels: Sequence[str], matrix: np.ndarray, title: str, note: str = "") -> Figure:
    """The correlation matrix (k, k) of the reported values, each cell annotated with ρ;
    |ρ| near 1 is a pair the data barely separate."""
    k = len(labels)
    with style():
        columns = 1 if k <= 4 else 2
        fig, ax = plt.subplots(figsize=figsize(columns, aspect=0.95))
        image = ax.imshow(matrix, vmin=-1.0, vmax=1.0, cmap=CMAP_SIGNED)
        ax.set_xticks(range(k), labels, rotation=45 if k > 2 else 0, ha="right" if k > 2 else "center")
        ax.set_yticks(range(k), labels)
        size = plt.rcParams["font.size"] - (1 if k > 3 else 0)
        for i in range(k):
            for j in range(k):
                rho = matrix[i, j]
                ax.text(j, i, f"{rho:+.2f}", ha="center", va="center", fontsize=size,
                        color="white" if abs(rho) > 0.6 else "black")
        fig.colorbar(image, ax=ax, label="correlation ρ")
        ax.set_title(wrap(f"{title}\n{note}" if note else title, fig, 0.75))
    return fig


def profiles_figure(
    labels: Sequence[str],
    grids: Sequence[np.ndarray],
    delta_rss: Sequence[np.ndarray],
    estimates: Sequence[float],
    threshold: float,
    title: str,
    std_errors: Optional[Sequence[float]] = None,
    intervals: Optional[Sequence[tuple[float, float]]] = None,
    note: str = "",
) -> Figure:
    """One panel per reported value: ΔRSS (the loss minimised over the other parameters,
    less the best fit's) against the value, the 95 % level as a horizontal line, the
    estimate marked. A parabola crossing the level is a value the data fix; a flat curve is
    a direction they do not see."""
    k = len(labels)
    with style():
        fig, axes = _panel_grid(k, aspect=0.75)
        handles: list = []
        for n, ax in enumerate(axes):
            items = ax.plot(grids[n], delta_rss[n], "-o", ms=2.5, lw=1.2, color=STATUS_COLORS["converged"],
                            label="profile")
            if np.isfinite(threshold):
                items.append(ax.axhline(threshold, color=STATUS_COLORS["diverged"], ls="--", lw=1.0,
                                        label="95 % level"))
            items.append(ax.axvline(estimates[n], color="k", ls=":", lw=1.0, label="estimate"))
            se = std_errors[n] if std_errors is not None else float("nan")
            if intervals is not None and all(np.isfinite(intervals[n])) and intervals[n][1] > intervals[n][0]:
                items.append(ax.axvspan(*intervals[n], color=STATUS_COLORS["converged"], alpha=0.12, lw=0,
                                        label="95 % interval"))
            grid = np.asarray(grids[n], float)
            if grid.size and np.ptp(grid) <= 1e-12 * max(abs(float(estimates[n])), 1e-300):
                ax.text(0.5, 0.5, "exact data: the profile is\nnarrower than float64 resolution",
                        transform=ax.transAxes, ha="center", va="center",
                        bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.85})
            ax.set_xlabel(labels[n])
            ax.set_ylabel("ΔRSS (min over the others)")
            ax.set_title(labels[n] + (f" (s.e. {se:.2g})" if np.isfinite(se) and se > 0 else ""))
            lo = min(0.0, float(np.nanmin(delta_rss[n]))) if len(delta_rss[n]) else 0.0
            hi = float(np.nanmax(delta_rss[n])) if len(delta_rss[n]) else 1.0
            top = max(hi, 1.3 * threshold if np.isfinite(threshold) else hi)
            ax.set_ylim(lo - 0.03 * (top - lo + 1e-300), top * 1.05 + 1e-300)
            if len(items) > len(handles):
                handles = items
        fig.suptitle(wrap(f"{title}\n{note}" if note else title, fig))
        outside_legend(fig, handles)
    return fig
