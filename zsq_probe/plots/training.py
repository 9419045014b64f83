"""Fig. 5: (a) KL over training, (b) CE-KL gradient cosine over training, (c) validation CE against the
hard labels, for the ZQ runs given (GDFQ vs KL-only vs AIT in the paper), each labelled by its method.

(a) is `loss_kl_scaled` (the KL term as trained, KLDiv mean x T^2) from probes/metrics; (b) the
epoch-mean cosine from probes/cosine (a panel says so when no run has it); (c) `val_ce` from metrics.
KD runs are left out (the figure compares ZQ methods).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from zsq_probe.analysis import probe_tables
from zsq_probe.plots import runs as R
from zsq_probe.plots.style import current_width, drawing, epoch_axis, note, zero_line
from zsq_probe.rundir.store import RunDir

if TYPE_CHECKING:  # matplotlib loads when a figure is drawn, not with this module
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

METRIC_COLUMNS = ["epoch", "loss_kl_scaled", "val_ce"]


def zq_runs(runs: R.RunsArg) -> list[RunDir]:
    """The ZQ runs among `runs` that have probes/metrics (SkipFigure when there are none)."""
    zq = [r for r in R.open_runs(runs) if not R.is_kd(r)]
    if not zq:
        raise R.SkipFigure("fig5 compares ZQ methods and only KD runs were given")
    return R.runs_with(zq, "metrics", "fig5")


def draw_training(axes: Sequence[Axes], runs: R.RunsArg) -> None:
    """Draw Fig. 5's three panels (KL, cosine, validation CE) of the ZQ `runs` into `axes`.

    One curve per method, the mean over its seeds with the seed interval [min, max] shaded, labelled with n.

    Args:
        axes: Three axes: KL, cosine, validation CE.
        runs: Run folders or RunDirs (one or several); KD runs are left out.

    Raises:
        SkipFigure: Only KD runs are given, or no ZQ run has probes/metrics.
        UserError: No runs are given, or a table lacks a needed column.
    """
    ax_kl, ax_cos, ax_ce = axes
    zq = zq_runs(runs)
    any_val, any_cos = False, False
    mixed = len({iterations(r) for r in zq}) > 1
    for g in R.seed_groups(zq):
        color, mk, lab = R.kind_color(g[0]), R.marker(g[0]), R.method(g[0])
        if mixed:  # an epoch is what each run's config says: say so where they differ
            lab += f", epoch = {iterations(g[0])} it."
        ms = [
            R.read(r, "metrics", METRIC_COLUMNS, "fig5").groupby("epoch", as_index=False)[METRIC_COLUMNS[1:]].mean()
            for r in g
        ]
        R.draw_seed_band(ax_kl, ms, "epoch", "loss_kl_scaled", color, lab, mk)
        if any(np.isfinite(m["val_ce"].to_numpy(dtype=float)).any() for m in ms):
            any_val = True
            R.draw_seed_band(ax_ce, ms, "epoch", "val_ce", color, lab, mk)
        cs = [
            probe_tables.cosine_epochs(
                R.read(r, "cosine", probe_tables.COSINE_COLUMNS, "fig5"), R.where("fig5", r, "cosine")
            )
            for r in g
            if R.has_table(r, "cosine")
        ]
        if cs:
            any_cos = True
            R.draw_seed_band(ax_cos, cs, "epoch", "cosine", color, lab, mk)
    ax_kl.set_title("(a) KL to teacher")
    ax_kl.set_ylabel("KL × T² (training)")
    epoch_axis(ax_kl)
    ax_cos.set_title("(b) cos(∇CE, ∇KL)")
    if any_cos:
        ax_cos.set_ylabel("cosine (epoch mean)")
        zero_line(ax_cos)
        epoch_axis(ax_cos)
    else:
        note(ax_cos, "no ZQ run has\nprobes/cosine")
    ax_ce.set_title("(c) validation CE")
    if any_val:
        ax_ce.set_ylabel("CE (nats)")
        epoch_axis(ax_ce)
    else:
        note(ax_ce, "no validation CE\n(no real test split)")


def iterations(run: RunDir) -> str:
    """A run's iterations per epoch as its config says ('25'; 'one pass' when it sets none)."""
    n = R.config(run).get("iters_per_epoch")
    return str(n) if n else "one pass"


def training_caption(zq: Sequence[RunDir]) -> str:
    """Fig. 5's caption: the three panels, the aggregation and what an epoch is for each method."""
    groups = R.seed_groups(zq)
    per = "; ".join(f"{R.method(g[0])}: {iterations(g[0])} iterations" for g in groups)
    same = len({iterations(r) for r in zq}) == 1
    return (
        "(a) the KL term as trained (KLDiv × T²) averaged over the epoch's student steps, (b) the epoch-mean cosine "
        "between the CE and the KL gradient, (c) the cross-entropy of the quantised student on the real validation "
        "split against the hard labels; per ZQ method the mean over its seeds (n in the legend), band: seed "
        "min–max where n > 1. "
        + (
            f"An epoch is {iterations(zq[0])} iterations in every run."
            if same
            else f"An epoch differs: {per} (legend)."
        )
    )


def training_figure(runs: R.RunsArg) -> Figure:
    """Fig. 5: KL, CE-KL cosine and validation CE of the ZQ methods side by side, one legend (n = seeds).

    Args:
        runs: Run folders or RunDirs (one or several); KD runs are left out.

    Returns:
        The figure, its caption recorded (`runs.describe`).

    Raises:
        SkipFigure: Only KD runs are given, or no ZQ run has probes/metrics.
        UserError: No runs are given, or a table lacks a needed column.
    """
    zq = zq_runs(runs)
    column = current_width() == "column"
    with drawing((3.3, 5.6) if column else (7.0, 2.5)) as fig:
        axes = fig.subplots(3, 1, sharex=True) if column else fig.subplots(1, 3)
        draw_training(axes, zq)
        handles, labels = axes[0].get_legend_handles_labels()
        wide = 2 if column or max(map(len, labels), default=0) > 24 else 4  # long labels: two a row
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), wide))
    return R.describe(fig, zq, training_caption(zq))
