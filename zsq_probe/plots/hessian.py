"""Hessian of CE and KL: traces over training (Fig. 2b per KD/ZQ run, Fig. 9 across models and data
sets) and the eigenvalue density at one epoch (Fig. 2d).

Traces: model-scope rows; Hutchinson estimates as solid lines with a +-1 standard-error band, SLQ
estimates (when the run has them) dashed.  Density: sum_i w_i N(x; node_i, sigma^2) over the SLQ
nodes, one sigma for every panel of Fig. 2d (the narrowest the runs recorded; 1% of a run's eigenvalue range
when it recorded none), normalised to integrate to 1 per loss, on a log y axis down to 1e-7 of the panel's
highest density (so the small-weight tail of large eigenvalues shows), each panel over its own eigenvalue
range; default epoch: the last with density rows.  CE red, KL blue throughout.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from zsq_probe.analysis import probe_tables
from zsq_probe.plots import runs as R
from zsq_probe.plots.style import LOSS_COLORS, LOSS_STYLES, drawing, epoch_axis, grid_shape, note
from zsq_probe.rundir.store import RunDir

if TYPE_CHECKING:  # matplotlib loads when a figure is drawn, not with this module
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

DensityPanel: TypeAlias = tuple[RunDir, int, pd.DataFrame]  # (run, epoch, its density rows at that epoch)

DENSITY_COLUMNS = ["epoch", "loss", "node", "weight"]
SIGMA_FRACTION = 0.01
FLOOR = 1e-7  # relative to the panel's highest density


# ------------------------------------------------------------------------------------------ traces
def draw_hessian_trace(ax: Axes, source: R.TableSource, *, legend: bool = True) -> None:
    """Draw the CE and KL trace curves of one run into `ax`.

    Args:
        ax: The axes to draw into.
        source: A run (RunDir or folder) or its probes/hessian_trace DataFrame.
        legend: Whether to draw a legend.

    Raises:
        UserError: `source` is not a run, or its table lacks a needed column.
    """
    run, df = R.table_of(source, "hessian_trace", probe_tables.TRACE_COLUMNS)
    _traces(ax, run, df, legend, "")


FEW_POINTS = 4  # a curve with this many epochs or fewer is drawn as markers with error bars, not a line


def loss_label(run: RunDir | None, loss: str) -> str:
    """'CE', or 'KL·T² (T = 20)': the KL Hessian is that of the KL term as trained (KLDiv x T^2)."""
    if loss != "kl":
        return loss.upper()
    t = R.config(run).get("temperature") if run is not None else None
    return f"KL·T² (T = {float(t):g})" if t is not None else "KL·T²"


def _traces(ax: Axes, run: RunDir | None, df: pd.DataFrame, legend: bool, figure: str) -> None:
    """One curve per loss — the run's preferred estimate (probe_tables.TRACE_PREFERENCE) — with its 95 % interval
    (a band, or error bars on markers when FEW_POINTS or fewer epochs: no line implies values between them)."""
    curves = probe_tables.trace_curves(df, R.where(figure, run, "hessian_trace"))
    est = probe_tables.preferred_estimator(curves)
    drawn = 0
    for loss in ("ce", "kl"):
        c = curves[(curves["estimator"] == est) & (curves["loss"] == loss)].sort_values("epoch")
        if not len(c):
            continue
        _trace_curve(ax, c, LOSS_COLORS[loss], LOSS_STYLES[loss], "o" if loss == "ce" else "s", loss_label(run, loss))
        drawn += 1
    if not drawn:
        note(ax, "no CE/KL trace rows")
        return
    epoch_axis(ax)
    measured = sorted({int(e) for e in curves["epoch"]})
    if len(measured) <= FEW_POINTS:  # ticks at the epochs measured: nothing between them is
        ax.set_xticks(measured)
    band = "" if est == "exact" else ",\n95% interval"
    ax.set_ylabel(f"Tr(H) ({est}{band})")
    if legend:
        ax.legend(loc="best")


def _trace_curve(ax: Axes, c: pd.DataFrame, color: str, ls: str, marker: str, label: str) -> None:
    x, y = c["epoch"].to_numpy(dtype=float), c["trace"].to_numpy(dtype=float)
    has_ci = bool(c["ci_low"].notna().any())
    if len(c) <= FEW_POINTS:
        err = None
        if has_ci:
            low, high = c["ci_low"].to_numpy(dtype=float), c["ci_high"].to_numpy(dtype=float)
            err = np.vstack([np.maximum(y - low, 0), np.maximum(high - y, 0)])
        ax.errorbar(x, y, yerr=err, color=color, ls="none", marker=marker, ms=4, capsize=2, lw=1.0, label=label)
        return
    ax.plot(x, y, color=color, ls=ls, marker=marker if len(c) <= 40 else None, ms=3, label=label)
    if has_ci:
        ax.fill_between(x, c["ci_low"], c["ci_high"], color=color, alpha=0.2, lw=0)


def _log_if_wide(axes: Sequence[Axes]) -> None:
    """A log y-axis shared by the panels when their traces span more than a factor 5 (KD vs ZQ)."""
    lows: list[float] = []
    highs: list[float] = []
    for ax in axes:
        for line in ax.get_lines():  # errorbar markers are Line2D too
            y = np.asarray(line.get_ydata(), dtype=float)
            y = y[np.isfinite(y) & (y > 0)]
            if y.size:
                lows.append(y.min())
                highs.append(y.max())
    if lows and max(highs) / min(lows) > 5:
        for ax in axes:
            ax.set_yscale("log")


TRACE_PANELS = 8  # per file: two rows of four (style.MAX_HEIGHT); more runs continue in STEM_2, ...


def trace_figure(runs: R.RunsArg) -> list[tuple[str, Figure]]:
    """Fig. 2b: one Hessian-trace panel per run (KD first; one seed per method carries the Hessian probe).

    Each panel shows CE and KL·T² with the estimator's 95 % interval; the panels of a file share one y-axis
    (log when they span more than 5x); more than TRACE_PANELS runs continue in further files.

    Args:
        runs: Run folders or RunDirs (one or several).

    Returns:
        [(file stem, figure)], one a page, each with its caption recorded (`runs.describe`).

    Raises:
        SkipFigure: No run has probes/hessian_trace.
        UserError: No runs are given, or a table lacks a needed column.
    """
    runs = R.kd_first(R.representatives(R.runs_with(R.open_runs(runs), "hessian_trace", "fig2b"), "hessian_trace"))
    figs = [_trace_page(page, "fig2b", R.label) for page in R.pages(runs, TRACE_PANELS)]
    return [(R.page_stem("fig2b_hessian_trace", i), fig) for i, fig in enumerate(figs)]


def _trace_page(runs: Sequence[RunDir], figure: str, title: Callable[[RunDir], str]) -> Figure:
    nrows, ncols = grid_shape(len(runs), 4)
    with drawing((7.0, 2.6 * nrows)) as fig:
        axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
        flat = [ax for row in axes for ax in row]
        for i, (ax, r) in enumerate(zip(flat, runs)):
            _traces(ax, r, R.read(r, "hessian_trace", probe_tables.TRACE_COLUMNS, figure), i == 0, figure)
            ax.set_title(title(r))
            if i % ncols:
                ax.set_ylabel("")
        for ax in flat[len(runs) :]:
            ax.set_visible(False)
        _log_if_wide(flat[: len(runs)])
    return R.describe(fig, runs, trace_caption(runs))


def trace_caption(runs: Iterable[RunDir]) -> str:
    """The trace figures' caption: estimator, interval, the KL Hessian's temperature, markers vs lines."""
    temps = sorted({float(t) for r in runs if (t := R.config(r).get("temperature")) is not None})
    t = ", ".join(f"{x:g}" for x in temps) or "not recorded"
    return (
        "Hessian trace of the student's CE loss (wine, circles) and of the KL term as trained, KL·T² (blue, "
        f"squares; T = {t}), w.r.t. all weights, at the epochs the Hessian probe ran; the run's preferred estimator "
        "(the exact trace where the run has it, else Hutch++, Hutchinson or SLQ) with its 95 % interval (band, or "
        "error bars when a run has few measurements: markers are not joined, nothing is measured between them); an "
        f"exact trace (the Gauss-Newton diagonal) is a point and has no interval.{_estimators_drawn(runs)} One panel "
        "per run holding the probe (one seed per method)."
    )


def _estimators_drawn(runs: Iterable[RunDir]) -> str:
    """' Estimator drawn: exact (kd-s0, gdfq-s0).' — which estimator each run's panel shows."""
    drawn: dict[str, list[str]] = {}
    for r in runs:
        if not R.has_table(r, "hessian_trace"):
            continue
        est = probe_tables.preferred_estimator(probe_tables.trace_curves(r.read_table("hessian_trace"), r.name))
        drawn.setdefault(str(est), []).append(r.name)
    if not drawn:
        return ""
    return " Estimator drawn: " + "; ".join(f"{est} ({', '.join(names)})" for est, names in drawn.items()) + "."


