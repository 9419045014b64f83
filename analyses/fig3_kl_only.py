"""Figure 3 (§3.2, §4.1): Inter-epoch KL-gradient cosine; integer codes crossing under KL-only.

A thin entry point over the recipe zsq_probe/recipes/fig3_kl_only.py (its docstring: the paper-scale
command, the cost, what the tiny scale keeps and loses).  From the repository root:

    python analyses/fig3_kl_only.py --scale tiny
    python -m analyses fig3 --scale tiny
"""

import sys

from zsq_probe.recipes.fig3_kl_only import RECIPE  # noqa: F401  (the recipe's data, importable from here too)

if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")  # the figures go to files
    from zsq_probe.cli.recipe import main

    sys.exit(main(recipe="fig3", prog="python analyses/fig3_kl_only.py"))
