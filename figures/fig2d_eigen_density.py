"""Fig. 2d: eigenvalue density of the CE and KL Hessians (SLQ nodes and weights, Gaussian-smoothed).

One panel per run at one epoch (default: the last epoch with density rows; `--epoch E`).  The density
is sum_i w_i N(x; node_i, sigma^2) with sigma = 1% of the panel's eigenvalue range, normalised to
integrate to 1 per loss, drawn on a log y axis down to 1e-7 of the panel's highest density (so the
small-weight tail of large eigenvalues shows).  CE red, KL blue.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from figures import _common as C  # noqa: E402

FIGURE = "fig2d"
TABLES_NEEDED = ["hessian_density"]
DESCRIPTION = "eigenvalue density of the CE vs KL Hessian at one epoch (SLQ, paper Fig. 2d)"
COLUMNS = ["epoch", "loss", "node", "weight"]
SIGMA_FRACTION = 0.01
FLOOR = 1e-7  # relative to the panel's highest density


def smoothed_density(nodes, weights, grid, sigma):
    nodes = np.asarray(nodes, dtype=float)[:, None]
    weights = np.asarray(weights, dtype=float)[:, None]
    dens = (weights * np.exp(-0.5 * ((grid[None, :] - nodes) / sigma) ** 2)).sum(0) / (sigma * np.sqrt(2 * np.pi))
    area = np.trapezoid(dens, grid) if hasattr(np, "trapezoid") else np.trapz(dens, grid)
    return dens / area if area > 0 else dens


def draw_density(ax, run, df, epoch):
    d = df[df["epoch"] == epoch]
    d = d[np.isfinite(d["node"].astype(float)) & np.isfinite(d["weight"].astype(float))]
    if d.empty:
        C.note(ax, f"no finite SLQ nodes at epoch {epoch}")
        return
    lo, hi = float(d["node"].min()), float(d["node"].max())
    span = max(hi - lo, 1e-3 * max(abs(lo), abs(hi), 1.0))
    sigma = SIGMA_FRACTION * span
    grid = np.linspace(lo - 0.05 * span, hi + 0.05 * span, 2000)
    curves = {}
    for loss in ("ce", "kl"):
        g = d[d["loss"] == loss]
        if len(g):
            curves[loss] = smoothed_density(g["node"], g["weight"], grid, sigma)
    if not curves:
        C.note(ax, f"no CE or KL density rows at epoch {epoch}")
        return
    floor = FLOOR * max(float(c.max()) for c in curves.values())
    for loss, dens in curves.items():
        ax.semilogy(grid, np.maximum(dens, floor), color={"ce": C.CE_COLOR, "kl": C.KL_COLOR}[loss], lw=1.5,
                    label=loss.upper())
    ax.set_ylim(bottom=floor)
    ax.set_xlabel("Eigenvalue")
    ax.set_ylabel("Density (log)")
    ax.legend(loc="upper right")
    ax.set_title(f"{C.label(run)}\nepoch {epoch}", fontsize=10)


def plot(runs, out_dir, fmt="png", epoch=None):
    import matplotlib.pyplot as plt

    runs = sorted(C.runs_with(runs, "hessian_density", FIGURE), key=lambda r: not C.is_kd(r))
    fig, axes = plt.subplots(1, len(runs), figsize=(max(5.0, 4.8 * len(runs)), 3.8), squeeze=False)
    for ax, r in zip(axes[0], runs):
        df = C.read(r, "hessian_density", COLUMNS, FIGURE)
        e = C.pick_epoch(df["epoch"].unique(), epoch, f"{FIGURE} {r.name}")
        draw_density(ax, r, df, e)
    fig.suptitle("Hessian eigenvalue density: CE vs KL")
    fig.tight_layout()
    return [C.save(fig, out_dir, "fig2d_eigen_density", fmt)]


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
