"""Fig. 2c: the loss along the top Hessian eigenvector e of each loss, L(theta + k*delta*e), k in [-0.5, 0.5].

One row of panels per run (KD first), 7 in wide (one text column) with text of 7 pt or more:

* **common scale** (rows with scaling 'norm'): CE and KL on one axis.  x is the signed displacement
  ||dtheta|| / ||theta|| in % (k * step_norm / theta_norm, the same for both losses: |delta| is a fixed
  fraction of ||theta||), y the change of each loss term from theta (CE, and KL * T^2 as trained), so the
  two curvatures can be compared by eye.
* **CE** and **KL with the paper's delta** (scaling 'gradient', delta = grad L . e; 'unit' when a run has no
  'gradient' rows): each loss in its own panel, because its delta, hence what k means in parameter space,
  differs between the losses; x is k, the panel states the range of ||delta e|| / ||theta|| over the epochs
  drawn.

Quantised students: solid lines are the straight-through surrogate (quantisation offsets frozen at theta:
the loss whose Hessian gives e and lambda), dashed the re-quantised loss at the last epoch drawn.  Float
students: their one loss.  Older runs without `loss_kind` are labelled as such.  Darker = later epoch; at
most 6 epochs (evenly spaced, first and last included).  Rows with direction 'eigenvector' only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from zsq_probe.plots import runs as R
from zsq_probe.plots.style import CE_CMAP, CE_COLOR, KL_CMAP, KL_COLOR, WIDTHS, colormap, current_width, drawing, note
from zsq_probe.rundir.store import RunDir

if TYPE_CHECKING:  # matplotlib loads when a figure is drawn, not with this module
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure
    from matplotlib.lines import Line2D
    from matplotlib.typing import RcKeyType

COLUMNS = ["epoch", "loss", "direction", "scaling", "k", "loss_value"]  # needed; the rest optional (older runs)
OPTIONAL = {"loss_kind": "unrecorded", "step_norm": np.nan, "theta_norm": np.nan}
MAX_EPOCHS = 6
WIDTH = 6.8  # inches: saved with 0.1 in padding a side, the file is one 7 in text column wide
ROW_HEIGHT = 2.15
MIN_FONT = 7.5  # pt; >= 7 pt once the file is scaled to a 7 in column
TEXT: dict[RcKeyType, Any] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": MIN_FONT,
    "legend.fontsize": MIN_FONT,
    "xtick.labelsize": MIN_FONT,
    "ytick.labelsize": MIN_FONT,
    "figure.titlesize": 9,
}
LOSSES = (("ce", "CE", CE_CMAP, CE_COLOR), ("kl", "KL·T²", KL_CMAP, KL_COLOR))
KIND_ORDER = ("surrogate", "float", "requantized", "unrecorded")
KIND_TEXT = {  # one line a row; the caption explains the surrogate (quantisation offsets frozen at θ)
    "surrogate": "quantised student; solid: straight-through surrogate (its Hessian gives e, λ)",
    "float": "full-precision student",
    "requantized": "quantised student, re-quantised loss",
    "unrecorded": "loss kind not recorded (older run)",
}
DELTA_TEXT: dict[str | None, str] = {"gradient": "δ = ∂L/∂e, paper", "unit": "δ = 1"}
KIND_SHORT = {
    "surrogate": "STE surrogate (dashed: re-quantised)",
    "float": "float student",
    "requantized": "re-quantised",
    "unrecorded": "loss kind not recorded",
}


# ------------------------------------------------------------------------------------------- data
def eigen_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The eigenvector rows of a slice table, with the optional columns filled in for older runs."""
    d = df[df["direction"] == "eigenvector"].copy()
    for column, default in OPTIONAL.items():
        if column not in d.columns:
            d[column] = default
        elif isinstance(default, str):
            d[column] = d[column].astype(object).where(d[column].notna(), default)
    return d


def main_kind(d: pd.DataFrame) -> str | None:
    """The loss kind the solid lines show: the surrogate for a quantised student, else what there is."""
    kinds = set(d["loss_kind"])
    return next((k for k in KIND_ORDER if k in kinds), None)


def delta_scaling(d: pd.DataFrame) -> str | None:
    """The per-loss scaling of the paper-style panels: 'gradient' when present, else 'unit'."""
    scalings = set(d["scaling"])
    return next((s for s in ("gradient", "unit") if s in scalings), None)


