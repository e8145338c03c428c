"""One style for every figure lagfit writes (``report.style``: paper | slides).

- sizes: :func:`figsize` gives a one- or two-column width (paper: 3.4 in and 7.0 in, the
  column widths of most journals) and a height from an aspect ratio or a number of rows;
- fonts readable at that size once printed (paper: 8 pt text, 7 pt ticks);
- ``constrained`` layout on every figure, so no label, colour bar or title is clipped;
- colour-blind-safe colours: the Okabe–Ito palette for lines, viridis/cividis for maps;
- :data:`STATUS_COLORS` / :data:`STATUS_LABELS`: one colour and one name per fit status;
- :func:`save`: the one way a figure is written; it runs :data:`SAVE_HOOKS` on the saved
  figure (the tests register a check there that no text falls outside the figure).

matplotlib is imported here but never told which backend to use (``matplotlib.use``):
that is the command's business (it sets ``MPLBACKEND=Agg``), not the library's.

A new figure adopts the style like this (and is written by ``Report.write``, which calls
:func:`save`; describe it in ``io.report.FIGURE_DESCRIPTIONS`` or ``Report.figure_notes``
for the run folder's figures/README.md)::

    from lagfit_cli.io.plots import outside_legend
    from lagfit_cli.io.style import LOSS_LABEL, figsize, style, wrap

    def my_figure(...) -> Figure:
        with style():
            fig, ax = plt.subplots(figsize=figsize(1))   # one column; figsize(2): page width
            ax.plot(..., label="...")
            ax.set_xlabel("time $t$ (s)")
            ax.set_title(wrap(title, fig))
            outside_legend(fig, ax.get_lines())           # under the axes, not on the data
        return fig
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

import matplotlib.pyplot as plt
from cycler import cycler
from matplotlib.figure import Figure
from matplotlib.text import Text

#: Okabe & Ito (2008), "Color universal design": distinguishable with every common
#: colour-vision deficiency (black first for the main line)
OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
BLUE, VERMILION, GREEN, PURPLE, ORANGE, SKY, YELLOW, BLACK = OKABE_ITO

#: a fit start's status (core.fit.STATUSES) -> its colour and its name in legends
STATUS_COLORS = {"converged": BLUE, "stalled": ORANGE, "max_iters": PURPLE, "diverged": VERMILION}
STATUS_LABELS = {
    "converged": "converged",
    "stalled": "stalled (no progress)",
    "max_iters": "iteration limit reached",
    "diverged": "diverged",
}

#: colour maps: sequential (loss), diverging (signed values, q̈), correlation
CMAP_LOSS = "viridis"
CMAP_SIGNED = "RdBu_r"
CMAP_ALT = "cividis"

#: one label for every loss axis and loss colour bar (the loss is in (units of q̈)²)
LOSS_LABEL = r"loss: mean $(\ddot q_\mathrm{model}-\ddot q_\mathrm{data})^2$"

#: widths (inches) of one and two columns, and the font size, per style
WIDTHS = {"paper": (3.4, 7.0), "slides": (5.0, 10.0)}
FONT = {"paper": 8.0, "slides": 14.0}

STYLES = {name: {
    "figure.figsize": (WIDTHS[name][1], 0.45 * WIDTHS[name][1]),
    "figure.constrained_layout.use": True,
    "figure.constrained_layout.h_pad": 0.03,
    "figure.constrained_layout.w_pad": 0.03,
    "font.size": FONT[name],
    "axes.titlesize": FONT[name],
    "axes.labelsize": FONT[name],
    "figure.titlesize": FONT[name] + 1,
    "legend.fontsize": FONT[name] - 1,
    "legend.title_fontsize": FONT[name] - 1,
    "xtick.labelsize": FONT[name] - 1,
    "ytick.labelsize": FONT[name] - 1,
    "axes.linewidth": 0.6 if name == "paper" else 1.0,
    "lines.linewidth": 1.2 if name == "paper" else 2.0,
    "lines.markersize": 4.0 if name == "paper" else 7.0,
    "axes.prop_cycle": cycler(color=OKABE_ITO),
    "axes.grid": False,
    "grid.alpha": 0.3,
    "image.cmap": CMAP_LOSS,
    "legend.framealpha": 0.9,
    "savefig.bbox": None,  # constrained layout fits everything into the stated size
    "savefig.pad_inches": 0.02,
    "svg.hashsalt": "lagfit",  # the same clip-path ids from run to run
    "mathtext.fontset": "dejavusans",
} for name in WIDTHS}

#: the style figures are drawn in (set from report.style by the app; see :func:`use`)
_current = {"name": "paper"}


def use(name: str) -> None:
    """Draw the figures that follow in style ``name`` (paper | slides)."""
    if name not in STYLES:
        raise ValueError(f"unknown figure style {name!r}; choose one of {', '.join(STYLES)}")
    _current["name"] = name


def current() -> str:
    return _current["name"]


@contextmanager
def style(name: Optional[str] = None) -> Iterator[None]:
    """rcParams of the current style (or ``name``) while figures are drawn."""
    with plt.rc_context(STYLES[name or current()]):
        yield


def figsize(columns: int = 1, aspect: float = 0.75, height: Optional[float] = None) -> tuple[float, float]:
    """(width, height) in inches: one column (1) or the page width (2); the height is
    ``aspect`` × width unless given (in units of the one-column width: rows of panels)."""
    one, two = WIDTHS[current()]
    width = one if columns == 1 else two
    return (width, height * one if height is not None else aspect * width)


NBSP = "\u00a0"


def wrap(text: str, fig: Figure, fraction: float = 1.0) -> str:
    """``text`` broken into lines that fit ``fraction`` of the figure's width."""
    import textwrap

    size = plt.rcParams["figure.titlesize"]
    size = size if isinstance(size, (int, float)) else FONT[current()] + 1
    chars = max(20, int(fraction * fig.get_figwidth() * 72 / (0.55 * size)))
    # never break inside $math$ or around "=" (σ = 0 stays on one line)
    parts = text.split("$")
    kept = "$".join(p.replace(" ", NBSP) if i % 2 else p.replace(" = ", f"{NBSP}={NBSP}")
                    for i, p in enumerate(parts))
    lines = "\n".join(textwrap.fill(line, chars, break_long_words=False) for line in kept.split("\n"))
    return lines.replace(NBSP, " ")


