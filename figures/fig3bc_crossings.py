"""Figs. 3b/3c: weights changed per layer and step (net or level changes) at an early and a late epoch.

    python figures/fig3bc_crossings.py --runs RUN [RUN ...] --out DIR [--format png|pdf] [--epochs A,B]

The drawing lives in `zsq_probe.plots.crossings` (figure "fig3bc" of `zsq_probe.plots.FIGURES`); this script is its
command line, the same as `zsq-probe figures --only fig3bc`.
"""

import sys

import matplotlib

matplotlib.use("Agg")  # an entry point: files only, no window

from zsq_probe.cli.figures import figure_script

if __name__ == "__main__":
    sys.exit(figure_script("fig3bc", prog="fig3bc_crossings.py"))
