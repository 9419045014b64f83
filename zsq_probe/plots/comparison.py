"""The figure of `zsq-probe compare`: one probe's curves of a KD run and a ZQ run overlaid.

cosine and inter_epoch: one curve per run (KD green, ZQ orange).  hessian: the CE (red) and KL
(blue) traces of both runs, KD solid and ZQ dashed, Hutchinson when a run has it (else SLQ), each
with a +-1 standard-error band.
"""

from __future__ import annotations

from pathlib import Path

from zsq_probe import compare
from zsq_probe.plots import runs as R
from zsq_probe.plots.style import (CE_COLOR, KD_COLOR, KL_COLOR, ZQ_COLOR, drawing, epoch_axis, safe_name, save,
                                   zero_line)


def draw_compare(ax, probe: str, kd_run, zq_run, kd_df=None, zq_df=None) -> None:
    """Overlay `probe` ('cosine', 'hessian' or 'inter_epoch') of a KD and a ZQ run in `ax`.

    Runs are RunDirs or folders; their tables are read unless given as `kd_df` / `zq_df`.
    """
    kd_run, zq_run = R.open_run(kd_run), R.open_run(zq_run)
    table = compare.PROBE_TABLE[probe]
    kd_df = kd_run.read_table(table) if kd_df is None else kd_df
    zq_df = zq_run.read_table(table) if zq_df is None else zq_df
    pairs = ((kd_run, kd_df, KD_COLOR, "-", "KD"), (zq_run, zq_df, ZQ_COLOR, "--", "ZQ"))
    if probe == "cosine":
        for run, df, color, _, kind in pairs:
            c = compare.cosine_epochs(df, f"{run.name} probes/cosine")
            ax.plot(c["epoch"], c["cosine"], color=color, lw=1.8, label=f"{kind}: {R.method(run)} ({run.name})")
        zero_line(ax)
        ax.set_ylabel("cos(∇CE, ∇KL), epoch mean")
    elif probe == "inter_epoch":
        for run, df, color, _, kind in pairs:
            c = compare.inter_epoch_curve(df, f"{run.name} probes/inter_epoch")
            ax.plot(c["epoch"], c["cosine"], color=color, lw=1.8, label=f"{kind}: {R.method(run)} ({run.name})")
        zero_line(ax)
        ax.set_ylabel("inter-epoch cosine of ∇KL")
    else:
        for run, df, _, ls, kind in pairs:
            curves = compare.trace_curves(df, f"{run.name} probes/hessian_trace")
            est = compare.preferred_estimator(curves)
            for loss, color in (("ce", CE_COLOR), ("kl", KL_COLOR)):
                c = curves[(curves["estimator"] == est) & (curves["loss"] == loss)]
                if len(c):
                    ax.plot(c["epoch"], c["trace"], color=color, ls=ls, lw=1.8,
                            label=f"{loss.upper()}-{kind} ({R.method(run)}, {est})")
                    ax.fill_between(c["epoch"], c["ci_low"], c["ci_high"], color=color, alpha=0.15, lw=0)
        ax.set_ylabel("Tr(H)")
    epoch_axis(ax)
    ax.set_title(f"{probe}: KD {kd_run.name} vs ZQ {zq_run.name}")
    ax.legend(loc="best")


def compare_figure(probe: str, kd_run, zq_run, kd_df=None, zq_df=None):
    """A Figure holding draw_compare's panel."""
    with drawing((7.5, 4.2)) as fig:
        draw_compare(fig.subplots(), probe, kd_run, zq_run, kd_df, zq_df)
    return fig


def plot_compare(probe: str, kd_run, zq_run, kd_df, zq_df, out_dir, fmt: str = "png") -> Path:
    """Write the overlay to OUT_DIR/compare_<probe>_<kd>_vs_<zq>.<fmt>; returns its path."""
    kd_run, zq_run = R.open_run(kd_run), R.open_run(zq_run)
    fig = compare_figure(probe, kd_run, zq_run, kd_df, zq_df)
    return save(fig, out_dir, f"compare_{probe}_{safe_name(kd_run.name)}_vs_{safe_name(zq_run.name)}", fmt)