def curves(d: pd.DataFrame, scaling: str | None, kind: str) -> pd.DataFrame:
    """Mean loss (and step norms) per (loss, epoch, k) for one scaling and loss kind (online and post-hoc rows
    of the same checkpoint averaged)."""
    s = d[(d["scaling"] == scaling) & (d["loss_kind"] == kind)]
    return s.groupby(["loss", "epoch", "k"], as_index=False)[["loss_value", "step_norm", "theta_norm"]].mean()


def thin(epochs: Iterable[int], n: int = MAX_EPOCHS) -> list[int]:
    """At most n of the epochs, evenly spaced, first and last included."""
    ordered = sorted(epochs)
    if len(ordered) <= n:
        return ordered
    idx = np.unique(np.round(np.linspace(0, len(ordered) - 1, n)).astype(int))
    return [ordered[i] for i in idx]


def _shade(i: int, n: int) -> float:
    return 0.4 + 0.6 * i / (n - 1) if n > 1 else 1.0


def _relative_step(g: pd.DataFrame) -> NDArray[np.float64] | None:
    """step_norm / theta_norm of a curve, or None when the run did not record them."""
    r: NDArray[np.float64] = (g["step_norm"] / g["theta_norm"]).to_numpy(dtype=float)
    return r if np.isfinite(r).all() else None


def _percent(values: ArrayLike) -> str:
    v = np.asarray(values, dtype=float)
    lo, hi = float(v.min()) * 100, float(v.max()) * 100
    if np.isclose(lo, hi, rtol=0.05):
        return f"{lo:.2g} %"
    return f"{lo:.2g}–{hi:.2g} %"


# ------------------------------------------------------------------------------------------ panels
LEGEND_EPOCHS = 4  # up to this many epochs each gets a legend entry; more: the first and the last (darker = later)


def _lines(
    ax: Axes,
    c: pd.DataFrame,
    loss: str,
    epochs: Sequence[int],
    cmap_name: str,
    x_of: Callable[[pd.DataFrame], ArrayLike],
    y_of: Callable[[pd.DataFrame], ArrayLike],
    handles: dict[str, Line2D],
    linestyle: str = "-",
    only_last: bool = False,
    label: Callable[[int], str] | None = None,
) -> list[pd.DataFrame]:
    cmap = colormap(cmap_name)
    rows = c[c["loss"] == loss]
    drawn: list[pd.DataFrame] = []
    for i, e in enumerate(epochs):
        if only_last and i != len(epochs) - 1:
            continue
        g = rows[rows["epoch"] == e].sort_values("k")
        if g.empty:
            continue
        lab = label(e) if label else None
        (h,) = ax.plot(
            x_of(g), y_of(g), color=cmap(_shade(i, len(epochs))), lw=1.0 if only_last else 1.4, ls=linestyle, label=lab
        )
        drawn.append(g)
        if lab and (len(epochs) <= LEGEND_EPOCHS or i in (0, len(epochs) - 1) or only_last):
            handles[lab] = h
    return drawn


def _blank() -> Line2D:
    """An invisible legend entry (keeps the CE and KL legend rows aligned)."""
    from matplotlib.lines import Line2D  # matplotlib loads when a figure is drawn (zsq_probe.plots)

    return Line2D([], [], alpha=0.0, label=" ")


def _epoch_label(name: str) -> Callable[[int], str]:
    return lambda e: f"{name} epoch {e}"


def _requantized_label(name: str) -> Callable[[int], str]:
    return lambda e: f"{name} re-quantised, epoch {e}"


def _common_panel(ax: Axes, d: pd.DataFrame, kind: str, handles: dict[str, Line2D]) -> bool:
    """CE and KL along the common parameter-norm scale on one axis: Delta L against ||dtheta|| / ||theta||."""
    main = curves(d, "norm", kind)
    if main.empty:
        note(ax, "no common-scale rows\n(slice_scalings: add 'norm')")
        return False
    requant = curves(d, "norm", "requantized") if kind == "surrogate" else None
    epochs = thin(main["epoch"].unique())
    fractions: list[float] = []

    def x_of(g: pd.DataFrame) -> NDArray[np.float64]:
        r = _relative_step(g)
        k: NDArray[np.float64] = g["k"].to_numpy()
        if r is not None:
            fractions.extend(r)
            return 100 * k * r
        return k

    def y_of(g: pd.DataFrame) -> NDArray[np.float64]:
        k: NDArray[np.float64] = g["k"].to_numpy()
        v: NDArray[np.float64] = g["loss_value"].to_numpy()
        return v - np.interp(0.0, k, v)

    for loss, name, cmap, _ in LOSSES:
        _lines(ax, main, loss, epochs, cmap, x_of, y_of, handles, label=_epoch_label(name))
        if requant is not None and not requant.empty:
            _lines(
                ax,
                requant,
                loss,
                epochs,
                cmap,
                x_of,
                y_of,
                handles,
                "--",
                only_last=True,
                label=_requantized_label(name),
            )
    ax.axhline(0.0, color="0.6", lw=0.6, zorder=0)
    if fractions:
        ax.set_xlabel(f"signed ‖Δθ‖/‖θ‖ (%), Δθ = k·δ·e\n|δ| = {_percent(fractions)} of ‖θ‖, k ∈ [−½, ½]")
    else:
        ax.set_xlabel("k  (θ + k·δ·e, common |δ|; norms not recorded)")
    ax.set_ylabel("L − L(θ)   (CE; KL·T²)")
    ax.set_title("CE and KL, common scale")
    return True


