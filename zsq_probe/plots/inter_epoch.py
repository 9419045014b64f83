"""Fig. 3a: inter-epoch cosine, cos(epoch-mean grad KL, previous epoch's), KD vs ZQ.

A value near 1 means the KL gradient keeps pointing the same way from epoch to epoch (the paper reads
this as "not yet at a minimum of the KL surface").
"""

from __future__ import annotations

from zsq_probe.analysis import probe_tables
from zsq_probe.plots import runs as R
from zsq_probe.plots.style import drawing, epoch_axis, zero_line

COLUMNS = ["epoch", "cosine"]


def draw_inter_epoch(ax, source, *, color=None, label: str | None = None):
    """Draw one run's inter-epoch cosine curve into `ax`; returns the curve (epoch, cosine).

    `source`: a run (RunDir or folder) or its probes/inter_epoch DataFrame.  `color` defaults to the
    run's kind (KD green, ZQ orange).
    """
    run, df = R.table_of(source, "inter_epoch", COLUMNS)
    color = R.default_color(run) if color is None else color
    return _curve(ax, run, df, color, label, "")


def _curve(ax, run, df, color, label, figure):
    c = probe_tables.inter_epoch_curve(df, R.where(figure, run, "inter_epoch"))
    if label is None and run is not None:
        label = R.label(run)
    ax.plot(c["epoch"], c["cosine"], color=color, lw=1.8, marker="o" if len(c) <= 40 else None, ms=3.5, label=label)
    return c


def inter_epoch_figure(runs):
    """Fig. 3a: every method's inter-epoch cosine in one panel (mean over seeds, band min–max), KD first."""
    runs = R.kd_first(R.runs_with(R.open_runs(runs), "inter_epoch", "fig3a"))
    with drawing((7.0, 2.6)) as fig:
        ax = fig.subplots()
        for g in R.seed_groups(runs):
            frames = [
                probe_tables.inter_epoch_curve(
                    R.read(r, "inter_epoch", COLUMNS, "fig3a"), R.where("fig3a", r, "inter_epoch")
                )
                for r in g
            ]
            R.draw_seed_band(ax, frames, "epoch", "cosine", R.kind_color(g[0]), R.label(g[0]), R.marker(g[0]))
        zero_line(ax)
        epoch_axis(ax)
        ax.set_ylabel("cos(ḡ_KL(t), ḡ_KL(t−1))")
        ax.set_title("Inter-epoch cosine of the KL gradient")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig
