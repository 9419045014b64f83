"""Fig. 5: KL, CE-KL cosine and validation CE over training for the ZQ methods.

    python figures/fig5_training.py --runs RUN [RUN ...] --out DIR [--format png|pdf]

The drawing lives in `zsq_probe.plots.training` (figure "fig5" of `zsq_probe.plots.FIGURES`); this script is its
command line, the same as `zsq-probe figures --only fig5`.
"""

import sys

import matplotlib

matplotlib.use("Agg")  # an entry point: files only, no window

from zsq_probe.cli.figures import figure_script

if __name__ == "__main__":
    sys.exit(figure_script("fig5", prog="fig5_training.py"))
