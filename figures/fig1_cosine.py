"""Fig. 1: CE-KL gradient cosine over training, KD vs ZQ, with 2-D angle snapshots.

    python figures/fig1_cosine.py --runs RUN [RUN ...] --out DIR [--format png|pdf] [--epoch E]

The drawing lives in `zsq_probe.plots.cosine` (figure "fig1" of `zsq_probe.plots.FIGURES`); this script is its
command line, the same as `zsq-probe figures --only fig1`.
"""

import sys

import matplotlib

matplotlib.use("Agg")  # an entry point: files only, no window

from zsq_probe.cli.figures import figure_script

if __name__ == "__main__":
    sys.exit(figure_script("fig1", prog="fig1_cosine.py"))
