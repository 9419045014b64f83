"""Table 8 (appendix E): Finer sensitivity of AIT to p, five seeds (4w4a).

A thin entry point over the recipe zsq_probe/recipes/tab8_p_fine.py (its docstring: the paper-scale
command, the cost, what the tiny scale keeps and loses).  From the repository root:

    python analyses/tab8_p_fine.py --scale tiny --seeds 2
    python -m analyses tab8 --scale tiny --seeds 2
"""

import sys

from zsq_probe.recipes.tab8_p_fine import RECIPE  # noqa: F401  (the recipe's data, importable from here too)

if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")  # the figures go to files
    from zsq_probe.cli.recipe import main

    sys.exit(main(recipe="tab8", prog="python analyses/tab8_p_fine.py"))
