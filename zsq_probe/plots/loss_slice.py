"""Fig. 2c: the loss along the top Hessian eigenvector, L(theta + k * e * delta), k in [-0.5, 0.5], per epoch.

One panel per run; CE in a red colour scheme (left axis), KL in a blue one (right axis), darker =
later epoch.  At most 12 epochs are drawn (evenly spaced, first and last included).  Rows with
direction 'eigenvector' only; 'gradient' scaling preferred when a run has both scalings.
"""

from __future__ import annotations

import numpy as np

from zsq_probe.plots import runs as R
from zsq_probe.plots.style import CE_CMAP, CE_COLOR, KL_CMAP, KL_COLOR, colormap, drawing, note

COLUMNS = ["epoch", "loss", "direction", "scaling", "k", "loss_value"]
MAX_EPOCHS = 12


def eigen_slices(df):
    """(mean loss per (loss, epoch, k) along the eigenvector, scaling used); (empty, None) without such rows."""
    d = df[df["direction"] == "eigenvector"]
    if d.empty:
        return d, None
    scaling = "gradient" if (d["scaling"] == "gradient").any() else str(d["scaling"].iloc[0])
    d = d[d["scaling"] == scaling]
    return d.groupby(["loss", "epoch", "k"], as_index=False)["loss_value"].mean(), scaling


def thin(epochs, n=MAX_EPOCHS):
    """At most n of the epochs, evenly spaced, first and last included."""
    epochs = sorted(epochs)
    if len(epochs) <= n:
        return epochs
    idx = np.unique(np.round(np.linspace(0, len(epochs) - 1, n)).astype(int))
    return [epochs[i] for i in idx]


def draw_loss_slice(ax, source) -> None:
    """Draw one run's CE (left axis) and KL (right axis) slices along the top eigenvector into `ax`.

    `source`: a run (RunDir or folder) or its probes/slice DataFrame.
    """
    run, df = R.table_of(source, "slice", COLUMNS)
    slices, scaling = eigen_slices(df)
    if scaling is None:
        note(ax, f"{run.name + ': ' if run is not None else ''}no eigenvector slices")
        return
    _slices(ax, run, slices, scaling)


def _slices(ax, run, slices, scaling):
    epochs = thin(slices["epoch"].unique())
    shade = (lambda i: 0.35 + 0.65 * i / (len(epochs) - 1)) if len(epochs) > 1 else (lambda i: 1.0)
    ax_kl = ax.twinx()
    ax_kl.grid(False)
    ax_kl.spines["right"].set_visible(True)
    handles = []
    for loss, axis, cmap_name in (("ce", ax, CE_CMAP), ("kl", ax_kl, KL_CMAP)):
        cmap = colormap(cmap_name)
        rows = slices[slices["loss"] == loss]
        for i, e in enumerate(epochs):
            g = rows[rows["epoch"] == e].sort_values("k")
            if g.empty:
                continue
            lab = f"{loss.upper()} epoch {e}" if i in (0, len(epochs) - 1) else None
            (h,) = axis.plot(g["k"], g["loss_value"], color=cmap(shade(i)), lw=1.5, label=lab)
            if lab:
                handles.append(h)
    ax.set_xlabel("k  (θ + k·e·δ)")
    ax.set_ylabel("CE", color=CE_COLOR)
    ax_kl.set_ylabel("KL (×T²)", color=KL_COLOR)
    ax.tick_params(axis="y", colors=CE_COLOR)
    ax_kl.tick_params(axis="y", colors=KL_COLOR)
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, ncol=4, frameon=False)
    head = f"{R.label(run)}\n" if run is not None else ""
    ax.set_title(f"{head}along the top eigenvector ({scaling} scaling)", fontsize=10)


def slice_figure(runs):
    """Fig. 2c: one slice panel per run (KD first)."""
    runs = R.kd_first(R.runs_with(R.open_runs(runs), "slice", "fig2c"))
    data = {r.name: eigen_slices(R.read(r, "slice", COLUMNS, "fig2c")) for r in runs}
    if all(s is None for _, s in data.values()):
        raise R.SkipFigure("no run has slices along the top eigenvector (probes/slice rows with direction "
                           "'eigenvector'; run `zsq-probe slice --run RUN`)")
    with drawing((max(5.5, 5.4 * len(runs)), 4.6)) as fig:
        axes = fig.subplots(1, len(runs), squeeze=False)
        for ax, r in zip(axes[0], runs):
            slices, scaling = data[r.name]
            if scaling is None:
                note(ax, f"{r.name}: no eigenvector slices")
                ax.set_title(R.label(r))
            else:
                _slices(ax, r, slices, scaling)
        fig.suptitle("Loss surface along the largest Hessian eigenvector (darker = later epoch)")
        fig.tight_layout()
    return fig
