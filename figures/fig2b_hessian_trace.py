"""Fig. 2b: Hessian trace of CE and of KL over epochs, one panel per run (KD and ZQ).

Hutchinson estimates as solid lines with a +-1 standard-error band; SLQ estimates (when the run has
them) as dashed lines.  CE in red, KL in blue.  Model-scope rows only.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from figures import _common as C  # noqa: E402
from zsq_probe import compare  # noqa: E402

FIGURE = "fig2b"
TABLES_NEEDED = ["hessian_trace"]
DESCRIPTION = "Hessian trace of CE and KL over epochs, KD and ZQ panels (paper Fig. 2b)"

LOSS_COLOR = {"ce": C.CE_COLOR, "kl": C.KL_COLOR}


def draw_traces(ax, run, df, legend=True):
    curves = compare.trace_curves(df, f"{FIGURE}: {run.name} probes/hessian_trace")
    drawn = 0
    for loss in ("ce", "kl"):
        color = LOSS_COLOR[loss]
        h = curves[(curves["estimator"] == "hutchinson") & (curves["loss"] == loss)]
        if len(h):
            ax.plot(h["epoch"], h["trace"], color=color, lw=1.8, marker="o" if len(h) <= 40 else None, ms=3,
                    label=f"{loss.upper()} (Hutchinson ±1 s.e.)")
            ax.fill_between(h["epoch"], h["trace"] - h["stderr"], h["trace"] + h["stderr"], color=color,
                            alpha=0.2, lw=0)
            drawn += 1
        s = curves[(curves["estimator"] == "slq") & (curves["loss"] == loss)]
        if len(s):
            ax.plot(s["epoch"], s["trace"], color=color, lw=1.4, ls="--", label=f"{loss.upper()} (SLQ)")
            drawn += 1
    if not drawn:
        C.note(ax, "no CE/KL trace rows\n(estimator hutchinson or slq)")
        return
    C.epoch_axis(ax)
    ax.set_ylabel("Tr(H)")
    if legend:
        ax.legend(loc="best")


def plot(runs, out_dir, fmt="png"):
    import matplotlib.pyplot as plt

    runs = sorted(C.runs_with(runs, "hessian_trace", FIGURE), key=lambda r: not C.is_kd(r))
    fig, axes = plt.subplots(1, len(runs), figsize=(max(5.0, 4.8 * len(runs)), 3.8), squeeze=False)
    for ax, r in zip(axes[0], runs):
        draw_traces(ax, r, C.read(r, "hessian_trace", compare.TRACE_COLUMNS, FIGURE))
        ax.set_title(C.label(r))
    fig.suptitle("Hessian trace of CE and KL over training")
    fig.tight_layout()
    return [C.save(fig, out_dir, "fig2b_hessian_trace", fmt)]


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
