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
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zsq_probe.errors import UserError
from zsq_probe.rundir.atomic import atomic_write_bytes
from zsq_probe.rundir.store import PathArg, remove_dead_temp_files

if TYPE_CHECKING:  # matplotlib loads when a figure is drawn, not with this module
    from matplotlib.axes import Axes
    from matplotlib.colors import Colormap
    from matplotlib.figure import Figure
    from matplotlib.typing import RcKeyType

DPI = 300
FORMATS = ("png", "pdf")

# Figure widths (inches) a journal page takes: one column or the full text width; `--width` picks one.
WIDTHS = {"column": 3.3, "text": 7.0}
DEFAULT_WIDTH = "text"
MIN_FONT = 7.0  # pt at the chosen width: save() raises every smaller text to this
MAX_HEIGHT = 9.0  # inches: no figure is taller (a page holds it with its caption); larger inputs go to more files

# Okabe-Ito, colour-blind safe: one colour and one marker per method, keyed by the canonical method name
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky": "#56B4E9",
    "green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "purple": "#CC79A7",
}
METHOD_STYLE = {  # method -> (colour, marker)
    "kd": (OKABE_ITO["green"], "o"),
    "gdfq": (OKABE_ITO["vermillion"], "s"),
    "kl-only": (OKABE_ITO["blue"], "^"),
    "ait": (OKABE_ITO["orange"], "D"),
    "kl-only-high-lr": ("#999999", "v"),  # grey: beside kl-only's blue in Figs. 3b/c, 4 and 5 (not a second blue)
    "qimera": (OKABE_ITO["purple"], "P"),
    "qimera+ait": (OKABE_ITO["black"], "X"),
    "baseline+gi": (OKABE_ITO["yellow"], "h"),
}
METHOD_COLORS = {m: c for m, (c, _) in METHOD_STYLE.items()}
EXTRA_COLORS = ["#882255", "#56B4E9", "#44AA99", "#DDCC77", "#332288", "#117733"]
EXTRA_MARKERS = ["p", "*", "<", ">", "d", "H"]
KD_COLOR = METHOD_COLORS["kd"]
ZQ_COLOR = METHOD_COLORS["gdfq"]
# the two losses (not methods): CE dark red solid, KL blue dashed where both share an axis
CE_COLOR = "#882255"
KL_COLOR = "#0072B2"
CE_CMAP = "Reds"
KL_CMAP = "Blues"
P_COLOR = "black"  # GI's p in Fig. 4: dotted black (the captions say so)
# Fig. 1's angle snapshots: grad KL in dark grey, not KL_COLOR, which is kl-only's method blue in the same figure
SNAPSHOT_KL_COLOR = "#404040"
LOSS_COLORS = {"ce": CE_COLOR, "kl": KL_COLOR}
LOSS_STYLES = {"ce": "-", "kl": "--"}


def canonical_method(name: object) -> str:
    """The method name colours and markers are keyed by: lower case, 'qimera-ait' -> 'qimera+ait'."""
    m = str(name or "?").strip().lower().replace("_", "-")
    return {"qimera-ait": "qimera+ait", "kl_only": "kl-only"}.get(m, m)


def method_style(name: object, index: int = 0) -> tuple[str, str]:
    """(colour, marker) of a method, the same in every figure; unknown methods take spare ones by `index`."""
    m = canonical_method(name)
    if m in METHOD_STYLE:
        return METHOD_STYLE[m]
    return EXTRA_COLORS[index % len(EXTRA_COLORS)], EXTRA_MARKERS[index % len(EXTRA_MARKERS)]


# matplotlib rc settings of every figure; applied by style().  Sizes are points at the saved size.
STYLE: dict[RcKeyType, Any] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 7,
    "figure.titlesize": 8.5,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.2,
    "lines.markersize": 4,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100,
    "savefig.dpi": DPI,
    "legend.frameon": False,
    "axes.titlepad": 3,
    "pdf.fonttype": 42,
}

_width = [DEFAULT_WIDTH]


def check_width(name: str) -> str:
    """`name` when it is one of WIDTHS, else a UserError."""
    if name not in WIDTHS:
        raise UserError(f"unknown width {name!r}: choose one of {', '.join(WIDTHS)}")
    return name


def current_width() -> str:
    """The figure width in force (`figure_width`)."""
    return _width[0]


@contextlib.contextmanager
def figure_width(name: str | None) -> Iterator[str]:
    """Size the figures built inside the block for the width `name` ('column': one column, 3.3 in)."""
    if name is None:
        yield current_width()
        return
    old = _width[0]
    _width[0] = check_width(name)
    try:
        yield name
    finally:
        _width[0] = old


_protected: list[frozenset[Path]] = [frozenset()]


@contextlib.contextmanager
def protect(paths: Iterable[PathArg]) -> Iterator[None]:
    """Inside the block `save` refuses (UserError) to replace any of `paths`: the files a command did not write
    (the output policy, zsq_probe.rundir.output)."""
    old = _protected[0]
    _protected[0] = old | {Path(p).resolve() for p in paths}
    try:
        yield
    finally:
        _protected[0] = old


_announce: list[Callable[[list[Path]], None] | None] = [None]


@contextlib.contextmanager
def announce_writes(callback: Callable[[list[Path]], None]) -> Iterator[None]:
    """Inside the block `save` calls `callback([figure path, caption path])` after the `protect` check and before
    either file lands: the output manifest lists them first (`zsq_probe.rundir.output.writing_output`).

    Args:
        callback: called with the two paths of each figure `save` writes inside the block.

    Yields:
        None, while `callback` is on.
    """
    old = _announce[0]
    _announce[0] = callback
    try:
        yield
    finally:
        _announce[0] = old


