"""Figs. 3b/3c: integer codes that changed per layer, on average per student step, at two epochs.

One row of two bar charts per run.  Default epochs: an early one (15% into the epochs with data; the
paper's 60 of 400) and the last one; `--epochs A,B` picks them.  Per-layer values come from the
`epoch_total` rows (else the epoch's `step` rows, else post-hoc `checkpoint_diff` rows).  The panel
title gives the share of all codes changing per step and how many layers did not change at all.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from figures import _common as C  # noqa: E402
from zsq_probe import compare  # noqa: E402
from zsq_probe.errors import UserError  # noqa: E402

FIGURE = "fig3bc"
TABLES_NEEDED = ["crossings"]
DESCRIPTION = "integer codes changed per layer (average per step) at an early and a late epoch (paper Fig. 3b/c)"
EARLY = 0.15


def default_epochs(available) -> list[int]:
    available = sorted(set(int(e) for e in available))
    early = available[int(round(EARLY * (len(available) - 1)))]
    return sorted({early, available[-1]})


def choose_epochs(df, epochs, where) -> list[int]:
    available = compare.crossings_epochs(df, where)
    if not available:
        raise C.SkipFigure(f"{where}: no rows")
    chosen = C.parse_epochs(epochs)
    if chosen is None:
        return default_epochs(available)
    missing = [e for e in chosen if e not in available]
    if missing:
        raise UserError(f"{where}: no crossings rows for epoch(s) {', '.join(map(str, missing))} "
                        f"(epochs with data: {C._elist(available)})")
    return chosen


def draw_bars(ax, run, df, epoch, value="changed_per_step", p_line=False, where=""):
    layers, basis = compare.crossings_per_layer(df, epoch, where)
    x = np.arange(len(layers))
    y = layers[value].to_numpy(dtype=float)
    color = C.kind_color(run)
    ax.bar(x, y, color=color, width=0.8)
    share = layers["changed_per_step"].sum() / max(layers["layer_size"].sum(), 1)
    zero = int((layers["changed"] == 0).sum())
    per = {"epoch_total": "per step", "step": "per step", "checkpoint_diff": "per step (net, post hoc)"}[basis]
    ax.set_title(f"{C.method(run)} ({run.name}), epoch {epoch}\n{100 * share:.3g}% of codes change {per}; "
                 f"{zero}/{len(layers)} layers unchanged", fontsize=9.5)
    ax.set_xticks(x)
    ax.set_xticklabels(layers["layer"], rotation=90, fontsize=7 if len(layers) > 12 else 8)
    ax.set_xlim(-0.6, len(layers) - 0.4)
    ax.grid(axis="x", visible=False)
    if p_line:
        p = layers["gi_p"].dropna()
        if len(p):
            ax.axhline(float(p.mean()), color=C.P_COLOR, ls=":", lw=1.8, label=f"p = {float(p.mean()):.3g}")
            ax.legend(loc="upper right")
    return layers


def crossings_grid(runs, epochs, figure: str, ylabel: str, title: str, value: str = "changed_per_step",
                   p_line=lambda run: False):
    """One row of per-layer bar charts per run, one column per chosen epoch (shared by Fig. 3b/c and 4)."""
    import matplotlib.pyplot as plt

    plan = []
    for r in runs:
        where = f"{figure}: {r.name} probes/crossings"
        df = C.read(r, "crossings", compare.CROSSING_COLUMNS, figure)
        plan.append((r, df, choose_epochs(df, epochs, where), where))
    cols = max(len(e) for _, _, e, _ in plan)
    fig, axes = plt.subplots(len(plan), cols, figsize=(5.2 * cols, 3.9 * len(plan)), squeeze=False)
    for row, (r, df, eps, where) in enumerate(plan):
        for col in range(cols):
            ax = axes[row][col]
            if col >= len(eps):
                ax.set_visible(False)
                continue
            draw_bars(ax, r, df, eps[col], value=value, p_line=p_line(r), where=where)
            if col == 0:
                ax.set_ylabel(ylabel)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot(runs, out_dir, fmt="png", epochs=None):
    runs = C.runs_with(runs, "crossings", FIGURE)
    fig = crossings_grid(runs, epochs, FIGURE, "codes changed per step",
                         "Quantised weights crossing a rounding threshold, per layer")
    return [C.save(fig, out_dir, "fig3bc_crossings", fmt)]

if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
