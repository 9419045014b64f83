"""CE-KL gradient cosine: Fig. 1 (KD vs ZQ over training, with 2-D angle snapshots) and Figs. 7/8
(the same curves across models and data sets).

Curves: the epoch-mean cosine per run (line) over the per-step cosines (light dots, spread across
their epoch).  Snapshot: grad CE set to (1, 0) and grad KL drawn at the measured angle (unit length;
the norm ratio is printed), at one epoch: by default the middle epoch with data (the paper: epoch 200
of 400).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from zsq_probe.analysis import probe_tables
from zsq_probe.plots import runs as R
from zsq_probe.plots.style import CE_COLOR, SNAPSHOT_KL_COLOR, drawing, epoch_axis, zero_line
from zsq_probe.rundir.store import RunDir

if TYPE_CHECKING:  # matplotlib loads when a figure is drawn, not with this module
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch
    from matplotlib.typing import ColorType


def step_positions(steps: pd.DataFrame) -> NDArray[np.float64]:
    """X of each step row: its epoch, spread over [epoch-0.4, epoch+0.4] by step index."""
    n = steps.groupby("epoch")["step"].transform("max").to_numpy(dtype=float) + 1
    x: NDArray[np.float64] = (
        steps["epoch"].to_numpy(dtype=float) + (steps["step"].to_numpy(dtype=float) / np.maximum(n, 1) - 0.5) * 0.8
    )
    return x


# ------------------------------------------------------------------------------------- one panel
def draw_cosine(
    ax: Axes,
    source: R.TableSource,
    *,
    color: ColorType | None = None,
    scatter: bool = True,
    label: str | None = None,
) -> pd.DataFrame:
    """Draw one run's cosine curve into `ax`: epoch means (line) over per-step values (dots).

    Args:
        ax: The axes to draw into.
        source: A run (RunDir or folder) or its probes/cosine DataFrame.
        color: The curve's colour; default the run's method colour.
        scatter: Whether to draw the per-step values as dots behind the line.
        label: The legend label; default the run's label ('KD', 'ZQ: gdfq').

    Returns:
        The epoch-mean frame (epoch, cosine, angle_deg, ...).

    Raises:
        UserError: `source` is not a run, or its table lacks a needed column.
    """
    run, df = R.table_of(source, "cosine", probe_tables.COSINE_COLUMNS)
    color = R.default_color(run) if color is None else color
    return _curves(ax, run, df, color, scatter, label, figure="")


def _curves(
    ax: Axes,
    run: RunDir | None,
    df: pd.DataFrame,
    color: ColorType,
    scatter: bool,
    label: str | None,
    figure: str,
) -> pd.DataFrame:
    where = R.where(figure, run, "cosine")
    epochs = probe_tables.cosine_epochs(df, where)
    steps = probe_tables.cosine_steps(df, where)
    if scatter and (steps["statistic"] == "step").any():
        alpha = 0.45 if len(steps) < 2000 else 0.12  # light, but visible for short runs too
        ax.scatter(step_positions(steps), steps["cosine"], s=5, color=color, alpha=alpha, lw=0, rasterized=True)
    if label is None and run is not None:
        label = R.label(run)
    ax.plot(
        epochs["epoch"],
        epochs["cosine"],
        color=color,
        lw=1.2,
        marker="o" if len(epochs) <= 40 else None,
        ms=3,
        label=label,
    )
    return epochs


def draw_cosine_snapshot(
    ax: Axes, source: R.TableSource, epoch: int | None = None, *, color: ColorType | None = None
) -> None:
    """Draw the 2-D angle between grad CE and grad KL at one epoch into `ax`.

    Args:
        ax: The axes to draw into.
        source: A run (RunDir or folder) or its probes/cosine DataFrame.
        epoch: The epoch drawn; default the middle epoch with data.
        color: The frame's colour; default the run's method colour.

    Raises:
        UserError: `source` is not a run, its table lacks a needed column, or `epoch` has no data.
        SkipFigure: The table has no epoch with data.
    """
    run, df = R.table_of(source, "cosine", probe_tables.COSINE_COLUMNS)
    where = R.where("", run, "cosine")
    epochs = probe_tables.cosine_epochs(df, where)
    e = R.middle_epoch(epochs["epoch"]) if epoch is None else R.pick_epoch(epochs["epoch"], epoch, where)
    color = R.default_color(run) if color is None else color
    _snapshot(ax, run, epochs, e, color)


def _snapshot(
    ax: Axes,
    run: RunDir | None,
    epochs: pd.DataFrame,
    epoch: int,
    color: ColorType,
    n: int = 1,
    small: bool = False,
) -> None:
    row = epochs[epochs["epoch"] == epoch].iloc[0]
    angle = float(row["angle_deg"])
    if not np.isfinite(angle):
        angle = float(np.degrees(np.arccos(np.clip(row["cosine"], -1, 1))))
    th = np.radians(angle)
    ax.annotate("", xy=(1, 0), xytext=(0, 0), arrowprops={"arrowstyle": "-|>", "color": CE_COLOR, "lw": 2})
    ax.annotate(
        "",
        xy=(np.cos(th), np.sin(th)),
        xytext=(0, 0),
        arrowprops={"arrowstyle": "-|>", "color": SNAPSHOT_KL_COLOR, "lw": 2},
    )
    arc = np.linspace(0, th, 60)
    ax.plot(0.28 * np.cos(arc), 0.28 * np.sin(arc), color="0.3", lw=1)
    ax.text(1.02, -0.1, "∇CE", color=CE_COLOR, ha="right", va="top", fontsize=7)
    ax.text(1.08 * np.cos(th), 1.08 * np.sin(th), "∇KL", color=SNAPSHOT_KL_COLOR, ha="center", va="center", fontsize=7)
    ax.text(0.02, 0.02, f"{angle:.0f}°", transform=ax.transAxes, fontsize=7, va="bottom")
    ax.set_xlim(-1.25, 1.25)
    ax.set_ylim(-1.25, 1.25)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for s in ax.spines.values():
        s.set_visible(True)
        s.set_color(color)
    name = "KD" if run is not None and R.is_kd(run) else (R.method(run) if run is not None else "")
    title = (name if small else f"{name}, ep. {epoch}") if run is not None else f"epoch {epoch}"
    ax.set_title(title + (f" (n={n})" if n > 1 and not small else ""), fontsize=7, color="black")


# ------------------------------------------------------------------------------------ figures
def common_epoch(tables: Mapping[str, pd.DataFrame], epoch: int | None, figure: str) -> int:
    """The one snapshot epoch of every run: `epoch` (must have data in all), else the middle of the epochs
    all runs share (the paper: epoch 200 of 400 for both)."""
    shared = sorted(set.intersection(*[{int(e) for e in t["epoch"]} for t in tables.values()]))
    if not shared:
        raise R.SkipFigure(f"{figure}: the runs share no epoch with cosine data")
    return R.middle_epoch(shared) if epoch is None else R.pick_epoch(shared, epoch, f"{figure} (epochs all runs share)")


def cosine_figure(runs: R.RunsArg, epoch: int | None = None) -> Figure:
    """Fig. 1: the epoch-mean CE-KL gradient cosine of each method, with angle snapshots below.

    The top panel holds one curve per method (mean over its seeds, band = seed interval [min, max]), KD
    first; below, one angle snapshot per method at one common epoch, the angle averaged over the seeds.

    Args:
        runs: Run folders or RunDirs (one or several).
        epoch: The snapshot epoch; default the middle epoch all runs share.

    Returns:
        The figure, its caption recorded (`runs.describe`).

    Raises:
        SkipFigure: No run has probes/cosine, or the runs share no epoch.
        UserError: No runs are given, a table lacks a needed column, or `epoch` has no data in every run.
    """
    runs = R.kd_first(R.runs_with(R.open_runs(runs), "cosine", "fig1"))
    groups = R.seed_groups(runs)
    tables = {
        r.name: probe_tables.cosine_epochs(R.read(r, "cosine", probe_tables.COSINE_COLUMNS, "fig1"), r.name)
        for r in runs
    }
    e = common_epoch(tables, epoch, "fig1")
    n = len(groups)
    with drawing((7.0, 2.3 + 7.0 / max(n, 3))) as fig:
        gs = fig.add_gridspec(2, n, height_ratios=[2.0, 7.0 / max(n, 3) / 1.0])
        top = fig.add_subplot(gs[0, :])
        for g in groups:
            color, mk = R.kind_color(g[0]), R.marker(g[0])
            R.draw_seed_band(top, [tables[r.name] for r in g], "epoch", "cosine", color, R.label(g[0]), mk)
        top.axvline(e, color="0.5", lw=0.8, ls=":")
        warm, warm_handle = shade_warmup(top, groups, tables)
        zero_line(top)
        epoch_axis(top)
        top.set_ylabel("cos(∇CE, ∇KL)")
        top.set_title("CE–KL gradient cosine")  # seeds and bands: the caption says (fig1_caption)
        # one legend (curves, then the warm-up shading): two stacked legends overlap on a short panel
        top.legend(
            handles=[*top.get_legend_handles_labels()[0], *warm_handle], loc="upper left", bbox_to_anchor=(1.0, 1.0)
        )
        for i, g in enumerate(groups):
            rows = [tables[r.name][tables[r.name]["epoch"] == e] for r in g]
            mean = rows[0].copy()
            for col in ("cosine", "angle_deg", "grad_norm_ce", "grad_norm_kl"):
                mean[col] = float(np.mean([float(x[col].iloc[0]) for x in rows]))
            _snapshot(fig.add_subplot(gs[1, i]), g[0], mean, e, R.kind_color(g[0]), n=len(g))
    return R.describe(fig, runs, fig1_caption(groups, e, warm))


def warmup_epochs(group: Sequence[RunDir], tables: Mapping[str, pd.DataFrame]) -> int:
    """The warm-up epochs of a seed group (config `warmup_epochs`) when its cosine starts after them, else 0."""
    warm = int(R.config(group[0]).get("warmup_epochs") or 0)
    first = min(int(tables[r.name]["epoch"].min()) for r in group)
    return warm if warm and first > warm else 0


def shade_warmup(
    ax: Axes, groups: Sequence[Sequence[RunDir]], tables: Mapping[str, pd.DataFrame]
) -> tuple[int, list[Patch]]:
    """Shade the ZQ warm-up epochs (generator only, the student does not step, so no cosine) in grey.

    Args:
        ax: The cosine panel.
        groups: The seed groups drawn.
        tables: Each run's epoch table, by run name.

    Returns:
        The warm-up length shaded (0: none) and the shading's legend handle (none when nothing is shaded).
    """
    from matplotlib.patches import Patch  # matplotlib loads when a figure is drawn (zsq_probe.plots)

    warm = max((warmup_epochs(g, tables) for g in groups), default=0)
    if not warm:
        return 0, []
    start = min(int(t["epoch"].min()) for t in tables.values())
    ax.axvspan(min(start, 1) - 0.5, warm + 0.5, color="0.9", lw=0, zorder=0)
    epochs = "ep. 1" if warm == 1 else f"ep. 1–{warm}"
    return warm, [Patch(color="0.9", label=f"ZQ warm-up ({epochs}):\nno student step")]


def fig1_caption(groups: Sequence[Sequence[RunDir]], epoch: int, warm: int) -> str:
    """Fig. 1's caption: what the panels, colours, band and snapshot show."""
    ns = sorted({len(g) for g in groups})
    band = "band: seed min–max where n > 1" if max(ns) > 1 else "one seed per method, no band"
    text = (
        f"Top: epoch-mean cosine between the CE and the KL gradient of the student, per method the mean over its "
        f"seeds ({band}), in the method's colour. "
    )
    if warm:
        text += (
            f"The ZQ students do not train during the generator's warm-up (warmup_epochs = {warm} in their configs), "
            f"so no cosine exists there and their curves start at epoch {warm + 1} (grey span). "
        )
    return text + (
        f"Bottom: one snapshot per method at epoch {epoch} (dotted line), ∇CE (wine) set to (1, 0) and ∇KL (dark "
        f"grey) at the measured angle, averaged over seeds; the frame has the method's colour."
    )


