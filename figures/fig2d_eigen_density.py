"""Fig. 2d: eigenvalue density of the CE and KL Hessians at one epoch (SLQ).

    python figures/fig2d_eigen_density.py --runs RUN [RUN ...] --out DIR [--format png|pdf] [--epoch E]

The drawing lives in `zsq_probe.plots.hessian` (figure "fig2d" of `zsq_probe.plots.FIGURES`); this script is its
command line, the same as `zsq-probe figures --only fig2d`.
"""

import sys

import matplotlib

matplotlib.use("Agg")  # an entry point: files only, no window

from zsq_probe.cli.figures import figure_script

if __name__ == "__main__":
    sys.exit(figure_script("fig2d", prog="fig2d_eigen_density.py"))
