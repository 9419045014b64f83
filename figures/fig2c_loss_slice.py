"""Fig. 2c: the loss along the top Hessian eigenvector per epoch, CE in reds and KL in blues.

    python figures/fig2c_loss_slice.py --runs RUN [RUN ...] --out DIR [--format png|pdf]

The drawing lives in `zsq_probe.plots.loss_slice` (figure "fig2c" of `zsq_probe.plots.FIGURES`); this script is its
command line, the same as `zsq-probe figures --only fig2c`.
"""

import sys

import matplotlib

matplotlib.use("Agg")  # an entry point: files only, no window

from zsq_probe.cli.figures import figure_script

if __name__ == "__main__":
    sys.exit(figure_script("fig2c", prog="fig2c_loss_slice.py"))
