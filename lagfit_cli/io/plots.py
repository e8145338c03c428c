"""Figures in one style: labelled axes with symbols, named colour bars. Returns Figures;
writing them is the report's job."""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from lagfit_cli.core.data import Dataset  # noqa: E402
from lagfit_cli.core.landscape import Landscape  # noqa: E402

STYLE = {
    "figure.figsize": (6.4, 4.8),
    "axes.grid": False,
    "axes.titlesize": 11,
    "axes.labelsize": 11,
    "legend.fontsize": 9,
    "font.size": 10,
    "savefig.bbox": "tight",
    "image.cmap": "viridis",
}

GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "theta", "lambda", "mu", "nu", "omega", "sigma", "kappa", "phi", "psi", "rho", "tau", "eta", "zeta", "xi", "chi"}


@contextmanager
def style() -> Iterator[None]:
    with plt.rc_context(STYLE):
        yield


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


def qdd_figure(data: Dataset, title: str) -> Figure:
    """Seed Fig. 1: q̈ over (q, q̇), one panel per coordinate of q̈ (over q₀, q̇₀).

    For a grid with D > 1 the panels show q̈ᵢ over the first two state variables (q₀, q₁)
    on the slice of the grid where every other state variable sits at its middle node.
    """
    if data.dof > 1 and data.grid_shape is not None:
        return _qdd_slice_figure(data, title)
    q_sym, qd_sym, qdd_sym = state_symbols(data.dof)
    with style():
        fig, axes = plt.subplots(1, data.dof, figsize=(5.6 * data.dof, 4.6), squeeze=False)
        x = data.q[:, 0].cpu().numpy()
        y = data.qd[:, 0].cpu().numpy()
        for i, ax in enumerate(axes[0]):
            z = data.qdd[:, i].cpu().numpy()
            if data.dof == 1 and data.grid_shape is not None:
                n_q, n_qd = data.grid_shape
                mesh = ax.pcolormesh(
                    x.reshape(n_q, n_qd), y.reshape(n_q, n_qd), z.reshape(n_q, n_qd),
                    shading="auto", cmap="coolwarm",
                )
            else:
                mesh = ax.scatter(x, y, c=z, s=6, cmap="coolwarm")
            fig.colorbar(mesh, ax=ax, label=qdd_sym[i])
            ax.set_xlabel(q_sym[0])
            ax.set_ylabel(qd_sym[0])
            ax.set_title(f"{qdd_sym[i]} vs ({q_sym[0]}, {qd_sym[0]})")
        fig.suptitle(title)
    return fig


def landscape_axes(
    ax, landscape: Landscape, fig: Figure, label: str = "loss",
    vmin: Optional[float] = None, vmax: Optional[float] = None,
) -> None:
    """Log-scaled loss density with the analytic valley y = slope·x drawn over it
    (colour range from the data unless vmin/vmax are given, e.g. to share it between panels)."""
    loss = landscape.loss.detach().cpu().numpy()
    positive = loss[np.isfinite(loss) & (loss > 0)]
    if vmin is None:
        vmin = max(float(positive.min()), float(positive.max()) * 1e-12) if positive.size else 1e-12
    if vmax is None:
        vmax = float(positive.max()) if positive.size else 1.0
    shown = np.where(np.isfinite(loss), np.clip(loss, vmin, vmax), np.nan)
    x = landscape.x.cpu().numpy()
    y = landscape.y.cpu().numpy()
    mesh = ax.pcolormesh(x, y, shown, norm=LogNorm(vmin=vmin, vmax=vmax), shading="auto", cmap="viridis")
    fig.colorbar(mesh, ax=ax, label=label)
    if np.isfinite(landscape.valley_slope):
        xs = np.linspace(x.min(), x.max(), 100)
        ax.plot(xs, landscape.valley_slope * xs, "w--", lw=1.2,
                label=f"valley {symbol(landscape.y_name)}/{symbol(landscape.x_name)} = {landscape.valley_slope:.4g}")
    ax.set_xlim(x.min(), x.max())
    ax.set_ylim(y.min(), y.max())
    ax.set_xlabel(symbol(landscape.x_name, trial=True))
    ax.set_ylabel(symbol(landscape.y_name, trial=True))


