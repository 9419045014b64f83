"""Figure 1 (§3.1): CE-KL gradient cosine, KD vs ZQ.

A thin entry point over the recipe zsq_probe/recipes/fig1_cosine.py (its docstring: the paper-scale
command, the cost, what the tiny scale keeps and loses).  From the repository root:

    python analyses/fig1_cosine.py --scale tiny
    python -m analyses fig1 --scale tiny
"""

import sys

from zsq_probe.recipes.fig1_cosine import RECIPE  # noqa: F401  (the recipe's data, importable from here too)

if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")  # the figures go to files
    from zsq_probe.cli.recipe import main

    sys.exit(main(recipe="fig1", prog="python analyses/fig1_cosine.py"))
