"""Figure 6 (§6): Real vs synthetic samples (CIFAR-10, ImageNet): GDFQ and AIT.

A thin entry point over the recipe zsq_probe/recipes/fig6_samples.py (its docstring: the paper-scale
command, the cost, what the tiny scale keeps and loses).  From the repository root:

    python analyses/fig6_samples.py --scale tiny
    python -m analyses fig6 --scale tiny
"""

import sys

from zsq_probe.recipes.fig6_samples import RECIPE  # noqa: F401  (the recipe's data, importable from here too)

if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")  # the figures go to files
    from zsq_probe.cli.recipe import main

    sys.exit(main(recipe="fig6", prog="python analyses/fig6_samples.py"))
