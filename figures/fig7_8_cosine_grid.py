"""Figs. 7/8 (appendix): CE-KL gradient cosine across models and data sets.

One panel per setting (teacher/data); in it every given run of that setting, KD in green and ZQ in
orange: epoch-mean cosine over light per-step dots, as in Fig. 1.  With one run per setting this is
one panel per run.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from figures import _common as C  # noqa: E402
from figures.fig1_cosine import draw_curves  # noqa: E402
from zsq_probe import compare  # noqa: E402

FIGURE = "fig7_8"
TABLES_NEEDED = ["cosine"]
DESCRIPTION = "grid of CE-KL cosine panels across models/data sets, KD vs ZQ per setting (paper Figs. 7, 8)"


def plot(runs, out_dir, fmt="png"):
    import matplotlib.pyplot as plt

    runs = C.runs_with(runs, "cosine", FIGURE)
    groups: dict[str, list] = {}
    for r in sorted(runs, key=lambda r: not C.is_kd(r)):
        groups.setdefault(C.setting(r), []).append(r)
    nrows, ncols = C.grid_shape(len(groups))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.6 * nrows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax, (name, members) in zip(flat, groups.items()):
        colors = C.kind_colors(members)
        for r in members:
            df = C.read(r, "cosine", compare.COSINE_COLUMNS, FIGURE)
            draw_curves(ax, r, df, colors[r.name])
        C.zero_line(ax)
        C.epoch_axis(ax)
        ax.set_ylabel("cos(∇CE, ∇KL)")
        ax.set_title(name)
        ax.legend(loc="best", fontsize=7.5)
    for ax in flat[len(groups):]:
        ax.set_visible(False)
    fig.suptitle("Gradient directionality of KL and CE across models (KD green, ZQ orange)")
    fig.tight_layout()
    return [C.save(fig, out_dir, "fig7_8_cosine_grid", fmt)]


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
