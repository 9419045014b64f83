"""Fig. 3a: inter-epoch cosine, cos(epoch-mean grad KL, previous epoch's), KD vs ZQ.

A value near 1 means the KL gradient keeps pointing the same way from epoch to epoch (the paper reads
this as "not yet at a minimum of the KL surface").
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

import pandas as pd

from zsq_probe.analysis import probe_tables
from zsq_probe.plots import runs as R
from zsq_probe.plots.style import drawing, epoch_axis, zero_line
from zsq_probe.rundir.store import RunDir

if TYPE_CHECKING:  # matplotlib loads when a figure is drawn, not with this module
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.typing import ColorType

COLUMNS = ["epoch", "cosine"]


def draw_inter_epoch(
    ax: Axes, source: R.TableSource, *, color: ColorType | None = None, label: str | None = None
) -> pd.DataFrame:
    """Draw one run's inter-epoch cosine curve into `ax`.

    Args:
        ax: The axes to draw into.
        source: A run (RunDir or folder) or its probes/inter_epoch DataFrame.
        color: The curve's colour; default the run's method colour.
        label: The legend label; default the run's label ('KD', 'ZQ: gdfq').

    Returns:
        The curve (epoch, cosine).

    Raises:
        UserError: `source` is not a run, or its table lacks a needed column.
    """
    run, df = R.table_of(source, "inter_epoch", COLUMNS)
    color = R.default_color(run) if color is None else color
    return _curve(ax, run, df, color, label, "")


def _curve(
    ax: Axes, run: RunDir | None, df: pd.DataFrame, color: ColorType, label: str | None, figure: str
) -> pd.DataFrame:
    c = probe_tables.inter_epoch_curve(df, R.where(figure, run, "inter_epoch"))
    if label is None and run is not None:
        label = R.label(run)
    ax.plot(c["epoch"], c["cosine"], color=color, lw=1.8, marker="o" if len(c) <= 40 else None, ms=3.5, label=label)
    return c


def inter_epoch_figure(runs: R.RunsArg) -> Figure:
    """Fig. 3a: every method's inter-epoch cosine in one panel, KD first.

    Each method is the mean over its seeds, with the band min–max where it has more than one seed.

    Args:
        runs: Run folders or RunDirs (one or several).

    Returns:
        The figure, its caption recorded (`runs.describe`).

    Raises:
        SkipFigure: No run has probes/inter_epoch.
        UserError: No runs are given, or a table lacks a needed column.
    """
    runs = R.kd_first(R.runs_with(R.open_runs(runs), "inter_epoch", "fig3a"))
    groups = R.seed_groups(runs)
    steps: set[int] = set()
    with drawing((7.0, 2.6)) as fig:
        ax = fig.subplots()
        for g in groups:
            tables = [R.read(r, "inter_epoch", COLUMNS, "fig3a") for r in g]
            steps |= {int(x) for t in tables if "steps_averaged" in t for x in t["steps_averaged"].dropna()}
            frames = [probe_tables.inter_epoch_curve(t, R.where("fig3a", r, "inter_epoch")) for r, t in zip(g, tables)]
            R.draw_seed_band(ax, frames, "epoch", "cosine", R.kind_color(g[0]), R.label(g[0]), R.marker(g[0]))
        zero_line(ax)
        epoch_axis(ax)
        ax.set_ylabel("cos(ḡ_KL(t), ḡ_KL(t−1))")
        ax.set_title("Inter-epoch cosine of the KL gradient")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return R.describe(fig, runs, inter_epoch_caption(groups, steps))


def inter_epoch_caption(groups: Sequence[Sequence[RunDir]], steps: Collection[int]) -> str:
    """Fig. 3a's caption: what a point is (and over how many steps), and whether there are bands."""
    ns = [len(g) for g in groups]
    if max(ns) > 1:
        band = "per method the mean over its seeds (n in the legend), band: seed min–max where n > 1"
    else:
        band = "one seed per method (n = 1 in the legend): single runs, no band, no seed spread"
    averaged = f" over {', '.join(map(str, sorted(steps)))} sampled student steps" if steps else ""
    return (
        f"Cosine between the epoch-mean KL gradient of the student at epoch t (its mean{averaged}, every "
        f"probe_every_steps steps) and that of epoch t−1; {band}. Near 1: the KL gradient keeps its direction "
        "from epoch to epoch (the paper reads this as not yet at a minimum of the KL surface)."
    )
