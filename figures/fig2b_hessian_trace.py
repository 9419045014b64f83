"""Fig. 2b: Hessian trace of CE and of KL·T² over epochs, one panel per run.

    python figures/fig2b_hessian_trace.py --runs RUN [RUN ...] --out DIR [--format png|pdf]

The drawing lives in `zsq_probe.plots.hessian` (figure "fig2b" of `zsq_probe.plots.FIGURES`); this script is its
command line, the same as `zsq-probe figures --only fig2b`.
"""

import sys

import matplotlib

matplotlib.use("Agg")  # an entry point: files only, no window

from zsq_probe.cli.figures import figure_script

if __name__ == "__main__":
    sys.exit(figure_script("fig2b", prog="fig2b_hessian_trace.py"))
