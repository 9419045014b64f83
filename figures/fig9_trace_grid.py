"""Fig. 9 (appendix): Hessian trace of CE and KL across models and data sets, one panel per run.

Each panel as in Fig. 2b (CE red, KL blue; Hutchinson +-1 s.e., SLQ dashed), titled teacher/data and
the run's kind and method.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from figures import _common as C  # noqa: E402
from figures.fig2b_hessian_trace import draw_traces  # noqa: E402
from zsq_probe import compare  # noqa: E402

FIGURE = "fig9"
TABLES_NEEDED = ["hessian_trace"]
DESCRIPTION = "grid of Hessian-trace panels (CE vs KL) across models/data sets, one per run (paper Fig. 9)"


def plot(runs, out_dir, fmt="png"):
    import matplotlib.pyplot as plt

    runs = sorted(C.runs_with(runs, "hessian_trace", FIGURE), key=lambda r: (C.setting(r), not C.is_kd(r)))
    nrows, ncols = C.grid_shape(len(runs))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.6 * nrows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for i, (ax, r) in enumerate(zip(flat, runs)):
        draw_traces(ax, r, C.read(r, "hessian_trace", compare.TRACE_COLUMNS, FIGURE), legend=(i == 0))
        ax.set_title(f"{C.setting(r)}\n{C.kind(r)}: {C.method(r)} ({r.name})", fontsize=10)
    for ax in flat[len(runs):]:
        ax.set_visible(False)
    fig.suptitle("Hessian trace of KL and CE across models and data sets")
    fig.tight_layout()
    return [C.save(fig, out_dir, "fig9_trace_grid", fmt)]


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