def trace_grid_figure(runs: R.RunsArg) -> list[tuple[str, Figure]]:
    """Fig. 9: one Hessian-trace panel per run (one seed per method), grouped by setting (teacher/data), shared y.

    Args:
        runs: Run folders or RunDirs (one or several).

    Returns:
        [(file stem, figure)], one a page, each with its caption recorded (`runs.describe`).

    Raises:
        SkipFigure: No run has probes/hessian_trace, or the runs span one setting (Fig. 2b draws it).
        UserError: No runs are given, or a table lacks a needed column.
    """
    runs = R.representatives(R.runs_with(R.open_runs(runs), "hessian_trace", "fig9"), "hessian_trace")
    R.require_settings(runs, "fig9", "fig2b")
    ordered = sorted(runs, key=lambda r: (R.setting(r), not R.is_kd(r)))
    figs = [
        _trace_page(page, "fig9", lambda r: f"{R.setting(r).split('/')[0]}: {R.label(r)}")
        for page in R.pages(ordered, TRACE_PANELS)
    ]
    return [(R.page_stem("fig9_trace_grid", i), fig) for i, fig in enumerate(figs)]


# ----------------------------------------------------------------------------------------- density
def smoothed_density(
    nodes: ArrayLike, weights: ArrayLike, grid: NDArray[np.float64], sigma: float
) -> NDArray[np.float64]:
    """sum_i w_i N(grid; node_i, sigma^2), normalised to integrate to 1 over `grid`."""
    node_col = np.asarray(nodes, dtype=float)[:, None]
    weight_col = np.asarray(weights, dtype=float)[:, None]
    dens: NDArray[np.float64] = (weight_col * np.exp(-0.5 * ((grid[None, :] - node_col) / sigma) ** 2)).sum(0) / (
        sigma * np.sqrt(2 * np.pi)
    )
    area = float(np.add.reduce(np.diff(grid) * (dens[1:] + dens[:-1]) / 2.0))  # the trapezoidal rule, as np.trapz
    return dens / area if area > 0 else dens


