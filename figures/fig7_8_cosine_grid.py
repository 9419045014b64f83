"""Figs. 7/8: CE-KL gradient cosine across models and data sets (skipped when the runs span one).

    python figures/fig7_8_cosine_grid.py --runs RUN [RUN ...] --out DIR [--format png|pdf]

The drawing lives in `zsq_probe.plots.cosine` (figure "fig7_8" of `zsq_probe.plots.FIGURES`); this script is its
command line, the same as `zsq-probe figures --only fig7_8`.
"""

import sys

import matplotlib

matplotlib.use("Agg")  # an entry point: files only, no window

from zsq_probe.cli.figures import figure_script

if __name__ == "__main__":
    sys.exit(figure_script("fig7_8", prog="fig7_8_cosine_grid.py"))
