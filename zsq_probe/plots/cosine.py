"""CE-KL gradient cosine: Fig. 1 (KD vs ZQ over training, with 2-D angle snapshots) and Figs. 7/8
(the same curves across models and data sets).

Curves: the epoch-mean cosine per run (line) over the per-step cosines (light dots, spread across
their epoch).  Snapshot: grad CE set to (1, 0) and grad KL drawn at the measured angle (unit length;
the norm ratio is printed), at one epoch: by default the middle epoch with data (the paper: epoch 200
of 400).
"""

from __future__ import annotations

import numpy as np

from zsq_probe import compare
from zsq_probe.plots import runs as R
from zsq_probe.plots.style import CE_COLOR, KL_COLOR, drawing, epoch_axis, grid_shape, zero_line


def step_positions(steps) -> np.ndarray:
    """x of each step row: its epoch, spread over [epoch-0.4, epoch+0.4] by step index."""
    n = steps.groupby("epoch")["step"].transform("max").to_numpy(dtype=float) + 1
    return steps["epoch"].to_numpy(dtype=float) + (steps["step"].to_numpy(dtype=float) / np.maximum(n, 1) - 0.5) * 0.8


# ------------------------------------------------------------------------------------- one panel
def draw_cosine(ax, source, *, color=None, scatter: bool = True, label: str | None = None):
    """Draw one run's cosine curve into `ax`: epoch means (line) over per-step values (dots).

    `source`: a run (RunDir or folder) or its probes/cosine DataFrame.  `color` defaults to the run's
    kind (KD green, ZQ orange).  Returns the epoch-mean frame (epoch, cosine, angle_deg, ...).
    """
    run, df = R.table_of(source, "cosine", compare.COSINE_COLUMNS)
    color = R.default_color(run) if color is None else color
    return _curves(ax, run, df, color, scatter, label, figure="")


def _curves(ax, run, df, color, scatter, label, figure):
    where = R.where(figure, run, "cosine")
    epochs = compare.cosine_epochs(df, where)
    steps = compare.cosine_steps(df, where)
    if scatter and (steps["statistic"] == "step").any():
        alpha = 0.45 if len(steps) < 2000 else 0.12  # light, but visible for short runs too
        ax.scatter(step_positions(steps), steps["cosine"], s=5, color=color, alpha=alpha, lw=0, rasterized=True)
    if label is None and run is not None:
        label = R.label(run)
    ax.plot(epochs["epoch"], epochs["cosine"], color=color, lw=1.8, marker="o" if len(epochs) <= 40 else None,
            ms=3.5, label=label)
    return epochs


def draw_cosine_snapshot(ax, source, epoch: int | None = None, *, color=None):
    """Draw the 2-D angle between grad CE and grad KL at `epoch` (default: the middle epoch with data)."""
    run, df = R.table_of(source, "cosine", compare.COSINE_COLUMNS)
    where = R.where("", run, "cosine")
    epochs = compare.cosine_epochs(df, where)
    e = R.middle_epoch(epochs["epoch"]) if epoch is None else R.pick_epoch(epochs["epoch"], epoch, where)
    color = R.default_color(run) if color is None else color
    _snapshot(ax, run, epochs, e, color)


