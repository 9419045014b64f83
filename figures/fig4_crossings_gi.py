"""Fig. 4: share of integer codes changed per layer and step under a 100x learning rate (method
'kl-only-high-lr') and under gradient inundation (GI runs, e.g. 'ait'), with GI's p as a dotted red line.

Same epochs rule as fig3bc (an early and the last epoch with data, or `--epochs A,B`); y = share of
the layer's codes changing per step, the axis p lives on.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from figures import _common as C  # noqa: E402
from figures.fig3bc_crossings import crossings_grid  # noqa: E402

FIGURE = "fig4"
TABLES_NEEDED = ["crossings"]
DESCRIPTION = ("share of codes changed per layer under high lr (kl-only-high-lr) and under GI (ait), "
               "p dotted red (paper Fig. 4)")
HIGH_LR = "kl-only-high-lr"


def uses_gi(run) -> bool:
    return bool(C.config(run).get("gi")) or C.method(run) == "ait"


def plot(runs, out_dir, fmt="png", epochs=None):
    runs = C.runs_with(runs, "crossings", FIGURE)
    chosen = [r for r in runs if C.method(r) == HIGH_LR] + [r for r in runs if uses_gi(r) and C.method(r) != HIGH_LR]
    if not chosen:
        raise C.SkipFigure(f"no run with crossings is a high-lr run (method {HIGH_LR}) or uses GI (ait); "
                           f"runs: {', '.join(f'{r.name} ({C.method(r)})' for r in runs)}")
    fig = crossings_grid(chosen, epochs, FIGURE, "share of layer's codes\nchanged per step",
                         "Code changes per layer: high learning rate vs gradient inundation (p dotted red)",
                         value="share_per_step", p_line=uses_gi)
    return [C.save(fig, out_dir, "fig4_crossings_gi", fmt)]


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
