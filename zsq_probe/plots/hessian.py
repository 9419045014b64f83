"""Hessian of CE and KL: traces over training (Fig. 2b per KD/ZQ run, Fig. 9 across models and data
sets) and the eigenvalue density at one epoch (Fig. 2d).

Traces: model-scope rows; Hutchinson estimates as solid lines with a +-1 standard-error band, SLQ
estimates (when the run has them) dashed.  Density: sum_i w_i N(x; node_i, sigma^2) over the SLQ
nodes, sigma = 1% of the panel's eigenvalue range, normalised to integrate to 1 per loss, on a log y
axis down to 1e-7 of the panel's highest density (so the small-weight tail of large eigenvalues
shows); default epoch: the last with density rows.  CE red, KL blue throughout.
"""

from __future__ import annotations

import numpy as np

from zsq_probe.analysis import probe_tables
from zsq_probe.plots import runs as R
from zsq_probe.plots.style import LOSS_COLORS, LOSS_STYLES, drawing, epoch_axis, grid_shape, note

DENSITY_COLUMNS = ["epoch", "loss", "node", "weight"]
SIGMA_FRACTION = 0.01
FLOOR = 1e-7  # relative to the panel's highest density


# ------------------------------------------------------------------------------------------ traces
def draw_hessian_trace(ax, source, *, legend: bool = True) -> None:
    """Draw the CE and KL trace curves of one run into `ax`.

    `source`: a run (RunDir or folder) or its probes/hessian_trace DataFrame.
    """
    run, df = R.table_of(source, "hessian_trace", probe_tables.TRACE_COLUMNS)
    _traces(ax, run, df, legend, "")


def _traces(ax, run, df, legend, figure):
    """One curve per loss — the run's preferred estimate (probe_tables.TRACE_PREFERENCE) — with its 95 % interval."""
    curves = probe_tables.trace_curves(df, R.where(figure, run, "hessian_trace"))
    est = probe_tables.preferred_estimator(curves)
    drawn = 0
    for loss in ("ce", "kl"):
        c = curves[(curves["estimator"] == est) & (curves["loss"] == loss)].sort_values("epoch")
        if not len(c):
            continue
        color = LOSS_COLORS[loss]
        ax.plot(
            c["epoch"],
            c["trace"],
            color=color,
            ls=LOSS_STYLES[loss],
            marker="o" if len(c) <= 40 else None,
            ms=3,
            label=f"{loss.upper()}",
        )
        if c["ci_low"].notna().any():
            ax.fill_between(c["epoch"], c["ci_low"], c["ci_high"], color=color, alpha=0.2, lw=0)
        drawn += 1
    if not drawn:
        note(ax, "no CE/KL trace rows")
        return
    epoch_axis(ax)
    band = "" if est == "exact" else ",\n95% interval"
    ax.set_ylabel(f"Tr(H) ({est}{band})")
    if legend:
        ax.legend(loc="best")


def _log_if_wide(axes) -> None:
    """A log y-axis shared by the panels when their traces span more than a factor 5 (KD vs ZQ)."""
    lows, highs = [], []
    for ax in axes:
        for line in ax.get_lines():
            y = np.asarray(line.get_ydata(), dtype=float)
            y = y[np.isfinite(y) & (y > 0)]
            if y.size:
                lows.append(y.min())
                highs.append(y.max())
    if lows and max(highs) / min(lows) > 5:
        for ax in axes:
            ax.set_yscale("log")


def trace_figure(runs):
    """Fig. 2b: one trace panel per setting run (KD first; one seed carries the Hessian probe), CE and KL with
    the estimator's 95 % interval, one y-axis shared by all panels (log when they span > 5x)."""
    runs = R.kd_first(R.representatives(R.runs_with(R.open_runs(runs), "hessian_trace", "fig2b"), "hessian_trace"))
    with drawing((7.0, 2.6)) as fig:
        axes = fig.subplots(1, len(runs), squeeze=False, sharey=True)
        for i, (ax, r) in enumerate(zip(axes[0], runs)):
            _traces(ax, r, R.read(r, "hessian_trace", probe_tables.TRACE_COLUMNS, "fig2b"), i == 0, "fig2b")
            ax.set_title(R.label(r))
            if i:
                ax.set_ylabel("")
        _log_if_wide(axes[0])
    return fig