def _check_unprotected(*paths: Path) -> None:
    """UserError when one of `paths` is a file `protect` guards."""
    for path in paths:
        if path.resolve() in _protected[0]:
            raise UserError(f"{path} exists and zsq-probe did not write it: not replaced")


def fit_size(figsize: Sequence[float]) -> tuple[float, float]:
    """`figsize` scaled to the chosen width (aspect kept, height kept readable, at most MAX_HEIGHT)."""
    w, h = float(figsize[0]), float(figsize[1])
    target = WIDTHS[current_width()]
    scale = target / w
    height = h * scale
    floor = min(h, 2.2 if current_width() == "text" else 1.9)
    return target, min(max(height, floor), MAX_HEIGHT)


def style() -> contextlib.AbstractContextManager[None]:
    """A context manager drawing in the figures' style (rcParams STYLE), around pyplot calls or our own.

    Returns:
        A context manager (``matplotlib.rc_context``) applying `STYLE` inside its block and nothing outside it.
    """
    import matplotlib  # matplotlib loads when a figure is drawn (zsq_probe.plots)

    return matplotlib.rc_context(STYLE)


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A matplotlib Figure not registered with pyplot (no backend, no window); draw inside style()."""
    from matplotlib.figure import Figure  # matplotlib loads when a figure is drawn (zsq_probe.plots)

    return Figure(figsize=figsize)


def colormap(name: str) -> Colormap:
    """The matplotlib colormap `name`."""
    import matplotlib  # matplotlib loads when a figure is drawn (zsq_probe.plots)

    return matplotlib.colormaps[name]


# ------------------------------------------------------------------------------------------ output
def check_format(fmt: str) -> str:
    """`fmt` when it is one of FORMATS, else a UserError."""
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return fmt


def readable(fig: Figure) -> Figure:
    """Every text of `fig` at least MIN_FONT points; returns fig."""
    from matplotlib.text import Text  # matplotlib loads when a figure is drawn (zsq_probe.plots)

    for t in fig.findobj(Text):
        if t.get_text() and float(t.get_fontsize()) < MIN_FONT:  # a size in points (a name such as 'large' resolved)
            t.set_fontsize(MIN_FONT)
    return fig


def save(fig: Figure, out_dir: PathArg, name: str, fmt: str = "png", caption: str | None = None) -> Path:
    """Write `fig` to OUT_DIR/NAME.FMT (folder created) at DPI with its size kept (the width it was made for).

    Both files are written atomically (a hidden temporary name, then a rename).

    Args:
        fig: The figure to write.
        out_dir: The folder to write into (created when missing).
        name: The file stem.
        fmt: 'png' or 'pdf'.
        caption: Text written to OUT_DIR/NAME.txt beside the figure (none when empty).

    Returns:
        The figure's path.

    Raises:
        UserError: `fmt` is not one of FORMATS, or a file is one `protect` guards.
    """
    check_format(fmt)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.{fmt}"
    _check_unprotected(path, out / f"{name}.txt")
    if _announce[0] is not None:
        _announce[0]([path, out / f"{name}.txt"] if caption else [path])
    readable(fig)
    buffer = io.BytesIO()
    with style():
        fig.savefig(buffer, format=fmt, dpi=DPI)
    # temporary name, then rename (like the parquet parts): a writer killed meanwhile leaves no partial figure
    atomic_write_bytes(path, buffer.getvalue())
    remove_dead_temp_files(path)  # what an earlier, killed writer of this figure left
    if caption:
        atomic_write_bytes(out / f"{name}.txt", (caption.rstrip() + "\n").encode())
        remove_dead_temp_files(out / f"{name}.txt")
    return path


def safe_name(text: str) -> str:
    """`text` usable in a file name: anything but letters, digits and -_. becomes '_'."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


# -------------------------------------------------------------------------------------------- axes
def epoch_axis(ax: Axes, xlabel: str = "Epoch") -> None:
    """X axis labelled `xlabel` with at most ~8 integer ticks."""
    from matplotlib.ticker import MaxNLocator  # matplotlib loads when a figure is drawn (zsq_probe.plots)

    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))


def zero_line(ax: Axes) -> None:
    """A thin horizontal line at y = 0 behind the data."""
    ax.axhline(0.0, color="0.35", lw=0.8, ls="-", zorder=0)


def note(ax: Axes, text: str) -> None:
    """A panel that has no data says so in words (never an empty, silent panel)."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=7.5, color="0.35", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def grid_shape(n: int, max_cols: int = 3) -> tuple[int, int]:
    """(rows, columns) of a grid holding n panels, at most `max_cols` wide."""
    cols = min(n, max_cols)
    return (n + cols - 1) // cols, cols


@contextlib.contextmanager
def drawing(figsize: Sequence[float], **layout: float) -> Iterator[Figure]:
    """A new Figure at the chosen width (`figure_width`), built in the figures' style with a constrained layout
    (labels kept inside the figure, not overlapping): `with drawing(figsize) as fig: ...`.  `layout`: settings
    of the constrained layout (h_pad, w_pad, hspace, wspace) over its defaults (pads of 0.02 in)."""
    with style():
        fig = new_figure(fit_size(figsize))
        fig.set_layout_engine("constrained", **{"h_pad": 0.02, "w_pad": 0.02, **layout})
        yield fig
