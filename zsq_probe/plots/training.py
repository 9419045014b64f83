"""Fig. 5: (a) KL over training, (b) CE-KL gradient cosine over training, (c) validation CE against the
hard labels, for the ZQ runs given (GDFQ vs KL-only vs AIT in the paper), each labelled by its method.

(a) is `loss_kl_scaled` (the KL term as trained, KLDiv mean x T^2) from probes/metrics; (b) the
epoch-mean cosine from probes/cosine (a panel says so when no run has it); (c) `val_ce` from metrics.
KD runs are left out (the figure compares ZQ methods).
"""

from __future__ import annotations

import numpy as np

from zsq_probe import compare
from zsq_probe.compare import HOW_TO_GET
from zsq_probe.plots import runs as R
from zsq_probe.plots.style import drawing, epoch_axis, note, zero_line

METRIC_COLUMNS = ["epoch", "loss_kl_scaled", "val_ce"]


def zq_runs(runs) -> list:
    """The ZQ runs among `runs` that have probes/metrics (SkipFigure when there are none)."""
    zq = [r for r in R.open_runs(runs) if not R.is_kd(r)]
    if not zq:
        raise R.SkipFigure("fig5 compares ZQ methods and only KD runs were given")
    return R.runs_with(zq, "metrics", "fig5")


def draw_training(axes, runs) -> None:
    """Draw Fig. 5's three panels (KL, cosine, validation CE) of the ZQ `runs` into `axes` (three Axes)."""
    ax_kl, ax_cos, ax_ce = axes
    zq = zq_runs(runs)
    colors = R.method_colors(zq)
    any_val, any_cos = False, False
    for r in zq:
        m = R.read(r, "metrics", METRIC_COLUMNS, "fig5").groupby("epoch", as_index=False)[METRIC_COLUMNS[1:]].mean()
        lab = f"{R.method(r)} ({r.name})"
        mk = "o" if len(m) <= 40 else None
        ax_kl.plot(m["epoch"], m["loss_kl_scaled"], color=colors[r.name], lw=1.8, marker=mk, ms=3, label=lab)
        if np.isfinite(m["val_ce"].to_numpy(dtype=float)).any():
            any_val = True
            ax_ce.plot(m["epoch"], m["val_ce"], color=colors[r.name], lw=1.8, marker=mk, ms=3, label=lab)
        if R.has_table(r, "cosine"):
            df = R.read(r, "cosine", compare.COSINE_COLUMNS, "fig5")
            c = compare.cosine_epochs(df, R.where("fig5", r, "cosine"))
            any_cos = True
            ax_cos.plot(c["epoch"], c["cosine"], color=colors[r.name], lw=1.8, marker=mk, ms=3, label=lab)
    ax_kl.set_title("(a) KL divergence to the teacher (×T²)")
    ax_kl.set_ylabel("KL (training, ×T²)")
    ax_kl.legend(loc="best")
    epoch_axis(ax_kl)
    ax_cos.set_title("(b) cos(∇CE, ∇KL)")
    if any_cos:
        ax_cos.set_ylabel("cosine (epoch mean)")
        zero_line(ax_cos)
        epoch_axis(ax_cos)
        ax_cos.legend(loc="best")
    else:
        note(ax_cos, "no ZQ run has probes/cosine\n(" + HOW_TO_GET["cosine"] + ")")
    if any_val:
        ax_ce.set_title("(c) validation CE (hard labels, real test split)")
        ax_ce.set_ylabel("CE (nats)")
        epoch_axis(ax_ce)
        ax_ce.legend(loc="best")
    else:
        ax_ce.set_title("(c) validation CE")
        note(ax_ce, "no validation CE (val_ce is NaN:\nthe runs had no real test split)")


def training_figure(runs):
    """Fig. 5: the three panels side by side, titled with the ZQ methods shown."""
    zq = zq_runs(runs)
    with drawing((15.0, 4.0)) as fig:
        draw_training(fig.subplots(1, 3), zq)
        fig.suptitle("Training of the ZQ methods: " + ", ".join(dict.fromkeys(R.method(r) for r in zq)))
        fig.tight_layout()
    return fig