def paths_figure(
    landscape: Landscape,
    paths: np.ndarray,
    truth_xy: Sequence[float],
    title: str,
    diverged: Optional[np.ndarray] = None,
    reference_label: str = "true parameters",
) -> Figure:
    """Seed Figs. 3/8: gradient-descent paths (B, T, 2) over the loss landscape.

    ``truth_xy`` is marked with a star labelled ``reference_label`` (the best fit when the
    true values are unknown)."""
    with style():
        fig, ax = plt.subplots(figsize=(6.8, 5.4))
        landscape_axes(ax, landscape, fig)
        bad = np.zeros(len(paths), dtype=bool) if diverged is None else np.asarray(diverged, dtype=bool)
        # one collection for all paths: hundreds of starts draw as fast as a few
        colors = np.where(bad, "tab:red", "white")
        ax.add_collection(LineCollection([p[:, :2] for p in paths], colors=list(colors), linewidths=0.9, alpha=0.8))
        starts = np.array([p[0, :2] for p in paths])
        ends = np.array([p[-1, :2] for p in paths])
        ax.scatter(starts[:, 0], starts[:, 1], s=12, color="tab:orange", zorder=3)
        ax.scatter(ends[:, 0], ends[:, 1], s=22, marker="x", c=list(np.where(bad, "tab:red", "black")), zorder=3)
        ax.plot([], [], "o", color="tab:orange", ms=3.5, label="initial guess")
        ax.plot([], [], "x", color="black", ms=5, label="end of descent")
        ax.plot(*truth_xy, "*", color="gold", mec="black", ms=12, label=reference_label, zorder=4)
        ax.legend(loc="upper left", framealpha=0.85)
        ax.set_title(title)
    return fig


def convergence_figure(
    loss: np.ndarray, ratios: np.ndarray, ratio_labels: Sequence[str], true_ratios: Sequence[float], title: str,
    note: str = "", iterations: Optional[np.ndarray] = None,
) -> Figure:
    """Loss (T, B) and each identifiable ratio (T, B, R) against the iteration (row t is
    iteration ``iterations[t]``, by default t).

    A NaN true value (unknown) draws no truth line; ``note`` is printed under the panels
    (e.g. which parameters are gauges or not identifiable)."""
    n_ratios = ratios.shape[-1]
    with style():
        fig, axes = plt.subplots(1, 1 + n_ratios, figsize=(5.0 * (1 + n_ratios), 4.2), squeeze=False)
        iters = np.arange(loss.shape[0]) if iterations is None else iterations
        ax = axes[0, 0]
        ax.semilogy(iters, np.where(loss > 0, loss, np.nan), lw=0.8, alpha=0.7)
        ax.set_xlabel("iteration")
        ax.set_ylabel("loss (mean squared $\\ddot q$ error)")
        ax.set_title("loss per start")
        for r in range(n_ratios):
            ax = axes[0, 1 + r]
            ax.plot(iters, ratios[:, :, r], lw=0.8, alpha=0.7)
            if np.isfinite(true_ratios[r]):
                ax.axhline(true_ratios[r], color="black", ls="--", lw=1.2, label="truth")
                ax.legend()
            ax.set_xlabel("iteration")
            ax.set_ylabel(ratio_labels[r])
            ax.set_title(f"{ratio_labels[r]} per start")
        fig.suptitle(f"{title}\n{note}" if note else title)
        fig.tight_layout()
    return fig


def _qdd_slice_figure(data: Dataset, title: str) -> Figure:
    """q̈ᵢ over (q₀, q₁) on a D > 1 grid, the other state variables at their middle node."""
    q_sym, _, qdd_sym = state_symbols(data.dof)
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
        fig, axes = plt.subplots(
            1, data.dof, figsize=(5.8 * data.dof, 4.8), squeeze=False, layout="constrained"
        )
        x, y = sliced(states[:, 0]), sliced(states[:, 1])
        for i, ax in enumerate(axes[0]):
            mesh = ax.pcolormesh(x, y, sliced(data.qdd[:, i].cpu().numpy()), shading="auto", cmap="coolwarm")
            fig.colorbar(mesh, ax=ax, label=qdd_sym[i])
            ax.set_xlabel(q_sym[0])
            ax.set_ylabel(q_sym[1])
            ax.set_title(f"{qdd_sym[i]} vs ({q_sym[0]}, {q_sym[1]})")
        fig.suptitle(f"{title}\n(slice at {fixed})")
    return fig


