"""Table 2 (§5.3): Ablation study over GDFQ (4w4a).

A thin entry point over the recipe zsq_probe/recipes/tab2_ablation.py (its docstring: the paper-scale
command, the cost, what the tiny scale keeps and loses).  From the repository root:

    python analyses/tab2_ablation.py --scale tiny --seeds 1
    python -m analyses tab2 --scale tiny --seeds 1
"""

import sys

from zsq_probe.recipes.tab2_ablation import RECIPE  # noqa: F401  (the recipe's data, importable from here too)

if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")  # the figures go to files
    from zsq_probe.cli.recipe import main

    sys.exit(main(recipe="tab2", prog="python analyses/tab2_ablation.py"))
