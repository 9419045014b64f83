"""Figure 2b-d (§3.2): Hessian trace, loss slices and eigenvalue density of CE and KL, KD vs ZQ.

A thin entry point over the recipe zsq_probe/recipes/fig2_loss_surface.py (its docstring: the paper-scale
command, the cost, what the tiny scale keeps and loses).  From the repository root:

    python analyses/fig2_loss_surface.py --scale tiny
    python -m analyses fig2 --scale tiny
"""

import sys

from zsq_probe.recipes.fig2_loss_surface import RECIPE  # noqa: F401  (the recipe's data, importable from here too)

if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")  # the figures go to files
    from zsq_probe.cli.recipe import main

    sys.exit(main(recipe="fig2", prog="python analyses/fig2_loss_surface.py"))
