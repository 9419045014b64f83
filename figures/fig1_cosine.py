"""Fig. 1: cosine between grad CE (hard labels) and grad KL (teacher) over training, KD vs ZQ.

Top: epoch-mean cosine per run (line) over the per-step cosines (light dots, spread across their
epoch).  Bottom: one 2-D angle snapshot per run at one epoch, grad CE set to (1, 0) and grad KL drawn
at the measured angle (unit length; the norm ratio is printed).  Default snapshot epoch: the middle
epoch with data (the paper: epoch 200 of 400); `--epoch E` picks another.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from figures import _common as C  # noqa: E402
from zsq_probe import compare  # noqa: E402

FIGURE = "fig1"
TABLES_NEEDED = ["cosine"]
DESCRIPTION = "CE-KL gradient cosine over epochs, KD vs ZQ, with 2-D angle snapshots (paper Fig. 1)"


def step_positions(steps) -> np.ndarray:
    """x of each step row: its epoch, spread over [epoch-0.4, epoch+0.4] by step index."""
    n = steps.groupby("epoch")["step"].transform("max").to_numpy(dtype=float) + 1
    return steps["epoch"].to_numpy(dtype=float) + (steps["step"].to_numpy(dtype=float) / np.maximum(n, 1) - 0.5) * 0.8


def draw_curves(ax, run, df, color, scatter=True, label=None):
    where = f"{FIGURE}: {run.name} probes/cosine"
    epochs = compare.cosine_epochs(df, where)
    steps = compare.cosine_steps(df, where)
    if scatter and (steps["statistic"] == "step").any():
        alpha = 0.45 if len(steps) < 2000 else 0.12  # light, but visible for short runs too
        ax.scatter(step_positions(steps), steps["cosine"], s=5, color=color, alpha=alpha, lw=0, rasterized=True)
    ax.plot(epochs["epoch"], epochs["cosine"], color=color, lw=1.8, marker="o" if len(epochs) <= 40 else None,
            ms=3.5, label=label or C.label(run))
    return epochs


def draw_snapshot(ax, run, epochs, epoch, color):
    row = epochs[epochs["epoch"] == epoch].iloc[0]
    angle = float(row["angle_deg"])
    if not np.isfinite(angle):
        angle = float(np.degrees(np.arccos(np.clip(row["cosine"], -1, 1))))
    th = np.radians(angle)
    ax.annotate("", xy=(1, 0), xytext=(0, 0), arrowprops=dict(arrowstyle="-|>", color=C.CE_COLOR, lw=2))
    ax.annotate("", xy=(np.cos(th), np.sin(th)), xytext=(0, 0),
                arrowprops=dict(arrowstyle="-|>", color=C.KL_COLOR, lw=2))
    arc = np.linspace(0, th, 60)
    ax.plot(0.28 * np.cos(arc), 0.28 * np.sin(arc), color="0.3", lw=1)
    ax.text(1.02, -0.1, "∇CE", color=C.CE_COLOR, ha="right", va="top", fontsize=9)
    ax.text(1.08 * np.cos(th), 1.08 * np.sin(th), "∇KL", color=C.KL_COLOR, ha="center", va="center", fontsize=9)
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
    ax.set_title(f"{C.kind(run)} ({C.method(run)}), epoch {epoch}", fontsize=10, color=color)


def plot(runs, out_dir, fmt="png", epoch=None):
    import matplotlib.pyplot as plt

    runs = C.runs_with(runs, "cosine", FIGURE)
    runs = sorted(runs, key=lambda r: not C.is_kd(r))  # KD first (bottom left), as in the paper
    colors = C.kind_colors(runs)
    n = len(runs)
    fig = plt.figure(figsize=(max(8.0, 3.0 * n), 7.2))
    gs = fig.add_gridspec(2, n, height_ratios=[1.5, 1.0])
    top = fig.add_subplot(gs[0, :])
    tables = {}
    for r in runs:
        df = C.read(r, "cosine", compare.COSINE_COLUMNS, FIGURE)
        tables[r.name] = draw_curves(top, r, df, colors[r.name])
    C.zero_line(top)
    C.epoch_axis(top)
    top.set_ylabel("cos(∇CE, ∇KL)")
    top.set_title("Cosine similarity of CE (hard labels) and KL (teacher) gradients — "
                  + " vs ".join(sorted({C.kind(r) for r in runs})))
    top.legend(loc="best")
    for i, r in enumerate(runs):
        ep = tables[r.name]
        e = C.middle_epoch(ep["epoch"]) if epoch is None else C.pick_epoch(ep["epoch"], epoch, f"{FIGURE} {r.name}")
        draw_snapshot(fig.add_subplot(gs[1, i]), r, ep, e, colors[r.name])
    fig.tight_layout()
    return [C.save(fig, out_dir, "fig1_cosine", fmt)]


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
