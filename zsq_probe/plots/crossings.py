"""Weights moving to another quantisation level, per layer: Figs. 3b/3c (the ZQ runs without GI or a raised
lr, e.g. GDFQ vs KL-only, at an early and a late epoch) and Fig. 4 (the high-learning-rate run, method
'kl-only-high-lr', and gradient-inundation runs such as 'ait', with GI's p at each epoch as a dotted black line).

What is counted (`count_column`): the net change between epoch-end codes (`changed_net`) when the run has it,
else level changes (`changed_level`: q + zero_point, so a per-channel zero point flipping back and forth is not
an update), never the raw code changes `changed` except for older runs without either (said in the caption).
One panel per epoch, one bar per method (mean over seeds, error bar min-max).  Default epochs: an early one (15%
into the epochs with data; the paper's 60 of 400) and the last one.  Per-layer values come from the
`epoch_total` rows (else the epoch's `step` rows, else post-hoc `checkpoint_diff` rows).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, SupportsInt, TypeAlias

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from zsq_probe.analysis import probe_tables
from zsq_probe.analysis.epochs import epoch_list, parse_epochs
from zsq_probe.errors import UserError
from zsq_probe.plots import runs as R
from zsq_probe.plots.style import P_COLOR, drawing
from zsq_probe.rundir.store import RunDir

if TYPE_CHECKING:  # matplotlib loads when a figure is drawn, not with this module
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.typing import ColorType

# a seed group's per-layer values at one epoch: (layers, mean, low, high, GI's p, seeds, count columns read)
LayerStats: TypeAlias = tuple[
    list[str], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], float, int, set[str]
]

EARLY = 0.15
HIGH_LR = "kl-only-high-lr"
_BASIS = {"epoch_total": "per step", "step": "per step", "checkpoint_diff": "per step (net, post hoc)"}
# the counts a figure may read, first preferred (issue 22: level or net changes, never zero-point flips)
COUNT_COLUMNS = ("changed_net", "changed_level")
COUNT_TEXT = {
    "changed_net": "net change between epoch-end codes (a weight that moves and comes back counts 0)",
    "changed_level": "level changes (q + zero point; zero-point flips of a channel are not counted)",
    "changed": "integer codes q changed, zero-point flips included (an older run without level or net counts)",
}
EPOCHS_PER_PAGE = 3  # epoch panels per file (style.MAX_HEIGHT); more continue in STEM_2, ...


def count_column(df: pd.DataFrame) -> str:
    """The count a crossings figure reads from `df`: the first of COUNT_COLUMNS recorded in every row of the
    statistic the figure uses (`epoch_total`, else `step`, else `checkpoint_diff`), else 'changed'."""
    for basis in ("epoch_total", "step", "checkpoint_diff"):
        rows = df[df["statistic"] == basis]
        if len(rows):
            break
    for column in COUNT_COLUMNS:
        if column in rows and rows[column].notna().all():
            return column
    return "changed"


def counted(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with `changed` holding the count_column's values (probe_tables.crossings_per_layer sums `changed`)."""
    column = count_column(df)
    return df if column == "changed" else df.assign(changed=df[column])


def default_epochs(available: Iterable[SupportsInt]) -> list[int]:
    """An early epoch (15% into those with data) and the last one."""
    epochs = sorted({int(e) for e in available})
    early = epochs[int(round(EARLY * (len(epochs) - 1)))]
    return sorted({early, epochs[-1]})


def choose_epochs(df: pd.DataFrame, epochs: R.EpochsArg, where: str) -> list[int]:
    """The epochs asked for (numbers, '2,4' or '3-12'; UserError when one has no rows) or the default pair."""
    available = probe_tables.crossings_epochs(df, where)
    if not available:
        raise R.SkipFigure(f"{where}: no rows")
    return _pick(available, epochs, f"{where}: no crossings rows", "epochs with data")


