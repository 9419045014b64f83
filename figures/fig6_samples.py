"""Fig. 6: real vs synthetic samples per class, one grid per distinct generator checkpoint.

    python figures/fig6_samples.py --runs RUN [RUN ...] --out DIR [--format png|pdf] [--epoch E]

The drawing lives in `zsq_probe.plots.samples` (figure "fig6" of `zsq_probe.plots.FIGURES`); this script is its
command line, the same as `zsq-probe figures --only fig6`.
"""

import sys

import matplotlib

matplotlib.use("Agg")  # an entry point: files only, no window

from zsq_probe.cli.figures import figure_script

if __name__ == "__main__":
    sys.exit(figure_script("fig6", prog="fig6_samples.py"))
