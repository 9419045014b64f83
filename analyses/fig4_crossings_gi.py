"""Figure 4 (§5.3): Integer-code updates per layer: high learning rate vs gradient inundation.

A thin entry point over the recipe zsq_probe/recipes/fig4_crossings_gi.py (its docstring: the paper-scale
command, the cost, what the tiny scale keeps and loses).  From the repository root:

    python analyses/fig4_crossings_gi.py --scale tiny
    python -m analyses fig4 --scale tiny
"""

import sys

from zsq_probe.recipes.fig4_crossings_gi import RECIPE  # noqa: F401  (the recipe's data, importable from here too)

if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")  # the figures go to files
    from zsq_probe.cli.recipe import main

    sys.exit(main(recipe="fig4", prog="python analyses/fig4_crossings_gi.py"))
