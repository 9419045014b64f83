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

import re

import numpy as np

from zsq_probe.analysis import probe_tables
from zsq_probe.analysis.epochs import epoch_list, parse_epochs
from zsq_probe.errors import UserError
from zsq_probe.plots import runs as R
from zsq_probe.plots.style import P_COLOR, drawing

EARLY = 0.15
HIGH_LR = "kl-only-high-lr"
_BASIS = {"epoch_total": "per step", "step": "per step", "checkpoint_diff": "per step (net, post hoc)"}


def default_epochs(available) -> list[int]:
    """An early epoch (15% into those with data) and the last one."""
    available = sorted({int(e) for e in available})
    early = available[int(round(EARLY * (len(available) - 1)))]
    return sorted({early, available[-1]})


def choose_epochs(df, epochs, where) -> list[int]:
    """The epochs asked for (numbers, '2,4' or '3-12'; UserError when one has no rows) or the default pair."""
    available = probe_tables.crossings_epochs(df, where)
    if not available:
        raise R.SkipFigure(f"{where}: no rows")
    return _pick(available, epochs, f"{where}: no crossings rows", "epochs with data")


def _pick(available, epochs, what: str, have: str) -> list[int]:
    """`epochs` (parsed; UserError naming those without data) or the default early/last pair of `available`."""
    chosen = parse_epochs(epochs)
    if chosen is None:
        return default_epochs(available)
    missing = [e for e in chosen if e not in available]
    if missing:
        raise UserError(f"{what} for epoch(s) {', '.join(map(str, missing))} ({have}: {epoch_list(sorted(available))})")
    return chosen


def uses_gi(run) -> bool:
    """Whether a run trained with gradient inundation (its config's `gi`, or method 'ait')."""
    return bool(R.config(run).get("gi")) or R.method(run) == "ait"


def draw_crossings(ax, source, epoch: int, *, value: str = "changed_per_step", p_line: bool = False, color=None):
    """Draw one run's per-layer bars at `epoch` into `ax`; returns the per-layer frame.

    `source`: a run (RunDir or folder) or its probes/crossings DataFrame.  `value`: 'changed_per_step'
    (Fig. 3b/c) or 'share_per_step' (Fig. 4); `p_line`: draw GI's p as a dotted red line.
    """
    run, df = R.table_of(source, "crossings", probe_tables.CROSSING_COLUMNS)
    return _bars(ax, run, df, epoch, value, p_line, R.where("", run, "crossings"), color)


def _bars(ax, run, df, epoch, value, p_line, where, color=None):
    layers, basis = probe_tables.crossings_per_layer(df, epoch, where)
    x = np.arange(len(layers))
    y = layers[value].to_numpy(dtype=float)
    color = R.default_color(run) if color is None else color
    ax.bar(x, y, color=color, width=0.8)
    share = layers["changed_per_step"].sum() / max(layers["layer_size"].sum(), 1)
    zero = int((layers["changed"] == 0).sum())
    head = f"{R.method(run)} ({run.name}), " if run is not None else ""
    ax.set_title(
        f"{head}epoch {epoch}\n{100 * share:.3g}% of codes change {_BASIS[basis]}; "
        f"{zero}/{len(layers)} layers unchanged",
        fontsize=9.5,
    )
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


ABBREV = {
    "init_block": "in",
    "stage": "s",
    "unit": "u",
    "conv": "c",
    "identity_conv": "id",
    "downsample": "ds",
    "output": "fc",
    "classifier": "fc",
    "layer": "l",
    "shortcut": "sc",
}
DROP = {"features", "body", "module", "model", "weight"}
FLOOR = 1e-7  # share drawn for a layer whose codes did not change (log axis)


def short_layer(name: str) -> str:
    """'features.stage1.unit1.body.conv1.conv' -> 's1.u1.c1': short labels for the layer axis."""
    out: list[str] = []
    for part in str(name).split("."):
        if part in DROP:
            continue
        m = re.fullmatch(r"([a-z_]+?)(\d*)", part)
        if m and m.group(1) in ABBREV:
            token = ABBREV[m.group(1)] + m.group(2)
        else:
            token = part[:6]
        if out and token == "c" and out[-1].startswith("c"):
            continue  # conv1.conv -> c1
        out.append(token)
    return ".".join(out) or str(name)[:8]


def group_layers(group, epoch, value, figure):
    """Per-layer `value` of a seed group at `epoch`: (layers, short labels, mean, low, high, p, n)."""
    frames = []
    for r in group:
        df = R.read(r, "crossings", probe_tables.CROSSING_COLUMNS, figure)
        if epoch in probe_tables.crossings_epochs(df, R.where(figure, r, "crossings")):
            frames.append(probe_tables.crossings_per_layer(df, epoch, R.where(figure, r, "crossings"))[0])
    if not frames:
        return None
    layers = list(frames[0]["layer"])
    vals = np.array([[float(f.set_index("layer")[value].get(layer, np.nan)) for layer in layers] for f in frames])
    p = np.nanmean([float(f["gi_p"].mean()) for f in frames]) if uses_gi(group[0]) else np.nan
    return layers, vals.mean(0), vals.min(0), vals.max(0), p, len(frames)