def cosine_grid_figure(runs: R.RunsArg) -> Figure:
    """Figs. 7/8: one column per setting (teacher/data), the cosine curves of its methods and their snapshots.

    Each column holds the cosine curves of its methods (mean over seeds, band min–max) above and angle
    snapshots at the middle epoch the setting's runs share below.

    Args:
        runs: Run folders or RunDirs (one or several).

    Returns:
        The figure, its caption recorded (`runs.describe`).

    Raises:
        SkipFigure: No run has probes/cosine, the runs span one setting (fig1 draws it), or a setting's runs
            share no epoch.
        UserError: No runs are given, or a table lacks a needed column.
    """
    runs = R.runs_with(R.open_runs(runs), "cosine", "fig7_8")
    settings = R.require_settings(runs, "fig7_8", "fig1")
    ncols = len(settings)
    tables = {
        r.name: probe_tables.cosine_epochs(R.read(r, "cosine", probe_tables.COSINE_COLUMNS, "fig7_8"), r.name)
        for r in runs
    }
    with drawing((7.0, 4.2)) as fig:
        outer = fig.add_gridspec(2, ncols, height_ratios=[1.6, 1.0])
        for j, (name, members) in enumerate(settings.items()):
            ax = fig.add_subplot(outer[0, j])
            groups = R.seed_groups(members)
            for g in groups:
                R.draw_seed_band(
                    ax,
                    [tables[r.name] for r in g],
                    "epoch",
                    "cosine",
                    R.kind_color(g[0]),
                    R.label(g[0]),
                    R.marker(g[0]),
                )
            zero_line(ax)
            epoch_axis(ax)
            ax.set_ylabel("cos(∇CE, ∇KL)")
            ax.set_title(name.split("/")[0])
            if j == ncols - 1:
                ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
            e = common_epoch({r.name: tables[r.name] for r in members}, None, "fig7_8")
            snaps = outer[1, j].subgridspec(1, len(groups))
            for i, g in enumerate(groups):
                rows = [tables[r.name][tables[r.name]["epoch"] == e] for r in g]
                mean = rows[0].copy()
                for col in ("cosine", "angle_deg", "grad_norm_ce", "grad_norm_kl"):
                    mean[col] = float(np.mean([float(x[col].iloc[0]) for x in rows]))
                _snapshot(fig.add_subplot(snaps[0, i]), g[0], mean, e, R.kind_color(g[0]), n=len(g), small=True)
    text = (
        "One column per (model, data set) setting: top, the epoch-mean CE–KL gradient cosine of each method (mean "
        "over seeds, band: seed min–max where n > 1); bottom, angle snapshots at the middle epoch the setting's runs "
        "share, ∇CE (wine) at (1, 0) and ∇KL (dark grey) at the measured angle."
    )
    return R.describe(fig, runs, text)