def _delta_panel(
    ax: Axes, d: pd.DataFrame, kind: str, loss: str, scaling: str | None, handles: dict[str, Line2D]
) -> bool:
    """One loss along its own (paper) delta: L against k."""
    name, cmap, color = next((n, c, col) for key, n, c, col in LOSSES if key == loss)
    main = curves(d, scaling, kind) if scaling else d.iloc[:0]
    main = main[main["loss"] == loss] if len(main) else main
    if main.empty or not scaling:  # no scaling: `main` is empty
        note(ax, f"no {name} rows with the paper's δ\n(slice_scalings: add 'gradient')")
        return False
    requant = curves(d, scaling, "requantized") if kind == "surrogate" else None
    epochs = thin(main["epoch"].unique())
    drawn = _lines(
        ax, main, loss, epochs, cmap, lambda g: g["k"], lambda g: g["loss_value"], handles, label=_epoch_label(name)
    )
    if requant is not None and not requant.empty:
        _lines(
            ax,
            requant,
            loss,
            epochs,
            cmap,
            lambda g: g["k"],
            lambda g: g["loss_value"],
            handles,
            "--",
            only_last=True,
            label=_requantized_label(name),
        )
    steps = [r for g in drawn if (r := _relative_step(g)) is not None]
    span = f"\n‖δe‖ = {_percent(np.concatenate(steps))} of ‖θ‖" if steps else ""
    ax.set_xlabel(f"k   (θ + k·δ·e, {DELTA_TEXT[scaling]}){span}")
    ax.set_ylabel(name, color=color)
    ax.set_title(f"{name.split('·')[0]}, own δ scaling")
    return True


# ------------------------------------------------------------------------------------ public API
def draw_loss_slice(ax: Axes, source: R.TableSource, scaling: str | None = None, loss: str | None = None) -> None:
    """Draw one run's slices along the top eigenvector into `ax`.

    Args:
        ax: The axes to draw into.
        source: A run (RunDir or folder) or its probes/slice DataFrame.
        scaling: None: the common parameter-norm scale when the run has it (CE and KL on one axis, the change
            from theta), else the paper's delta.  'norm': the common scale; 'gradient' or 'unit': the paper's
            delta (or a unit delta).
        loss: With `scaling` 'gradient' or 'unit', 'ce' or 'kl' draws that loss alone; without it both share the
            panel on twin y axes (left CE, right KL), each k in units of its own delta.

    Raises:
        UserError: `source` is not a run, or its table lacks a needed column.
    """
    run, df = R.table_of(source, "slice", COLUMNS)
    d = eigen_rows(df)
    kind = main_kind(d)
    if kind is None:
        note(ax, f"{run.name + ': ' if run is not None else ''}no eigenvector slices")
        return
    if scaling is None:
        scaling = "norm" if (d["scaling"] == "norm").any() else delta_scaling(d)
    handles: dict[str, Line2D] = {}
    if scaling == "norm":
        _common_panel(ax, d, kind, handles)
    elif loss is not None:
        _delta_panel(ax, d, kind, loss, scaling, handles)
    else:
        _twin_panel(ax, d, kind, scaling, handles)
    head = f"{R.label(run)}\n" if run is not None else ""
    ax.set_title(f"{head}top eigenvector e: {ax.get_title()}\n{KIND_SHORT[kind]}", fontsize=9)
    if handles:
        ax.legend(handles=list(handles.values()), fontsize=MIN_FONT, frameon=False)


