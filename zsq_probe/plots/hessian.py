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

from zsq_probe import compare
from zsq_probe.plots import runs as R
from zsq_probe.plots.style import LOSS_COLORS, drawing, epoch_axis, grid_shape, note

DENSITY_COLUMNS = ["epoch", "loss", "node", "weight"]
SIGMA_FRACTION = 0.01
FLOOR = 1e-7  # relative to the panel's highest density


# ------------------------------------------------------------------------------------------ traces
def draw_hessian_trace(ax, source, *, legend: bool = True) -> None:
    """Draw the CE and KL trace curves of one run into `ax`.

    `source`: a run (RunDir or folder) or its probes/hessian_trace DataFrame.
    """
    run, df = R.table_of(source, "hessian_trace", compare.TRACE_COLUMNS)
    _traces(ax, run, df, legend, "")


def _traces(ax, run, df, legend, figure):
    """One curve per loss — the run's preferred estimate (compare.TRACE_PREFERENCE) — with its 95 % interval."""
    curves = compare.trace_curves(df, R.where(figure, run, "hessian_trace"))
    est = compare.preferred_estimator(curves)
    drawn = 0
    for loss in ("ce", "kl"):
        c = curves[(curves["estimator"] == est) & (curves["loss"] == loss)].sort_values("epoch")
        if not len(c):
            continue
        color = LOSS_COLORS[loss]
        ax.plot(c["epoch"], c["trace"], color=color, lw=1.8, marker="o" if len(c) <= 40 else None, ms=3,
                label=f"{loss.upper()}")
        if c["ci_low"].notna().any():
            ax.fill_between(c["epoch"], c["ci_low"], c["ci_high"], color=color, alpha=0.2, lw=0)
        drawn += 1
    if not drawn:
        note(ax, "no CE/KL trace rows")
        return
    epoch_axis(ax)
    band = "" if est == "exact" else ", 95% interval"
    ax.set_ylabel(f"Tr(H) ({est}{band})")
    if legend:
        ax.legend(loc="best")


def trace_figure(runs):
    """Fig. 2b: one trace panel per run (KD first)."""
    runs = R.kd_first(R.runs_with(R.open_runs(runs), "hessian_trace", "fig2b"))
    with drawing((max(5.0, 4.8 * len(runs)), 3.8)) as fig:
        axes = fig.subplots(1, len(runs), squeeze=False)
        for ax, r in zip(axes[0], runs):
            _traces(ax, r, R.read(r, "hessian_trace", compare.TRACE_COLUMNS, "fig2b"), True, "fig2b")
            ax.set_title(R.label(r))
        fig.suptitle("Hessian trace of CE and KL over training")
        fig.tight_layout()
    return fig


def trace_grid_figure(runs):
    """Fig. 9: one trace panel per run, grouped by setting (teacher/data), titled with setting and run."""
    runs = R.runs_with(R.open_runs(runs), "hessian_trace", "fig9")
    runs = sorted(runs, key=lambda r: (R.setting(r), not R.is_kd(r)))
    nrows, ncols = grid_shape(len(runs))
    with drawing((4.8 * ncols, 3.6 * nrows)) as fig:
        axes = fig.subplots(nrows, ncols, squeeze=False)
        flat = [ax for row in axes for ax in row]
        for i, (ax, r) in enumerate(zip(flat, runs)):
            _traces(ax, r, R.read(r, "hessian_trace", compare.TRACE_COLUMNS, "fig9"), i == 0, "fig9")
            ax.set_title(f"{R.setting(r)}\n{R.kind(r)}: {R.method(r)} ({r.name})", fontsize=10)
        for ax in flat[len(runs):]:
            ax.set_visible(False)
        fig.suptitle("Hessian trace of KL and CE across models and data sets")
        fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------- density
def smoothed_density(nodes, weights, grid, sigma):
    """sum_i w_i N(grid; node_i, sigma^2), normalised to integrate to 1 over `grid`."""
    nodes = np.asarray(nodes, dtype=float)[:, None]
    weights = np.asarray(weights, dtype=float)[:, None]
    dens = (weights * np.exp(-0.5 * ((grid[None, :] - nodes) / sigma) ** 2)).sum(0) / (sigma * np.sqrt(2 * np.pi))
    area = np.trapezoid(dens, grid) if hasattr(np, "trapezoid") else np.trapz(dens, grid)
    return dens / area if area > 0 else dens


def draw_eigen_density(ax, source, epoch: int | None = None) -> int:
    """Draw the CE and KL eigenvalue densities of one run at `epoch` (default: the last with rows).

    `source`: a run (RunDir or folder) or its probes/hessian_density DataFrame.  Returns the epoch drawn.
    """
    run, df = R.table_of(source, "hessian_density", DENSITY_COLUMNS)
    e = R.pick_epoch(df["epoch"].unique(), epoch, R.where("", run, "hessian_density"))
    _density(ax, run, df, e)
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
        ax.semilogy(grid, np.maximum(dens, floor), color=LOSS_COLORS[loss], lw=1.5, label=loss.upper())
    ax.set_ylim(bottom=floor)
    ax.set_xlabel("Eigenvalue")
    ax.set_ylabel("Density (log)")
    runs_n = int(d["slq_run"].nunique()) if "slq_run" in d else 1
    ax.legend(loc="upper right", title=f"σ = {sigma:.3g}, {runs_n} SLQ run{'s' if runs_n > 1 else ''}",
              title_fontsize=8)
    ax.set_title(f"{R.label(run)}\nepoch {epoch}" if run is not None else f"epoch {epoch}", fontsize=10)


def density_figure(runs, epoch: int | None = None):
    """Fig. 2d: one density panel per run (KD first) at `epoch` (default: each run's last)."""
    runs = R.kd_first(R.runs_with(R.open_runs(runs), "hessian_density", "fig2d"))
    with drawing((max(5.0, 4.8 * len(runs)), 3.8)) as fig:
        axes = fig.subplots(1, len(runs), squeeze=False)
        for ax, r in zip(axes[0], runs):
            df = R.read(r, "hessian_density", DENSITY_COLUMNS, "fig2d")
            _density(ax, r, df, R.pick_epoch(df["epoch"].unique(), epoch, f"fig2d {r.name}"))
        fig.suptitle("Hessian eigenvalue density: CE vs KL")
        fig.tight_layout()
    return fig
