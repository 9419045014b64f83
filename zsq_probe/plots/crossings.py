"""Integer codes crossing a rounding threshold, per layer: Figs. 3b/3c (codes changed per step at an
early and a late epoch) and Fig. 4 (share of a layer's codes changed per step under a 100x learning
rate, method 'kl-only-high-lr', and under gradient inundation, GI runs such as 'ait', with GI's p as
a dotted red line).

One row of bar charts per run, one column per epoch.  Default epochs: an early one (15% into the
epochs with data; the paper's 60 of 400) and the last one.  Per-layer values come from the
`epoch_total` rows (else the epoch's `step` rows, else post-hoc `checkpoint_diff` rows).  A panel's
title gives the share of all codes changing per step and how many layers did not change at all.
"""

from __future__ import annotations

import numpy as np

from zsq_probe import compare
from zsq_probe.errors import UserError
from zsq_probe.plots import runs as R
from zsq_probe.plots.style import P_COLOR, drawing
from zsq_probe.selection import epoch_list, parse_epochs

EARLY = 0.15
HIGH_LR = "kl-only-high-lr"
_BASIS = {"epoch_total": "per step", "step": "per step", "checkpoint_diff": "per step (net, post hoc)"}


def default_epochs(available) -> list[int]:
    """An early epoch (15% into those with data) and the last one."""
    available = sorted(set(int(e) for e in available))
    early = available[int(round(EARLY * (len(available) - 1)))]
    return sorted({early, available[-1]})


def choose_epochs(df, epochs, where) -> list[int]:
    """The epochs asked for (numbers, '2,4' or '3-12'; UserError when one has no rows) or the default pair."""
    available = compare.crossings_epochs(df, where)
    if not available:
        raise R.SkipFigure(f"{where}: no rows")
    chosen = parse_epochs(epochs)
    if chosen is None:
        return default_epochs(available)
    missing = [e for e in chosen if e not in available]
    if missing:
        raise UserError(f"{where}: no crossings rows for epoch(s) {', '.join(map(str, missing))} "
                        f"(epochs with data: {epoch_list(available)})")
    return chosen


def uses_gi(run) -> bool:
    """Whether a run trained with gradient inundation (its config's `gi`, or method 'ait')."""
    return bool(R.config(run).get("gi")) or R.method(run) == "ait"


def draw_crossings(ax, source, epoch: int, *, value: str = "changed_per_step", p_line: bool = False, color=None):
    """Draw one run's per-layer bars at `epoch` into `ax`; returns the per-layer frame.

    `source`: a run (RunDir or folder) or its probes/crossings DataFrame.  `value`: 'changed_per_step'
    (Fig. 3b/c) or 'share_per_step' (Fig. 4); `p_line`: draw GI's p as a dotted red line.
    """
    run, df = R.table_of(source, "crossings", compare.CROSSING_COLUMNS)
    return _bars(ax, run, df, epoch, value, p_line, R.where("", run, "crossings"), color)


def _bars(ax, run, df, epoch, value, p_line, where, color=None):
    layers, basis = compare.crossings_per_layer(df, epoch, where)
    x = np.arange(len(layers))
    y = layers[value].to_numpy(dtype=float)
    color = R.default_color(run) if color is None else color
    ax.bar(x, y, color=color, width=0.8)
    share = layers["changed_per_step"].sum() / max(layers["layer_size"].sum(), 1)
    zero = int((layers["changed"] == 0).sum())
    head = f"{R.method(run)} ({run.name}), " if run is not None else ""
    ax.set_title(f"{head}epoch {epoch}\n{100 * share:.3g}% of codes change {_BASIS[basis]}; "
                 f"{zero}/{len(layers)} layers unchanged", fontsize=9.5)
    ax.set_xticks(x)
    ax.set_xticklabels(layers["layer"], rotation=90, fontsize=7 if len(layers) > 12 else 8)
    ax.set_xlim(-0.6, len(layers) - 0.4)
    ax.grid(axis="x", visible=False)
    if p_line:
        p = layers["gi_p"].dropna()
        if len(p):
            ax.axhline(float(p.mean()), color=P_COLOR, ls=":", lw=1.8, label=f"p = {float(p.mean()):.3g}")
            ax.legend(loc="upper right")
    return layers


def crossings_grid(runs, epochs, figure: str, ylabel: str, title: str, value: str = "changed_per_step",
                   p_line=lambda run: False):
    """One row of per-layer bar charts per run, one column per chosen epoch (Fig. 3b/c and Fig. 4)."""
    plan = []
    for r in runs:
        where = R.where(figure, r, "crossings")
        df = R.read(r, "crossings", compare.CROSSING_COLUMNS, figure)
        plan.append((r, df, choose_epochs(df, epochs, where), where))
    cols = max(len(e) for _, _, e, _ in plan)
    with drawing((5.2 * cols, 3.9 * len(plan))) as fig:
        axes = fig.subplots(len(plan), cols, squeeze=False)
        for row, (r, df, eps, where) in enumerate(plan):
            for col in range(cols):
                ax = axes[row][col]
                if col >= len(eps):
                    ax.set_visible(False)
                    continue
                _bars(ax, r, df, eps[col], value, p_line(r), where)
                if col == 0:
                    ax.set_ylabel(ylabel)
        fig.suptitle(title)
        fig.tight_layout()
    return fig


def crossings_figure(runs, epochs=None):
    """Figs. 3b/3c: codes changed per layer and step, every run with crossings, at `epochs` (default pair)."""
    runs = R.runs_with(R.open_runs(runs), "crossings", "fig3bc")
    return crossings_grid(runs, epochs, "fig3bc", "codes changed per step",
                          "Quantised weights crossing a rounding threshold, per layer")


def crossings_gi_figure(runs, epochs=None):
    """Fig. 4: share of codes changed per layer and step for the high-lr runs, then the GI runs (p dotted red)."""
    runs = R.runs_with(R.open_runs(runs), "crossings", "fig4")
    chosen = [r for r in runs if R.method(r) == HIGH_LR] + [r for r in runs if uses_gi(r) and R.method(r) != HIGH_LR]
    if not chosen:
        raise R.SkipFigure(f"no run with crossings is a high-lr run (method {HIGH_LR}) or uses GI (ait); "
                           f"runs: {', '.join(f'{r.name} ({R.method(r)})' for r in runs)}")
    return crossings_grid(chosen, epochs, "fig4", "share of layer's codes\nchanged per step",
                          "Code changes per layer: high learning rate vs gradient inundation (p dotted red)",
                          value="share_per_step", p_line=uses_gi)