MIN_SLQ_RUNS = 8  # fewer independent SLQ runs give a few spikes, not a density (the caption says so)
DENSITY_PANELS = 8  # per file: two rows of four


def draw_eigen_density(ax: Axes, source: R.TableSource, epoch: int | None = None) -> int:
    """Draw the CE and KL eigenvalue densities of one run at one epoch into `ax`.

    Args:
        ax: The axes to draw into.
        source: A run (RunDir or folder) or its probes/hessian_density DataFrame.
        epoch: The epoch drawn; default the last with rows.

    Returns:
        The epoch drawn.

    Raises:
        UserError: `source` is not a run, its table lacks a needed column, or `epoch` has no rows.
        SkipFigure: The table has no epoch with rows.
    """
    run, df = R.table_of(source, "hessian_density", DENSITY_COLUMNS)
    e = R.pick_epoch(df["epoch"].unique(), epoch, R.where("", run, "hessian_density"))
    d = density_rows(df, e)
    if d.empty:
        note(ax, f"no finite SLQ nodes at epoch {e}")
        return e
    _density(ax, run, d, e, own_sigma(d))
    if ax.get_lines():
        ax.legend(loc="upper right")
    return e


def density_rows(df: pd.DataFrame, epoch: int) -> pd.DataFrame:
    """The finite SLQ nodes of one measurement at `epoch` (online rows when there are any: a post-hoc
    measurement of the same checkpoint repeats them)."""
    d = df[df["epoch"] == epoch]
    if "origin" in d and (d["origin"] == "online").any():
        d = d[d["origin"] == "online"]
    elif "origin" in d:
        d = d[d["origin"] == d["origin"].iloc[0]] if len(d) else d
    return d[np.isfinite(d["node"].astype(float)) & np.isfinite(d["weight"].astype(float))]


def _span(d: pd.DataFrame) -> tuple[float, float, float]:
    lo, hi = float(d["node"].min()), float(d["node"].max())
    return lo, hi, max(hi - lo, 1e-3 * max(abs(lo), abs(hi), 1.0))


def own_sigma(d: pd.DataFrame) -> float:
    """The kernel width a run recorded (`sigma`, median), else SIGMA_FRACTION of its eigenvalue range."""
    recorded = d["sigma"].astype(float) if "sigma" in d else None
    if recorded is not None and recorded.notna().any():
        return float(recorded.median())
    return SIGMA_FRACTION * _span(d)[2]


def slq_run_count(d: pd.DataFrame) -> int:
    """Independent SLQ runs behind one loss's density (the fewest over the losses drawn)."""
    if "slq_run" not in d:
        return 1
    return int(d.groupby("loss")["slq_run"].nunique().min())