def _pick(available: Collection[int], epochs: R.EpochsArg, what: str, have: str) -> list[int]:
    """`epochs` (parsed; UserError naming those without data) or the default early/last pair of `available`."""
    chosen = parse_epochs(epochs)
    if chosen is None:
        return default_epochs(available)
    missing = [e for e in chosen if e not in available]
    if missing:
        raise UserError(f"{what} for epoch(s) {', '.join(map(str, missing))} ({have}: {epoch_list(sorted(available))})")
    return chosen


def uses_gi(run: RunDir) -> bool:
    """Whether a run trained with gradient inundation (its config's `gi`, or method 'ait')."""
    return bool(R.config(run).get("gi")) or R.method(run) == "ait"


def draw_crossings(
    ax: Axes,
    source: R.TableSource,
    epoch: int,
    *,
    value: str = "changed_per_step",
    p_line: bool = False,
    color: ColorType | None = None,
) -> pd.DataFrame:
    """Draw one run's per-layer bars at `epoch` into `ax`.

    Args:
        ax: The axes to draw into.
        source: A run (RunDir or folder) or its probes/crossings DataFrame.
        epoch: The epoch drawn.
        value: 'changed_per_step' or 'share_per_step' of the count `count_column` picks (net or level changes).
        p_line: Whether to draw GI's p as a dotted black line.
        color: The bars' colour; default the run's method colour.

    Returns:
        The per-layer frame.

    Raises:
        UserError: `source` is not a run, its table lacks a needed column, or `epoch` has no rows.
    """
    run, df = R.table_of(source, "crossings", probe_tables.CROSSING_COLUMNS)
    return _bars(ax, run, df, epoch, value, p_line, R.where("", run, "crossings"), color)


def _bars(
    ax: Axes,
    run: RunDir | None,
    df: pd.DataFrame,
    epoch: int,
    value: str,
    p_line: bool,
    where: str,
    color: ColorType | None = None,
) -> pd.DataFrame:
    layers, basis = probe_tables.crossings_per_layer(counted(df), epoch, where)
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


def group_layers(
    group: Sequence[RunDir],
    epoch: int,
    value: str,
    figure: str,
    tables: Mapping[str, pd.DataFrame] | None = None,
) -> LayerStats | None:
    """Per-layer `value` of a seed group at `epoch`: (layers, mean, low, high, p, n, count columns).  `tables`:
    {run name: its crossings table} already read (read here otherwise)."""
    frames: list[pd.DataFrame] = []
    columns: set[str] = set()
    for r in group:
        df = tables[r.name] if tables else R.read(r, "crossings", probe_tables.CROSSING_COLUMNS, figure)
        if epoch in probe_tables.crossings_epochs(df, R.where(figure, r, "crossings")):
            columns.add(count_column(df))
            frames.append(probe_tables.crossings_per_layer(counted(df), epoch, R.where(figure, r, "crossings"))[0])
    if not frames:
        return None
    layers = list(frames[0]["layer"])
    vals = np.array([[float(f.set_index("layer")[value].get(layer, np.nan)) for layer in layers] for f in frames])
    p = float(np.nanmean([float(f["gi_p"].mean()) for f in frames])) if uses_gi(group[0]) else np.nan
    return layers, vals.mean(0), vals.min(0), vals.max(0), p, len(frames), columns


def shared_epochs(
    groups: Iterable[Iterable[RunDir]],
    epochs: R.EpochsArg,
    figure: str,
    tables: Mapping[str, pd.DataFrame] | None = None,
) -> list[int]:
    """The epochs to draw: those asked for, else an early and the last epoch all the runs share."""
    available: set[int] | None = None
    for g in groups:
        for r in g:
            df = tables[r.name] if tables else R.read(r, "crossings", probe_tables.CROSSING_COLUMNS, figure)
            e = set(probe_tables.crossings_epochs(df, R.where(figure, r, "crossings")))
            available = e if available is None else available & e
    if not available:
        raise R.SkipFigure(f"{figure}: the runs share no epoch with crossings rows")
    return _pick(available, epochs, f"{figure}: no crossings rows in every run", "epochs all runs have")