def _twin_panel(ax: Axes, d: pd.DataFrame, kind: str, scaling: str | None, handles: dict[str, Line2D]) -> None:
    """The paper's single panel: CE (left axis) and KL (right axis), each along its own delta."""
    ax_kl = ax.twinx()
    ax_kl.grid(False)
    ax_kl.spines["right"].set_visible(True)
    c = curves(d, scaling, kind)
    requant = curves(d, scaling, "requantized") if kind == "surrogate" else None
    epochs = thin(c["epoch"].unique())
    for (loss, name, cmap, color), axis in zip(LOSSES, (ax, ax_kl)):
        _lines(
            axis, c, loss, epochs, cmap, lambda g: g["k"], lambda g: g["loss_value"], handles, label=_epoch_label(name)
        )
        if requant is not None and not requant.empty:
            _lines(
                axis,
                requant,
                loss,
                epochs,
                cmap,
                lambda g: g["k"],
                lambda g: g["loss_value"],
                handles,
                "--",
                only_last=True,
                label=_requantized_label(name),
            )
        axis.set_ylabel(name, color=color)
        axis.tick_params(axis="y", colors=color)
    ax.set_xlabel(f"k   (θ + k·δ·e, {DELTA_TEXT.get(scaling, scaling)}, δ per loss)")
    ax.set_title(f"CE and KL, each its own δ ({scaling})")


RUNS_PER_PAGE = 4  # rows per file: 4 x ROW_HEIGHT + title stays under style.MAX_HEIGHT; more go to STEM_2, ...
# at the column width a run's panels stack (side by side they have no room for their legends), so fewer runs a page
COLUMN_RUNS_PER_PAGE = 2
COLUMN_PANEL_HEIGHT = 2.0  # inches per stacked panel


def slice_figure(runs: R.RunsArg) -> list[tuple[str, Figure]]:
    """Fig. 2c: per run (KD first) the loss along the top Hessian eigenvector, one row of panels a run.

    Each row holds the common-scale panel (CE and KL on one axis) when a run has one and one panel per loss
    with the paper's delta scaling; RUNS_PER_PAGE runs a file, more continue in further files.

    Args:
        runs: Run folders or RunDirs (one or several).

    Returns:
        [(file stem, figure)], one a page, each with its caption recorded (`runs.describe`).

    Raises:
        SkipFigure: No run has probes/slice, or none has slices along the top eigenvector.
        UserError: No runs are given, or a table lacks a needed column.
    """
    runs = R.kd_first(R.representatives(R.runs_with(R.open_runs(runs), "slice", "fig2c"), "slice"))  # a seed each
    data = {r.name: eigen_rows(R.read(r, "slice", COLUMNS, "fig2c")) for r in runs}
    if all(main_kind(d) is None for d in data.values()):
        raise R.SkipFigure(
            "no run has slices along the top eigenvector (probes/slice rows with direction "
            "'eigenvector'; run `zsq-probe slice --run RUN`)"
        )
    common = any((d["scaling"] == "norm").any() for d in data.values())
    pages = R.pages(runs, COLUMN_RUNS_PER_PAGE if current_width() == "column" else RUNS_PER_PAGE)
    return [(R.page_stem("fig2c_loss_slice", i), _slice_page(page, data, common)) for i, page in enumerate(pages)]


def _slice_page(runs: Sequence[RunDir], data: Mapping[str, pd.DataFrame], common: bool) -> Figure:
    import matplotlib  # matplotlib loads when a figure is drawn (zsq_probe.plots)

    ncols = 3 if common else 2
    stacked = current_width() == "column"
    size = (
        (WIDTHS["column"], COLUMN_PANEL_HEIGHT * ncols * len(runs) + 0.35)
        if stacked
        else (WIDTH, ROW_HEIGHT * len(runs) + 0.35)
    )
    with drawing(size) as fig, matplotlib.rc_context(TEXT):
        fig.set_layout_engine("constrained", h_pad=0.06, w_pad=0.04)
        rows = fig.subfigures(len(runs), 1, squeeze=False)[:, 0]
        clipped: list[str] = []
        for sub, r in zip(rows, runs):
            clipped += _run_row(sub, r, data[r.name], common, ncols, stacked)
        fig.suptitle("Loss along the top Hessian eigenvector", fontweight="bold")
    return R.describe(fig, runs, slice_caption(runs, common, clipped))


