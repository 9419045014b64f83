"""Table 1 (§5.2): AIT on data-free quantisation backbones (ZeroQ, GDFQ, Qimera, ARC).

A thin entry point over the recipe zsq_probe/recipes/tab1_backbones.py (its docstring: the paper-scale
command, the cost, what the tiny scale keeps and loses).  From the repository root:

    python analyses/tab1_backbones.py --scale tiny --seeds 1
    python -m analyses tab1 --scale tiny --seeds 1
"""

import sys

from zsq_probe.recipes.tab1_backbones import RECIPE  # noqa: F401  (the recipe's data, importable from here too)

if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")  # the figures go to files
    from zsq_probe.cli.recipe import main

    sys.exit(main(recipe="tab1", prog="python analyses/tab1_backbones.py"))