def method_label(group: Sequence[RunDir], n: int) -> str:
    """'gdfq (n=2)', and below it the lr when it is not the scale's base lr ('lr 0.01 = 10× base')."""
    return f"{R.method(group[0])} (n={n})" + (f"\n{R.lr_short(group[0])}" if R.raised_lr(group[0]) else "")


def crossings_grid(
    runs: Sequence[RunDir],
    epochs: R.EpochsArg,
    figure: str,
    stem: str,
    title: str,
    p_line: Callable[[RunDir], bool] = lambda run: False,
) -> list[tuple[str, Figure]]:
    """Fig. 3b/c or 4 as [(file stem, Figure)]: one panel per chosen epoch (EPOCHS_PER_PAGE a file, shared log
    y-axis): per layer, one bar per method (mean over its seeds, error bar: seed min–max) of the share of its
    weights changed per step; GI's p at that epoch as a dotted line with its own legend entry; unchanged layers
    drawn at FLOOR."""
    groups = R.seed_groups(runs)
    tables = {r.name: R.read(r, "crossings", probe_tables.CROSSING_COLUMNS, figure) for r in runs}
    eps = shared_epochs(groups, epochs, figure, tables)
    out: list[tuple[str, Figure]] = []
    for i, page in enumerate(R.pages(eps, EPOCHS_PER_PAGE)):
        with drawing((7.0, 2.0 * len(page) + 0.5)) as fig:
            axes = fig.subplots(len(page), 1, squeeze=False, sharex=True, sharey=True)
            columns: set[str] = set()
            for row, epoch in enumerate(page):
                columns |= _epoch_panel(axes[row][0], groups, tables, epoch, figure, p_line, row == 0)
            axes[-1][0].set_xlabel("layer (unchanged layers at the floor 1e-7)")
            fig.suptitle(title)
        out.append((R.page_stem(stem, i), R.describe(fig, runs, crossings_caption(figure, columns, p_line, runs))))
    return out


def _epoch_panel(
    ax: Axes,
    groups: Sequence[Sequence[RunDir]],
    tables: Mapping[str, pd.DataFrame],
    epoch: int,
    figure: str,
    p_line: Callable[[RunDir], bool],
    legend_methods: bool,
) -> set[str]:
    """One epoch's bars of every seed group, its p lines and its legend; returns the count columns read."""
    width = 0.8 / len(groups)
    labels: list[str] | None = None
    columns: set[str] = set()
    p_handles: list[Line2D] = []
    p_drawn: list[float] = []  # one dotted line per distinct GI p (several GI methods may use different p)
    gi_groups = sum(bool(p_line(g[0])) for g in groups)
    for i, g in enumerate(groups):
        got = group_layers(g, epoch, "share_per_step", figure, tables)
        if got is None:
            continue
        layers, mean, low, high, p, n, cols = got
        columns |= cols
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
            label=method_label(g, n),
        )
        if p_line(g[0]) and np.isfinite(p) and not any(np.isclose(p, q) for q in p_drawn):
            who = f", {R.method(g[0])}" if gi_groups > 1 else ""
            color = P_COLOR if not p_drawn else R.kind_color(g[0])
            p_handles.append(ax.axhline(p, color=color, ls=":", lw=1.2, label=f"GI p = {p:.3g} (epoch {epoch}{who})"))
            p_drawn.append(p)
    ax.set_yscale("log")
    ax.set_ylim(bottom=FLOOR)
    ax.set_ylabel("share changed / step")
    ax.set_title(f"epoch {epoch}")
    ax.grid(axis="x", visible=False)
    if labels:
        ax.set_xticks(np.arange(len(labels)))
        ax.set_xticklabels(labels, rotation=60, ha="right", rotation_mode="anchor")
        ax.set_xlim(-0.6, len(labels) - 0.4)
    handles = [h for h in ax.get_legend_handles_labels()[0] if legend_methods or h in p_handles]
    if handles:  # every panel lists the p it draws (p follows its schedule); the first also the methods
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return columns