def slice_caption(runs: Sequence[RunDir], common: bool, clipped: Sequence[str]) -> str:
    """Fig. 2c's caption: the panels, the two δ scalings and why late curves are flat along the paper's δ."""
    text = "Per run (row), the loss L(θ + k·δ·e) along the top Hessian eigenvector e of each loss, k ∈ [−½, ½]; "
    if common:
        text += (
            "left: CE and KL·T² on one parameter-norm scale (|δ| a fixed fraction of ‖θ‖, the change from L(θ)), so "
            "their curvatures compare by eye; "
        )
    text += (
        ("the other panels use" if common else "the panels use")
        + " the paper's δ = ∂L/∂e per loss: δ shrinks as the gradient along e vanishes, so "
        "late-epoch curves are flat by construction there, not because the surface is. CE in reds, KL·T² in "
        "blues, darker = later epoch; solid: the straight-through surrogate whose Hessian gives e, dashed: the "
        "re-quantised loss at the last epoch drawn."
    )
    if clipped:
        text += f" Off the y scale (annotated in the panel, far larger δ): {'; '.join(clipped)}."
    return text


def _run_row(
    sub: SubFigure, run: RunDir, d: pd.DataFrame, common: bool, ncols: int, stacked: bool = False
) -> list[str]:
    """One run's row of panels (`stacked`: one above the other); returns what was clipped off a δ panel's y scale
    ('KD, CE epoch 4', ...)."""
    grid = sub.subplots(ncols, 1, squeeze=False) if stacked else sub.subplots(1, ncols, squeeze=False)
    axes = grid[:, 0] if stacked else grid[0]
    kind = main_kind(d)
    if kind is None:
        for ax in axes:
            note(ax, f"{run.name}: no eigenvector slices")
        sub.suptitle(R.label(run), fontsize=8, x=0.01, ha="left")
        return []
    handles: dict[str, Line2D] = {}
    panels = list(axes)
    if common:
        _common_panel(panels.pop(0), d, kind, handles)
    scaling = delta_scaling(d)
    clipped: list[str] = []
    for ax, (loss, *_rest) in zip(panels, LOSSES):
        _delta_panel(ax, d, kind, loss, scaling, handles)
        clipped += [f"{R.label(run)}, {what}" for what in clip_outliers(ax)]
    what = KIND_TEXT[kind]
    if kind == "surrogate" and (d["loss_kind"] == "requantized").any():
        what += "; dashed: re-quantised"
    sub.suptitle(f"{R.label(run)}: {what}", fontsize=MIN_FONT, x=0.01, ha="left")
    if handles:
        # one legend row per loss: CE entries above KL entries
        by_loss = [[h for lab, h in handles.items() if lab.startswith(name)] for _, name, _, _ in LOSSES]
        ncol = max(len(entries) for entries in by_loss)
        ordered = [entries[i] if i < len(entries) else None for i in range(ncol) for entries in by_loss]
        sub.legend(
            handles=[h if h is not None else _blank() for h in ordered],
            loc="outside lower center",
            ncol=ncol,
            frameon=False,
            fontsize=MIN_FONT,
            handlelength=1.8,
            columnspacing=1.5,
        )
    return clipped


OUTLIER = 10.0  # a curve whose y range exceeds this many times the largest of the others' is clipped off


def clip_outliers(ax: Axes) -> list[str]:
    """Keep a δ panel readable when one epoch's curve (a far larger δ) dwarfs the others: the y axis is set to
    the other curves and the outlier is annotated with its peak; returns the labels of the curves clipped."""
    lines = [ln for ln in ax.get_lines() if len(np.asarray(ln.get_ydata())) > 1]
    ranges = [float(np.ptp(np.asarray(ln.get_ydata(), dtype=float))) for ln in lines]
    if len(lines) < 2:
        return []
    out: list[Line2D] = []
    keep: list[Line2D] = []
    for i, (ln, r) in enumerate(zip(lines, ranges)):
        others = max(ranges[:i] + ranges[i + 1 :])
        (out if others > 0 and r > OUTLIER * others else keep).append(ln)
    if not out or not keep:
        return []
    ys = np.concatenate([np.asarray(ln.get_ydata(), dtype=float) for ln in keep])
    lo, hi = float(ys.min()), float(ys.max())
    pad = 0.08 * (hi - lo or 1.0)
    ax.set_ylim(lo - pad, hi + 3 * pad)
    names = []
    for ln in out:
        names.append(f"{ln.get_label()} (peak {float(np.max(ln.get_ydata())):.3g})")
    ax.text(
        0.5,
        0.97,
        "off scale: " + ", ".join(names),
        transform=ax.transAxes,
        ha="center",
        va="top",
        fontsize=MIN_FONT,
        color="0.3",
    )
    return names
