"""Fig. 3a: inter-epoch cosine of the epoch-mean KL gradient, KD vs ZQ.

    python figures/fig3a_inter_epoch.py --runs RUN [RUN ...] --out DIR [--format png|pdf]

The drawing lives in `zsq_probe.plots.inter_epoch` (figure "fig3a" of `zsq_probe.plots.FIGURES`); this script is its
command line, the same as `zsq-probe figures --only fig3a`.
"""

import sys

import matplotlib

matplotlib.use("Agg")  # an entry point: files only, no window

from zsq_probe.cli.figures import figure_script

if __name__ == "__main__":
    sys.exit(figure_script("fig3a", prog="fig3a_inter_epoch.py"))