def _all_state_symbols(dof: int) -> list[str]:
    q_sym, qd_sym, _ = state_symbols(dof)
    return q_sym + qd_sym


def qdd_scatter_figure(data: Dataset, predicted, title: str) -> Figure:
    """Fig. 1 where no grid view applies (random or measured states): the fitted model's q̈
    against the data's, one panel per coordinate, with the line of perfect agreement."""
    _, _, qdd_sym = state_symbols(data.dof)
    with style():
        fig, axes = plt.subplots(
            1, data.dof, figsize=(4.8 * data.dof, 4.6), squeeze=False, layout="constrained"
        )
        for i, ax in enumerate(axes[0]):
            true = data.qdd[:, i].cpu().numpy()
            pred = predicted[:, i].detach().cpu().numpy()
            ax.scatter(true, pred, s=6, alpha=0.6, color="tab:blue", label="data points")
            finite = np.concatenate([true, pred])
            finite = finite[np.isfinite(finite)]
            if finite.size:
                lo, hi = float(finite.min()), float(finite.max())
                ax.plot([lo, hi], [lo, hi], "k--", lw=1.0, label="fitted = data")
            ax.set_xlabel(f"{qdd_sym[i]} (data)")
            ax.set_ylabel(f"{qdd_sym[i]} (fitted model)")
            ax.set_title(f"{qdd_sym[i]}: fitted vs data")
            ax.legend(loc="upper left")
        fig.suptitle(title)
    return fig


def correlations_figure(labels: Sequence[str], matrix: np.ndarray, title: str, note: str = "") -> Figure:
    """The correlation matrix (k, k) of the reported values, each cell annotated with ρ;
    |ρ| near 1 is a pair the data barely separate."""
    k = len(labels)
    with style():
        size = 1.6 + 0.9 * k
        fig, ax = plt.subplots(figsize=(size + 1.2, size))
        image = ax.imshow(matrix, vmin=-1.0, vmax=1.0, cmap="RdBu_r")
        ax.set_xticks(range(k), labels, rotation=45, ha="right")
        ax.set_yticks(range(k), labels)
        for i in range(k):
            for j in range(k):
                rho = matrix[i, j]
                ax.text(j, i, f"{rho:+.3f}", ha="center", va="center", fontsize=9,
                        color="white" if abs(rho) > 0.6 else "black")
        fig.colorbar(image, ax=ax, label="correlation ρ")
        fig.suptitle(f"{title}\n{note}" if note else title)
        fig.tight_layout()
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
    cols = min(k, 3)
    rows = -(-k // cols)
    with style():
        fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.8 * rows), squeeze=False)
        for n, ax in enumerate(axes.flat):
            if n >= k:
                ax.set_visible(False)
                continue
            ax.plot(grids[n], delta_rss[n], "-o", ms=3, lw=1.5, color="C0", label="profile")
            if np.isfinite(threshold):
                ax.axhline(threshold, color="C3", ls="--", lw=1.2, label="95 % level")
            ax.axvline(estimates[n], color="k", ls=":", lw=1.2, label="estimate")
            se = std_errors[n] if std_errors is not None else float("nan")
            if intervals is not None and all(np.isfinite(intervals[n])) and intervals[n][1] > intervals[n][0]:
                ax.axvspan(*intervals[n], color="C2", alpha=0.12, lw=0, label="95 % interval")
            ax.set_xlabel(labels[n])
            ax.set_ylabel("ΔRSS (min over the others)")
            ax.set_title(f"profile of {labels[n]}" + (f" (± {se:.3g} s.e.)" if np.isfinite(se) and se > 0 else ""))
            lo = min(0.0, float(np.nanmin(delta_rss[n]))) if len(delta_rss[n]) else 0.0
            hi = float(np.nanmax(delta_rss[n])) if len(delta_rss[n]) else 1.0
            top = max(hi, 1.3 * threshold if np.isfinite(threshold) else hi)
            ax.set_ylim(lo - 0.03 * (top - lo + 1e-300), top * 1.05 + 1e-300)
            if n == 0:
                ax.legend(fontsize=8, framealpha=0.85)
        fig.suptitle(f"{title}\n{note}" if note else title)
        fig.tight_layout()
    return fig
