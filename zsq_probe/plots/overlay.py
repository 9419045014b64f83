"""The figure of `zsq-probe compare`: one probe's curves of a KD side and a ZQ side overlaid.

Each side is one run or several runs that differ only by seed: drawn as the mean over its seeds with the
seed interval [min, max] shaded, and its n in the legend.  cosine and inter_epoch: one curve per side in its
method's colour.  hessian: the CE and KL traces of both sides (KD solid, ZQ dashed) on a log axis (linear when a
trace is <= 0), one estimate per loss (`probe_tables.TRACE_PREFERENCE`); with one seed the band is the
estimator's 95 % interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import pandas as pd

from zsq_probe.analysis import probe_tables
from zsq_probe.plots import runs as R
from zsq_probe.plots.style import CE_COLOR, KL_COLOR, drawing, epoch_axis, safe_name, save, zero_line
from zsq_probe.rundir.store import PathArg, RunDir

if TYPE_CHECKING:  # matplotlib loads when a figure is drawn, not with this module
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FramesArg: TypeAlias = pd.DataFrame | Sequence[pd.DataFrame] | None  # a side's tables: one, one per run, or read


def _side(runs: R.RunsArg, frames: FramesArg, table: str) -> tuple[list[RunDir], list[pd.DataFrame]]:
    opened = [R.open_run(r) for r in R.as_list(runs)]
    if frames is None:
        frames = [r.read_table(table) for r in opened]
    elif not isinstance(frames, (list, tuple)):
        frames = [frames]
    return opened, list(frames)


def draw_compare(
    ax: Axes, probe: str, kd_run: R.RunsArg, zq_run: R.RunsArg, kd_df: FramesArg = None, zq_df: FramesArg = None
) -> None:
    """Overlay `probe` of a KD and a ZQ side in `ax`.

    Args:
        ax: The axes to draw into.
        probe: 'cosine', 'hessian' or 'inter_epoch'.
        kd_run: The KD side: a run (RunDir or folder) or a list of runs differing only by seed.
        zq_run: The ZQ side, likewise.
        kd_df: The KD side's tables (a DataFrame, or a list matching the runs); read from the runs when None.
        zq_df: The ZQ side's tables, likewise.

    Raises:
        KeyError: `probe` is not one of the three.
        UserError: A run cannot be opened or its table read.
    """
    table = probe_tables.PROBE_TABLE[probe]
    sides = (("KD",) + _side(kd_run, kd_df, table) + ("-",), ("ZQ",) + _side(zq_run, zq_df, table) + ("--",))
    positive = True
    for kind, runs, frames, ls in sides:
        first = runs[0]
        label = f"{kind}: {R.method(first)}"
        if probe == "cosine":
            curves = [probe_tables.cosine_epochs(df, f"{r.name} probes/cosine") for r, df in zip(runs, frames)]
            R.draw_seed_band(ax, curves, "epoch", "cosine", R.kind_color(first), label, R.marker(first))
        elif probe == "inter_epoch":
            curves = [probe_tables.inter_epoch_curve(df, f"{r.name} probes/inter_epoch") for r, df in zip(runs, frames)]
            R.draw_seed_band(ax, curves, "epoch", "cosine", R.kind_color(first), label, R.marker(first))
        else:
            curves = [probe_tables.trace_curves(df, f"{r.name} probes/hessian_trace") for r, df in zip(runs, frames)]
            est = probe_tables.preferred_estimator(curves[0])
            for loss, color in (("ce", CE_COLOR), ("kl", KL_COLOR)):
                per_seed = [c[(c["estimator"] == est) & (c["loss"] == loss)] for c in curves]
                positive &= all((c["trace"] > 0).all() for c in per_seed)
                n = R.draw_seed_band(
                    ax, per_seed, "epoch", "trace", color, f"{loss.upper()}, {label} ({est})", R.marker(first), ls=ls
                )
                if n == 1 and per_seed[0]["ci_low"].notna().all():  # one seed: the estimator's own interval
                    c = per_seed[0]
                    ax.fill_between(
                        c["epoch"], c["ci_low"].clip(lower=1e-12), c["ci_high"], color=color, alpha=0.15, lw=0
                    )
    if probe == "hessian":
        if positive:  # KD and ZQ traces can differ tenfold: a log axis shows both (a trace <= 0 keeps it linear)
            ax.set_yscale("log")
        ax.set_ylabel("Tr(H)")
    else:
        zero_line(ax)
        ax.set_ylabel("cos(∇CE, ∇KL), epoch mean" if probe == "cosine" else "inter-epoch cosine of ∇KL")
    epoch_axis(ax)
    ax.set_title(f"{probe}: KD vs ZQ")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))


def compare_figure(
    probe: str, kd_run: R.RunsArg, zq_run: R.RunsArg, kd_df: FramesArg = None, zq_df: FramesArg = None
) -> Figure:
    """A Figure holding draw_compare's panel.

    Args:
        probe: 'cosine', 'hessian' or 'inter_epoch'.
        kd_run: The KD side: a run (RunDir or folder) or a list of runs differing only by seed.
        zq_run: The ZQ side, likewise.
        kd_df: The KD side's tables (a DataFrame, or a list matching the runs); read from the runs when None.
        zq_df: The ZQ side's tables, likewise.

    Returns:
        The figure.

    Raises:
        KeyError: `probe` is not one of the three.
        UserError: A run cannot be opened or its table read.
    """
    with drawing((7.0, 2.8)) as fig:
        draw_compare(fig.subplots(), probe, kd_run, zq_run, kd_df, zq_df)
    return fig


def caption(probe: str, kd_runs: Sequence[R.RunSource], zq_runs: Sequence[R.RunSource]) -> str:
    """The overlay's caption: the runs of each side, their count and what the band shows."""
    names = {kind: ", ".join(R.open_run(r).name for r in runs) for kind, runs in (("KD", kd_runs), ("ZQ", zq_runs))}
    band = "mean over seeds, band the seed interval [min, max]; one seed: " + (
        "the estimator's 95 % interval" if probe == "hessian" else "no band"
    )
    return (
        f"zsq-probe compare --probe {probe}: KD runs {names['KD']} (n={len(kd_runs)}) against ZQ runs "
        f"{names['ZQ']} (n={len(zq_runs)}); {band}."
    )


