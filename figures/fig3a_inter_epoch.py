"""Fig. 3a: inter-epoch cosine — cos(epoch-mean grad KL, previous epoch's), KD vs ZQ.

A value near 1 means the KL gradient keeps pointing the same way from epoch to epoch (the paper reads
this as "not yet at a minimum of the KL surface").
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from figures import _common as C  # noqa: E402
from zsq_probe import compare  # noqa: E402

FIGURE = "fig3a"
TABLES_NEEDED = ["inter_epoch"]
DESCRIPTION = "inter-epoch cosine of the epoch-mean KL gradient, KD vs ZQ (paper Fig. 3a)"


def plot(runs, out_dir, fmt="png"):
    import matplotlib.pyplot as plt

    runs = sorted(C.runs_with(runs, "inter_epoch", FIGURE), key=lambda r: not C.is_kd(r))
    colors = C.kind_colors(runs)
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    for r in runs:
        df = C.read(r, "inter_epoch", ["epoch", "cosine"], FIGURE)
        c = compare.inter_epoch_curve(df, f"{FIGURE}: {r.name} probes/inter_epoch")
        ax.plot(c["epoch"], c["cosine"], color=colors[r.name], lw=1.8, marker="o" if len(c) <= 40 else None,
                ms=3.5, label=C.label(r))
    C.zero_line(ax)
    C.epoch_axis(ax)
    ax.set_ylabel("cos(ḡ_KL(t), ḡ_KL(t−1))")
    ax.set_title("Inter-epoch cosine similarity of the KL gradient — "
                 + " vs ".join(sorted({C.kind(r) for r in runs})))
    ax.legend(loc="best")
    fig.tight_layout()
    return [C.save(fig, out_dir, "fig3a_inter_epoch", fmt)]


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