def trace_grid_figure(runs):
    """Fig. 9: one trace panel per run (one seed per setting), grouped by setting (teacher/data), shared y."""
    runs = R.representatives(R.runs_with(R.open_runs(runs), "hessian_trace", "fig9"), "hessian_trace")
    runs = sorted(runs, key=lambda r: (R.setting(r), not R.is_kd(r)))
    nrows, ncols = grid_shape(len(runs), 4)
    with drawing((7.0, 2.2 * nrows)) as fig:
        axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
        flat = [ax for row in axes for ax in row]
        for i, (ax, r) in enumerate(zip(flat, runs)):
            _traces(ax, r, R.read(r, "hessian_trace", probe_tables.TRACE_COLUMNS, "fig9"), i == 0, "fig9")
            ax.set_title(f"{R.setting(r).split('/')[0]}: {R.label(r)}")
            if i % ncols:
                ax.set_ylabel("")
        for ax in flat[len(runs) :]:
            ax.set_visible(False)
        _log_if_wide(flat[: len(runs)])
    return fig


# ----------------------------------------------------------------------------------------- density
def smoothed_density(nodes, weights, grid, sigma):
    """sum_i w_i N(grid; node_i, sigma^2), normalised to integrate to 1 over `grid`."""
    nodes = np.asarray(nodes, dtype=float)[:, None]
    weights = np.asarray(weights, dtype=float)[:, None]
    dens = (weights * np.exp(-0.5 * ((grid[None, :] - nodes) / sigma) ** 2)).sum(0) / (sigma * np.sqrt(2 * np.pi))
    area = float(np.add.reduce(np.diff(grid) * (dens[1:] + dens[:-1]) / 2.0))  # the trapezoidal rule, as np.trapz
    return dens / area if area > 0 else dens


def draw_eigen_density(ax, source, epoch: int | None = None) -> int:
    """Draw the CE and KL eigenvalue densities of one run at `epoch` (default: the last with rows).

    `source`: a run (RunDir or folder) or its probes/hessian_density DataFrame.  Returns the epoch drawn.
    """
    run, df = R.table_of(source, "hessian_density", DENSITY_COLUMNS)
    e = R.pick_epoch(df["epoch"].unique(), epoch, R.where("", run, "hessian_density"))
    _density(ax, run, df, e)
    if ax.get_lines():
        ax.legend(loc="upper right")
    return e


def _density(ax, run, df, epoch):
    d = df[df["epoch"] == epoch]
    if "origin" in d and (d["origin"] == "online").any():
        d = d[d["origin"] == "online"]  # a post-hoc measurement repeats the online one: one set of weights
    elif "origin" in d:
        d = d[d["origin"] == d["origin"].iloc[0]] if len(d) else d
    d = d[np.isfinite(d["node"].astype(float)) & np.isfinite(d["weight"].astype(float))]
    if d.empty:
        note(ax, f"no finite SLQ nodes at epoch {epoch}")
        return
    lo, hi = float(d["node"].min()), float(d["node"].max())
    span = max(hi - lo, 1e-3 * max(abs(lo), abs(hi), 1.0))
    recorded = d["sigma"].astype(float) if "sigma" in d else None
    sigma = float(recorded.median()) if recorded is not None and recorded.notna().any() else SIGMA_FRACTION * span
    grid = np.linspace(lo - 0.05 * span, hi + 0.05 * span, 2000)
    curves = {}
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
        ax.plot(grid, y, color=LOSS_COLORS[loss], lw=1.0, ls=LOSS_STYLES[loss], label=loss.upper())
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density (log)")
    runs_n = int(d["slq_run"].nunique()) if "slq_run" in d else 1
    name = ("KD" if R.is_kd(run) else R.method(run)) if run is not None else f"epoch {epoch}"
    ax.set_title(f"{name}\nσ = {sigma:.2g}, {runs_n} SLQ run{'s' if runs_n > 1 else ''}")


def density_figure(runs, epoch: int | None = None):
    """Fig. 2d: one density panel per run (KD first) at `epoch` (default: each run's last)."""
    runs = R.kd_first(R.representatives(R.runs_with(R.open_runs(runs), "hessian_density", "fig2d"), "hessian_density"))
    with drawing((7.0, 2.6)) as fig:
        fig.get_layout_engine().set(h_pad=0.06)
        axes = fig.subplots(1, len(runs), squeeze=False, sharex=True, sharey=True)
        for ax, r in zip(axes[0], runs):
            df = R.read(r, "hessian_density", DENSITY_COLUMNS, "fig2d")
            e = R.pick_epoch(df["epoch"].unique(), epoch, f"fig2d {r.name}")
            _density(ax, r, df, e)
            if ax is not axes[0][0]:
                ax.set_ylabel("")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", title=f"epoch {e}\nσ: kernel\nwidth")
    return fig
