"""Fig. 9: Hessian trace of CE and KL·T² across models and data sets (skipped when the runs span one).

    python figures/fig9_trace_grid.py --runs RUN [RUN ...] --out DIR [--format png|pdf]

The drawing lives in `zsq_probe.plots.hessian` (figure "fig9" of `zsq_probe.plots.FIGURES`); this script is its
command line, the same as `zsq-probe figures --only fig9`.
"""

import sys

import matplotlib

matplotlib.use("Agg")  # an entry point: files only, no window

from zsq_probe.cli.figures import figure_script

if __name__ == "__main__":
    sys.exit(figure_script("fig9", prog="fig9_trace_grid.py"))
