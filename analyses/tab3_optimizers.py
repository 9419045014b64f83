"""Table 3 (§5.3): Gradient inundation on various optimisers (4w4a).

A thin entry point over the recipe zsq_probe/recipes/tab3_optimizers.py (its docstring: the paper-scale
command, the cost, what the tiny scale keeps and loses).  From the repository root:

    python analyses/tab3_optimizers.py --scale tiny --seeds 1
    python -m analyses tab3 --scale tiny --seeds 1
"""

import sys

from zsq_probe.recipes.tab3_optimizers import RECIPE  # noqa: F401  (the recipe's data, importable from here too)

if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")  # the figures go to files
    from zsq_probe.cli.recipe import main

    sys.exit(main(recipe="tab3", prog="python analyses/tab3_optimizers.py"))
