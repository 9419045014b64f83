"""Fig. 2c: the loss along the top Hessian eigenvector, L(theta + k * e * delta), k in [-0.5, 0.5], per epoch.

One panel per run; CE in a red colour scheme (left axis), KL in a blue one (right axis), darker =
later epoch.  At most 12 epochs are drawn (evenly spaced, first and last included).  Rows with
direction 'eigenvector' only; 'gradient' scaling preferred when a run has both scalings.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from figures import _common as C  # noqa: E402

FIGURE = "fig2c"
TABLES_NEEDED = ["slice"]
DESCRIPTION = "loss slices along the top Hessian eigenvector per epoch, CE in reds and KL in blues (paper Fig. 2c)"
COLUMNS = ["epoch", "loss", "direction", "scaling", "k", "loss_value"]
MAX_EPOCHS = 12


def eigen_slices(df):
    d = df[df["direction"] == "eigenvector"]
    if d.empty:
        return d, None
    scaling = "gradient" if (d["scaling"] == "gradient").any() else str(d["scaling"].iloc[0])
    d = d[d["scaling"] == scaling]
    return d.groupby(["loss", "epoch", "k"], as_index=False)["loss_value"].mean(), scaling


def thin(epochs, n=MAX_EPOCHS):
    epochs = sorted(epochs)
    if len(epochs) <= n:
        return epochs
    idx = np.unique(np.round(np.linspace(0, len(epochs) - 1, n)).astype(int))
    return [epochs[i] for i in idx]


def draw_slices(ax, run, slices, scaling):
    import matplotlib.pyplot as plt

    epochs = thin(slices["epoch"].unique())
    shade = (lambda i: 0.35 + 0.65 * i / (len(epochs) - 1)) if len(epochs) > 1 else (lambda i: 1.0)
    ax_kl = ax.twinx()
    ax_kl.grid(False)
    ax_kl.spines["right"].set_visible(True)
    handles = []
    for loss, axis, cmap_name in (("ce", ax, C.CE_CMAP), ("kl", ax_kl, C.KL_CMAP)):
        cmap = plt.get_cmap(cmap_name)
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
    ax.set_ylabel("CE", color=C.CE_COLOR)
    ax_kl.set_ylabel("KL (×T²)", color=C.KL_COLOR)
    ax.tick_params(axis="y", colors=C.CE_COLOR)
    ax_kl.tick_params(axis="y", colors=C.KL_COLOR)
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.2), fontsize=8, ncol=4, frameon=False)
    ax.set_title(f"{C.label(run)}\nalong the top eigenvector ({scaling} scaling)", fontsize=10)


def plot(runs, out_dir, fmt="png"):
    import matplotlib.pyplot as plt

    runs = sorted(C.runs_with(runs, "slice", FIGURE), key=lambda r: not C.is_kd(r))
    data = {}
    for r in runs:
        data[r.name] = eigen_slices(C.read(r, "slice", COLUMNS, FIGURE))
    if all(s is None for _, s in data.values()):
        raise C.SkipFigure("no run has slices along the top eigenvector (probes/slice rows with direction "
                           "'eigenvector'; run `zsq-probe slice --run RUN`)")
    fig, axes = plt.subplots(1, len(runs), figsize=(max(5.5, 5.4 * len(runs)), 4.6), squeeze=False)
    for ax, r in zip(axes[0], runs):
        slices, scaling = data[r.name]
        if scaling is None:
            C.note(ax, f"{r.name}: no eigenvector slices")
            ax.set_title(C.label(r))
        else:
            draw_slices(ax, r, slices, scaling)
    fig.suptitle("Loss surface along the largest Hessian eigenvector (darker = later epoch)")
    fig.tight_layout()
    return [C.save(fig, out_dir, "fig2c_loss_slice", fmt)]


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
