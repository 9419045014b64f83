"""Fig. 4: share of weights changed per layer and step under a high lr and under GI.

    python figures/fig4_crossings_gi.py --runs RUN [RUN ...] --out DIR [--format png|pdf] [--epochs A,B]

The drawing lives in `zsq_probe.plots.crossings` (figure "fig4" of `zsq_probe.plots.FIGURES`); this script is its
command line, the same as `zsq-probe figures --only fig4`.
"""

import sys

import matplotlib

matplotlib.use("Agg")  # an entry point: files only, no window

from zsq_probe.cli.figures import figure_script

if __name__ == "__main__":
    sys.exit(figure_script("fig4", prog="fig4_crossings_gi.py"))
