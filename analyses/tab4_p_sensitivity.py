"""Table 4 (§5.4): Sensitivity of AIT to p (4w4a).

A thin entry point over the recipe zsq_probe/recipes/tab4_p_sensitivity.py (its docstring: the paper-scale
command, the cost, what the tiny scale keeps and loses).  From the repository root:

    python analyses/tab4_p_sensitivity.py --scale tiny --seeds 1
    python -m analyses tab4 --scale tiny --seeds 1
"""

import sys

from zsq_probe.recipes.tab4_p_sensitivity import RECIPE  # noqa: F401  (the recipe's data, importable from here too)

if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")  # the figures go to files
    from zsq_probe.cli.recipe import main

    sys.exit(main(recipe="tab4", prog="python analyses/tab4_p_sensitivity.py"))