def _snapshot(ax, run, epochs, epoch, color):
    row = epochs[epochs["epoch"] == epoch].iloc[0]
    angle = float(row["angle_deg"])
    if not np.isfinite(angle):
        angle = float(np.degrees(np.arccos(np.clip(row["cosine"], -1, 1))))
    th = np.radians(angle)
    ax.annotate("", xy=(1, 0), xytext=(0, 0), arrowprops=dict(arrowstyle="-|>", color=CE_COLOR, lw=2))
    ax.annotate("", xy=(np.cos(th), np.sin(th)), xytext=(0, 0),
                arrowprops=dict(arrowstyle="-|>", color=KL_COLOR, lw=2))
    arc = np.linspace(0, th, 60)
    ax.plot(0.28 * np.cos(arc), 0.28 * np.sin(arc), color="0.3", lw=1)
    ax.text(1.02, -0.1, "∇CE", color=CE_COLOR, ha="right", va="top", fontsize=9)
    ax.text(1.08 * np.cos(th), 1.08 * np.sin(th), "∇KL", color=KL_COLOR, ha="center", va="center", fontsize=9)
    ratio = row["grad_norm_kl"] / row["grad_norm_ce"] if row["grad_norm_ce"] else np.nan
    ax.text(0.02, 0.02, f"θ = {angle:.1f}°  cos = {row['cosine']:+.3f}\n|∇KL|/|∇CE| = {ratio:.3g}",
            transform=ax.transAxes, fontsize=8, va="bottom")
    ax.set_xlim(-1.25, 1.25)
    ax.set_ylim(-1.25, 1.25)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for s in ax.spines.values():
        s.set_visible(True)
        s.set_color(color)
    title = f"{R.kind(run)} ({R.method(run)}), epoch {epoch}" if run is not None else f"epoch {epoch}"
    ax.set_title(title, fontsize=10, color=color)


# ------------------------------------------------------------------------------------ figures
def cosine_figure(runs, epoch: int | None = None):
    """Fig. 1: every run's cosine curve in one panel (KD first), one angle snapshot per run below."""
    runs = R.kd_first(R.runs_with(R.open_runs(runs), "cosine", "fig1"))  # KD first (bottom left), as in the paper
    colors = R.kind_colors(runs)
    n = len(runs)
    with drawing((max(8.0, 3.0 * n), 7.2)) as fig:
        gs = fig.add_gridspec(2, n, height_ratios=[1.5, 1.0])
        top = fig.add_subplot(gs[0, :])
        tables = {}
        for r in runs:
            df = R.read(r, "cosine", compare.COSINE_COLUMNS, "fig1")
            tables[r.name] = _curves(top, r, df, colors[r.name], True, None, "fig1")
        zero_line(top)
        epoch_axis(top)
        top.set_ylabel("cos(∇CE, ∇KL)")
        top.set_title("Cosine similarity of CE (hard labels) and KL (teacher) gradients — "
                      + " vs ".join(sorted({R.kind(r) for r in runs})))
        top.legend(loc="best")
        for i, r in enumerate(runs):
            ep = tables[r.name]
            e = R.middle_epoch(ep["epoch"]) if epoch is None else R.pick_epoch(ep["epoch"], epoch, f"fig1 {r.name}")
            _snapshot(fig.add_subplot(gs[1, i]), r, ep, e, colors[r.name])
        fig.tight_layout()
    return fig


def cosine_grid_figure(runs):
    """Figs. 7/8: one panel per setting (teacher/data) with its runs' cosine curves, KD green, ZQ orange."""
    runs = R.runs_with(R.open_runs(runs), "cosine", "fig7_8")
    groups: dict[str, list] = {}
    for r in R.kd_first(runs):
        groups.setdefault(R.setting(r), []).append(r)
    nrows, ncols = grid_shape(len(groups))
    with drawing((4.8 * ncols, 3.6 * nrows)) as fig:
        axes = fig.subplots(nrows, ncols, squeeze=False)
        flat = [ax for row in axes for ax in row]
        for ax, (name, members) in zip(flat, groups.items()):
            colors = R.kind_colors(members)
            for r in members:
                df = R.read(r, "cosine", compare.COSINE_COLUMNS, "fig7_8")
                _curves(ax, r, df, colors[r.name], True, None, "fig7_8")
            zero_line(ax)
            epoch_axis(ax)
            ax.set_ylabel("cos(∇CE, ∇KL)")
            ax.set_title(name)
            ax.legend(loc="best", fontsize=7.5)
        for ax in flat[len(groups):]:
            ax.set_visible(False)
        fig.suptitle("Gradient directionality of KL and CE across models (KD green, ZQ orange)")
        fig.tight_layout()
    return fig
