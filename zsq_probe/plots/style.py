"""The look of every figure (the paper's visual language) and the helpers that make, dress and save one.

KD (real-data distillation) in green, ZQ (zero-shot) in orange; CE in reds and KL in blues wherever
both losses share an axis; ZQ methods of Fig. 5 each their own colour.  Readable font sizes, a light
grid, tight layout, PNG at 150 dpi (PDF on request).

Nothing here touches matplotlib's global state: `STYLE` applies only inside `style()` (the figure
builders use it; a notebook may too), and figures are `matplotlib.figure.Figure` objects made without
pyplot, so no backend is chosen and no window opens.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from zsq_probe.errors import UserError

DPI = 150
FORMATS = ("png", "pdf")

KD_COLOR = "#1b9e77"   # green
ZQ_COLOR = "#d95f02"   # orange
CE_COLOR = "#c0392b"   # red
KL_COLOR = "#1f5fa8"   # blue
CE_CMAP = "Reds"
KL_CMAP = "Blues"
P_COLOR = "red"
LOSS_COLORS = {"ce": CE_COLOR, "kl": KL_COLOR}
METHOD_COLORS = {
    "kd": KD_COLOR,
    "gdfq": "#e41a1c",
    "kl-only": "#377eb8",
    "ait": "#4daf4a",
    "kl-only-high-lr": "#984ea3",
    "qimera": "#ff7f00",
    "qimera-ait": "#a65628",
}
EXTRA_COLORS = ["#f781bf", "#999999", "#66c2a5", "#e6ab02", "#7570b3", "#a6761d"]

# matplotlib rc settings of every figure; applied by style()
STYLE = {
    "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8.5,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.grid": True, "grid.alpha": 0.3,
    "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": DPI, "savefig.dpi": DPI,
}


def style():
    """A context manager drawing in the figures' style: `with style(): fig, ax = plt.subplots(); ...`."""
    import matplotlib

    return matplotlib.rc_context(STYLE)


def new_figure(figsize):
    """A matplotlib Figure not registered with pyplot (no backend, no window); draw inside style()."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def colormap(name: str):
    import matplotlib

    return matplotlib.colormaps[name]


# ------------------------------------------------------------------------------------------ output
def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return fmt


def save(fig, out_dir, name: str, fmt: str = "png") -> Path:
    """Write `fig` to OUT_DIR/NAME.FMT (folder created) at DPI, tight bounding box; returns the path."""
    check_format(fmt)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.{fmt}"
    with style():
        fig.savefig(path, format=fmt, dpi=DPI, bbox_inches="tight")
    return path


def safe_name(text: str) -> str:
    """`text` usable in a file name: anything but letters, digits and -_. becomes '_'."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


# -------------------------------------------------------------------------------------------- axes
def epoch_axis(ax, xlabel: str = "Epoch") -> None:
    """x axis labelled `xlabel` with at most ~8 integer ticks."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))


def zero_line(ax) -> None:
    ax.axhline(0.0, color="0.35", lw=0.8, ls="-", zorder=0)


def note(ax, text: str) -> None:
    """A panel that has no data says so in words (never an empty, silent panel)."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.35",
            wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def grid_shape(n: int, max_cols: int = 3) -> tuple[int, int]:
    """(rows, columns) of a grid holding n panels, at most `max_cols` wide."""
    cols = min(n, max_cols)
    return (n + cols - 1) // cols, cols


@contextlib.contextmanager
def drawing(figsize):
    """`with drawing(figsize) as fig:` a new Figure, built in the figures' style."""
    with style():
        yield new_figure(figsize)