# --------------------------------------------------------------------------- saving

#: called as hook(figure, path) right after each figure is written, while it is still open
#: and laid out as saved (the tests register :func:`text_outside` here)
SAVE_HOOKS: list[Callable[[Figure, Path], None]] = []


def save(fig: Figure, path: Path, dpi: int = 150, figure_format: Optional[str] = None) -> None:
    """Write ``fig`` to ``path`` with fixed metadata (identical files for identical
    results), then close it. Every figure lagfit writes goes through here."""
    path = Path(path)
    figure_format = figure_format or path.suffix.lstrip(".") or "png"
    metadata = {"Software": None} if figure_format == "png" else {"Creator": None}
    if figure_format == "svg":
        metadata["Date"] = None
    if figure_format == "pdf":
        metadata["CreationDate"] = None
    try:
        fig.set_dpi(dpi)  # lay out at the dpi it is saved at, so the layout checked is the one saved
        with plt.rc_context({"svg.hashsalt": "lagfit"}):
            fig.savefig(path, dpi=dpi, metadata=metadata, format=figure_format)
        for hook in SAVE_HOOKS:
            hook(fig, path)
    finally:
        plt.close(fig)


def _drawn_texts(fig: Figure, renderer) -> list[Text]:
    """Every text artist the figure draws: titles, axis labels, the tick labels in view,
    legends, annotations, colour-bar labels."""
    texts: list[Text] = list(fig.texts)
    for sub in getattr(fig, "subfigs", []):
        texts += list(sub.texts)
    legends = list(fig.legends)
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        texts += [ax.title, ax._left_title, ax._right_title]  # noqa: SLF001
        texts += list(ax.texts)
        for axis in (ax.xaxis, ax.yaxis):
            if not axis.get_visible():
                continue
            texts += [axis.label, axis.offsetText]
            for tick in axis._update_ticks():  # noqa: SLF001 the ticks in view, as drawn
                texts += [label for label in (tick.label1, tick.label2) if label.get_visible()]
        if ax.get_legend() is not None:
            legends.append(ax.get_legend())
    for legend in legends:
        if legend.get_visible():
            texts += list(legend.get_texts()) + [legend.get_title()]
    return [t for t in texts if t.get_visible() and t.get_text().strip() and t.get_figure() is not None]


def text_outside(fig: Figure, tolerance: float = 1.0, draw: bool = True) -> list[str]:
    """The texts (with their extents in pixels) that reach outside the figure, as laid out
    by the Agg canvas; empty when every label, title and legend is inside. ``draw=False``
    checks the layout of the last draw without drawing again: right after a PNG ``savefig``
    at the figure's own dpi (as :func:`save` does), not after a vector format's (laid out
    at 72 dpi)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    if draw:
        fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    problems = []
    for text in _drawn_texts(fig, renderer):
        ext = text.get_window_extent(renderer)
        if (ext.x0 < box.x0 - tolerance or ext.y0 < box.y0 - tolerance
                or ext.x1 > box.x1 + tolerance or ext.y1 > box.y1 + tolerance):
            problems.append(
                f"{text.get_text()!r} at x {ext.x0:.0f}..{ext.x1:.0f}, y {ext.y0:.0f}..{ext.y1:.0f} "
                f"outside the figure's 0..{box.x1:.0f} × 0..{box.y1:.0f} px"
            )
    return problems


__all__ = [
    "OKABE_ITO", "STATUS_COLORS", "STATUS_LABELS", "LOSS_LABEL", "CMAP_LOSS", "CMAP_SIGNED",
    "use", "current", "style", "figsize", "wrap", "save", "SAVE_HOOKS", "text_outside",
]