def shared_epochs(groups, epochs, figure):
    """The epochs to draw: those asked for, else an early and the last epoch all the runs share."""
    available = None
    for g in groups:
        for r in g:
            df = R.read(r, "crossings", probe_tables.CROSSING_COLUMNS, figure)
            e = set(probe_tables.crossings_epochs(df, R.where(figure, r, "crossings")))
            available = e if available is None else available & e
    if not available:
        raise R.SkipFigure(f"{figure}: the runs share no epoch with crossings rows")
    return _pick(available, epochs, f"{figure}: no crossings rows in every run", "epochs all runs have")


def crossings_grid(
    runs, epochs, figure: str, ylabel: str, title: str, value: str = "share_per_step", p_line=lambda run: False
):
    """One panel per chosen epoch (shared log y-axis): per layer, one bar per method (mean over its seeds,
    error bar: seed min–max); GI's p as a dotted line (black; a further GI method with another p in its own
    colour); unchanged layers drawn at FLOOR."""
    groups = R.seed_groups(runs)
    eps = shared_epochs(groups, epochs, figure)
    with drawing((7.0, 2.0 * len(eps) + 0.5)) as fig:
        axes = fig.subplots(len(eps), 1, squeeze=False, sharex=True, sharey=True)
        for row, epoch in enumerate(eps):
            ax = axes[row][0]
            width = 0.8 / len(groups)
            labels = None
            p_drawn: list[float] = []  # one dotted line per distinct GI p (several GI methods may use different p)
            gi_groups = sum(bool(p_line(g[0])) for g in groups)
            for i, g in enumerate(groups):
                got = group_layers(g, epoch, value, figure)
                if got is None:
                    continue
                layers, mean, low, high, p, n = got
                labels = labels or [short_layer(x) for x in layers]
                x = np.arange(len(layers)) + (i - (len(groups) - 1) / 2) * width
                y = np.maximum(mean, FLOOR)
                err = None if n < 2 else np.vstack([y - np.maximum(low, FLOOR), np.maximum(high, FLOOR) - y])
                ax.bar(
                    x,
                    y - FLOOR,
                    bottom=FLOOR,
                    width=width,
                    color=R.kind_color(g[0]),
                    yerr=err,
                    error_kw={"lw": 0.6, "capsize": 1},
                    label=f"{R.method(g[0])} (n={n})",
                )
                if p_line(g[0]) and np.isfinite(p) and not any(np.isclose(p, q) for q in p_drawn):
                    who = f" ({R.method(g[0])})" if gi_groups > 1 else ""
                    ax.axhline(
                        p,
                        color=P_COLOR if not p_drawn else R.kind_color(g[0]),
                        ls=":",
                        lw=1.2,
                        label=f"GI p = {p:.3g}{who}",
                    )
                    p_drawn.append(p)
            ax.set_yscale("log")
            ax.set_ylim(bottom=FLOOR)
            ax.set_ylabel(ylabel)
            ax.set_title(f"epoch {epoch}")
            ax.grid(axis="x", visible=False)
            if labels:
                ax.set_xticks(np.arange(len(labels)))
                ax.set_xticklabels(labels, rotation=60, ha="right", rotation_mode="anchor")
                ax.set_xlim(-0.6, len(labels) - 0.4)
            if row == 0:
                ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        axes[-1][0].set_xlabel("layer (unchanged layers at the floor 1e-7)")
        fig.suptitle(title)
    return fig


def crossings_figure(runs, epochs=None):
    """Figs. 3b/3c: share of a layer's codes changed per step (log), every run with crossings, at an early and
    the last epoch (or `epochs`)."""
    runs = R.runs_with(R.open_runs(runs), "crossings", "fig3bc")
    return crossings_grid(runs, epochs, "fig3bc", "share changed / step", "Codes crossing a rounding threshold")


def crossings_gi_figure(runs, epochs=None):
    """Fig. 4: share of codes changed per layer and step for the high-lr runs, then the GI runs (p dotted)."""
    runs = R.runs_with(R.open_runs(runs), "crossings", "fig4")
    chosen = [r for r in runs if R.method(r) == HIGH_LR] + [r for r in runs if uses_gi(r) and R.method(r) != HIGH_LR]
    if not chosen:
        raise R.SkipFigure(
            f"no run with crossings is a high-lr run (method {HIGH_LR}) or uses GI (ait); "
            f"runs: {', '.join(f'{r.name} ({R.method(r)})' for r in runs)}"
        )
    return crossings_grid(
        chosen,
        epochs,
        "fig4",
        "share changed / step",
        "High lr vs gradient inundation",
        value="share_per_step",
        p_line=uses_gi,
    )