def _density(ax: Axes, run: RunDir | None, d: pd.DataFrame, epoch: int, sigma: float) -> None:
    lo, hi, span = _span(d)
    grid = np.linspace(lo - 0.05 * span, hi + 0.05 * span, 4000)  # this panel's own eigenvalue range
    curves: dict[str, NDArray[np.float64]] = {}
    for loss in ("ce", "kl"):
        g = d[d["loss"] == loss]
        if len(g):
            curves[loss] = smoothed_density(g["node"], g["weight"], grid, sigma)
    if not curves:
        note(ax, f"no CE or KL density rows at epoch {epoch}")
        return
    floor = FLOOR * max(float(c.max()) for c in curves.values())
    for loss, dens in curves.items():
        y = np.maximum(dens, floor)
        if loss == "ce":  # CE filled underneath, KL a dashed line on top: both stay visible where they overlap
            ax.fill_between(grid, floor, y, color=LOSS_COLORS[loss], alpha=0.3, lw=0)
        label = "KL·T²" if loss == "kl" else "CE"
        ax.plot(grid, y, color=LOSS_COLORS[loss], lw=1.0, ls=LOSS_STYLES[loss], label=label)
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log)")
    n = slq_run_count(d)
    name = ("KD" if R.is_kd(run) else R.method(run)) if run is not None else "run"
    ax.set_title(f"{name}, epoch {epoch}\n{n} SLQ run{'s' if n > 1 else ''}")


def density_figure(runs: R.RunsArg, epoch: int | None = None) -> list[tuple[str, Figure]]:
    """Fig. 2d: one Hessian eigenvalue-density panel per run (KD first), one kernel width σ for every panel.

    Each panel spans its own eigenvalue range; more than DENSITY_PANELS runs continue in further files.

    Args:
        runs: Run folders or RunDirs (one or several).
        epoch: The epoch drawn; default each run's last with rows.

    Returns:
        [(file stem, figure)], one a page, each with its caption recorded (`runs.describe`).

    Raises:
        SkipFigure: No run has probes/hessian_density, or a run's table has no epoch with rows.
        UserError: No runs are given, a table lacks a needed column, or `epoch` has no rows in a run.
    """
    runs = R.kd_first(R.representatives(R.runs_with(R.open_runs(runs), "hessian_density", "fig2d"), "hessian_density"))
    panels: list[DensityPanel] = []
    for r in runs:
        df = R.read(r, "hessian_density", DENSITY_COLUMNS, "fig2d")
        e = R.pick_epoch(df["epoch"].unique(), epoch, f"fig2d {r.name}")
        panels.append((r, e, density_rows(df, e)))
    drawn = [p for p in panels if not p[2].empty]
    sigma = min((own_sigma(d) for _, _, d in drawn), default=1.0)  # the narrowest: no panel is over-smoothed
    figs = [_density_page(page, sigma) for page in R.pages(panels, DENSITY_PANELS)]
    return [(R.page_stem("fig2d_eigen_density", i), fig) for i, fig in enumerate(figs)]


def _density_page(panels: Sequence[DensityPanel], sigma: float) -> Figure:
    nrows, ncols = grid_shape(len(panels), 4)
    with drawing((7.0, 2.6 * nrows), h_pad=0.06) as fig:
        axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
        flat = [ax for row in axes for ax in row]
        for i, (ax, (r, e, d)) in enumerate(zip(flat, panels)):
            if d.empty:
                note(ax, f"{r.name}: no finite SLQ nodes at epoch {e}")
            else:
                _density(ax, r, d, e, sigma)
            if i % ncols:
                ax.set_ylabel("")
        for ax in flat[len(panels) :]:
            ax.set_visible(False)
        handles, labels = next(((h, lab) for h, lab in (ax.get_legend_handles_labels() for ax in flat) if h), ([], []))
        if handles:
            fig.legend(handles, labels, loc="outside right upper", title=f"σ = {sigma:.2g}\n(every panel)")
    return R.describe(fig, [p[0] for p in panels], density_caption(panels, sigma))


def density_caption(panels: Iterable[DensityPanel], sigma: float) -> str:
    """Fig. 2d's caption: the estimator, the runs behind each density, the one kernel width, the axes."""
    counts = sorted({slq_run_count(d) for _, _, d in panels if not d.empty})
    few = [c for c in counts if c < MIN_SLQ_RUNS]
    text = (
        "Eigenvalue density of the Hessian of the student's CE loss (wine, filled) and of the KL term as trained "
        f"(KL·T², blue dashed), by stochastic Lanczos quadrature averaged over {', '.join(map(str, counts))} "
        f"independent run(s): the Ritz nodes smoothed by one Gaussian kernel of width σ = {sigma:.3g} in every panel "
        "(the narrowest width any panel's runs recorded), each density normalised to integrate to 1, on a log axis "
        "down to 1e-7 of the panel's highest density. Each panel has its own eigenvalue range (x axis)."
    )
    if few:
        text += f" With fewer than {MIN_SLQ_RUNS} SLQ runs a density is a few spikes rather than a density."
    return text
