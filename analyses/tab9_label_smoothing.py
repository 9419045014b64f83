"""Table 9 (appendix D): GDFQ with label smoothing (4w4a).

A thin entry point over the recipe zsq_probe/recipes/tab9_label_smoothing.py (its docstring: the paper-scale
command, the cost, what the tiny scale keeps and loses).  From the repository root:

    python analyses/tab9_label_smoothing.py --scale tiny --seeds 1
    python -m analyses tab9 --scale tiny --seeds 1
"""

import sys

from zsq_probe.recipes.tab9_label_smoothing import RECIPE  # noqa: F401  (the recipe's data, importable from here too)

if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")  # the figures go to files
    from zsq_probe.cli.recipe import main

    sys.exit(main(recipe="tab9", prog="python analyses/tab9_label_smoothing.py"))