def compare_stem(probe: str, kd_run: R.RunsArg, zq_run: R.RunsArg) -> str:
    """The file stem of the overlay: compare_<probe>_<kd>_vs_<zq> (first run of each side)."""
    kd0, zq0 = R.open_run(R.as_list(kd_run)[0]), R.open_run(R.as_list(zq_run)[0])
    return f"compare_{probe}_{safe_name(kd0.name)}_vs_{safe_name(zq0.name)}"


def plot_compare(
    probe: str,
    kd_run: R.RunsArg,
    zq_run: R.RunsArg,
    kd_df: FramesArg,
    zq_df: FramesArg,
    out_dir: PathArg,
    fmt: str = "png",
) -> Path:
    """Write the overlay to OUT_DIR/compare_<probe>_<kd>_vs_<zq>.<fmt> (first run of each side), with its caption.

    Args:
        probe: 'cosine', 'hessian' or 'inter_epoch'.
        kd_run: The KD side: a run (RunDir or folder) or a list of runs differing only by seed.
        zq_run: The ZQ side, likewise.
        kd_df: The KD side's tables (a DataFrame, or a list matching the runs); read from the runs when None.
        zq_df: The ZQ side's tables, likewise.
        out_dir: The folder to write into (created when missing).
        fmt: 'png' or 'pdf'.

    Returns:
        The figure's path.

    Raises:
        KeyError: `probe` is not one of the three.
        UserError: A run cannot be opened or its table read, `fmt` is unknown, or the file is protected.
    """
    kd_runs = R.as_list(kd_run)
    zq_runs = R.as_list(zq_run)
    fig = compare_figure(probe, kd_runs, zq_runs, kd_df, zq_df)
    stem = compare_stem(probe, kd_runs, zq_runs)
    return save(fig, out_dir, stem, fmt, caption=caption(probe, kd_runs, zq_runs))
