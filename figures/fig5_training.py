"""Fig. 5: (a) KL over training, (b) CE-KL gradient cosine over training, (c) validation CE against the
hard labels — for the ZQ runs given (GDFQ vs KL-only vs AIT in the paper), each labelled by its method.

(a) is `loss_kl_scaled` (the KL term as trained, KLDiv mean x T^2) from probes/metrics; (b) the
epoch-mean cosine from probes/cosine (a panel says so when no run has it); (c) `val_ce` from metrics.
KD runs are left out (the figure compares ZQ methods).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from figures import _common as C  # noqa: E402
from zsq_probe import compare  # noqa: E402

FIGURE = "fig5"
TABLES_NEEDED = ["metrics", "cosine"]
DESCRIPTION = "KL, CE-KL cosine and validation CE over training for the ZQ methods (paper Fig. 5a-c)"
METRIC_COLUMNS = ["epoch", "loss_kl_scaled", "val_ce"]


def plot(runs, out_dir, fmt="png"):
    import matplotlib.pyplot as plt

    zq = [r for r in runs if not C.is_kd(r)]
    if not zq:
        raise C.SkipFigure("fig5 compares ZQ methods and only KD runs were given")
    zq = C.runs_with(zq, "metrics", FIGURE)
    colors = C.method_colors(zq)
    fig, axes = plt.subplots(1, 3, figsize=(15.0, 4.0))
    ax_kl, ax_cos, ax_ce = axes
    any_val, any_cos = False, False
    for r in zq:
        m = C.read(r, "metrics", METRIC_COLUMNS, FIGURE).groupby("epoch", as_index=False)[METRIC_COLUMNS[1:]].mean()
        lab = f"{C.method(r)} ({r.name})"
        mk = "o" if len(m) <= 40 else None
        ax_kl.plot(m["epoch"], m["loss_kl_scaled"], color=colors[r.name], lw=1.8, marker=mk, ms=3, label=lab)
        if np.isfinite(m["val_ce"].to_numpy(dtype=float)).any():
            any_val = True
            ax_ce.plot(m["epoch"], m["val_ce"], color=colors[r.name], lw=1.8, marker=mk, ms=3, label=lab)
        if C.has_table(r, "cosine"):
            df = C.read(r, "cosine", compare.COSINE_COLUMNS, FIGURE)
            c = compare.cosine_epochs(df, f"{FIGURE}: {r.name} probes/cosine")
            any_cos = True
            ax_cos.plot(c["epoch"], c["cosine"], color=colors[r.name], lw=1.8, marker=mk, ms=3, label=lab)
    ax_kl.set_title("(a) KL divergence to the teacher (×T²)")
    ax_kl.set_ylabel("KL (training, ×T²)")
    ax_kl.legend(loc="best")
    C.epoch_axis(ax_kl)
    if any_cos:
        ax_cos.set_title("(b) cos(∇CE, ∇KL)")
        ax_cos.set_ylabel("cosine (epoch mean)")
        C.zero_line(ax_cos)
        C.epoch_axis(ax_cos)
        ax_cos.legend(loc="best")
    else:
        ax_cos.set_title("(b) cos(∇CE, ∇KL)")
        C.note(ax_cos, "no ZQ run has probes/cosine\n(" + C.HOW_TO_GET["cosine"] + ")")
    if any_val:
        ax_ce.set_title("(c) validation CE (hard labels, real test split)")
        ax_ce.set_ylabel("CE (nats)")
        C.epoch_axis(ax_ce)
        ax_ce.legend(loc="best")
    else:
        ax_ce.set_title("(c) validation CE")
        C.note(ax_ce, "no validation CE (val_ce is NaN:\nthe runs had no real test split)")
    fig.suptitle("Training of the ZQ methods: " + ", ".join(dict.fromkeys(C.method(r) for r in zq)))
    fig.tight_layout()
    return [C.save(fig, out_dir, "fig5_training", fmt)]


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