def crossings_caption(
    figure: str, columns: Iterable[str], p_line: Callable[[RunDir], bool], runs: Sequence[RunDir]
) -> str:
    """The crossings figures' caption: what is counted, how it is aggregated, what the p line is."""
    what = "; ".join(COUNT_TEXT[c] for c in sorted(columns, key=list(COUNT_TEXT).index)) or COUNT_TEXT["changed"]
    text = (
        f"Per quantised layer, the share of its weights changed per student step over the epoch, counting the "
        f"{what}; bars: mean over a method's seeds, error bars: seed min–max (n = seeds), log axis. "
    )
    if any(p_line(r) for r in runs):
        text += (
            "GI's p at the epoch of the panel (it follows the p schedule) is the dotted black line (a second GI "
            "method with another p: a dotted line in its colour), each p in the panel's legend. "
        )
    if figure == "fig4":
        lrs = sorted({R.lr_text(r) for r in runs if R.method(r) == HIGH_LR})
        if lrs:
            text += f"The high-lr run trains with {'; '.join(lrs)}."
    return text


def crossings_figure(runs: R.RunsArg, epochs: R.EpochsArg = None) -> list[tuple[str, Figure]]:
    """Figs. 3b/3c: share of a layer's weights changed per step (log axis), one panel per epoch.

    Draws the ZQ runs without GI or a raised lr (e.g. GDFQ vs KL-only, the paper's contrast); the high-lr and
    GI runs are Fig. 4's.  EPOCHS_PER_PAGE epochs a file; more continue in further files.

    Args:
        runs: Run folders or RunDirs (one or several).
        epochs: The epochs drawn ('60,350', '3-12', a number or numbers); default an early epoch (15% into
            those all runs share) and the last one.

    Returns:
        [(file stem, figure)], one a page, each with its caption recorded (`runs.describe`).

    Raises:
        SkipFigure: No run has probes/crossings, every such run is a high-lr or GI run, or the runs share no
            epoch with crossings rows.
        UserError: No runs are given, a table lacks a needed column, or an epoch asked for has no rows.
    """
    runs = R.runs_with(R.open_runs(runs), "crossings", "fig3bc")
    chosen = [r for r in runs if R.method(r) != HIGH_LR and not uses_gi(r)]
    if not chosen:
        raise R.SkipFigure(
            "fig3bc draws ZQ runs without GI or a raised lr and every run with crossings is a high-lr or GI run "
            "(fig4 draws those)"
        )
    return crossings_grid(chosen, epochs, "fig3bc", "fig3bc_crossings", "Weights changed per step (Fig. 3b/c)")


def crossings_gi_figure(runs: R.RunsArg, epochs: R.EpochsArg = None) -> list[tuple[str, Figure]]:
    """Fig. 4: share of weights changed per layer and step for the high-lr runs, then the GI runs (p dotted).

    Args:
        runs: Run folders or RunDirs (one or several).
        epochs: The epochs drawn ('60,350', '3-12', a number or numbers); default an early epoch (15% into
            those all runs share) and the last one.

    Returns:
        [(file stem, figure)], one a page, each with its caption recorded (`runs.describe`).

    Raises:
        SkipFigure: No run has probes/crossings, none of those is a high-lr (kl-only-high-lr) or GI run, or the
            runs share no epoch with crossings rows.
        UserError: No runs are given, a table lacks a needed column, or an epoch asked for has no rows.
    """
    runs = R.runs_with(R.open_runs(runs), "crossings", "fig4")
    chosen = [r for r in runs if R.method(r) == HIGH_LR] + [r for r in runs if uses_gi(r) and R.method(r) != HIGH_LR]
    if not chosen:
        raise R.SkipFigure(
            f"no run with crossings is a high-lr run (method {HIGH_LR}) or uses GI (ait); "
            f"runs: {', '.join(f'{r.name} ({R.method(r)})' for r in runs)}"
        )
    return crossings_grid(
        chosen, epochs, "fig4", "fig4_crossings_gi", "High lr vs gradient inundation (Fig. 4)", p_line=uses_gi
    )
