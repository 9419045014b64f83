"""Figure 5 (§5.5): KL, CE-KL cosine and validation CE over training: GDFQ vs KL-only vs AIT.

A thin entry point over the recipe zsq_probe/recipes/fig5_training.py (its docstring: the paper-scale
command, the cost, what the tiny scale keeps and loses).  From the repository root:

    python analyses/fig5_training.py --scale tiny
    python -m analyses fig5 --scale tiny
"""

import sys

from zsq_probe.recipes.fig5_training import RECIPE  # noqa: F401  (the recipe's data, importable from here too)

if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")  # the figures go to files
    from zsq_probe.cli.recipe import main

    sys.exit(main(recipe="fig5", prog="python analyses/fig5_training.py"))
