"""Table 5 (§5.4): Learning-rate sensitivity of GDFQ and AIT (4w4a).

A thin entry point over the recipe zsq_probe/recipes/tab5_lr_sensitivity.py (its docstring: the paper-scale
command, the cost, what the tiny scale keeps and loses).  From the repository root:

    python analyses/tab5_lr_sensitivity.py --scale tiny --seeds 1
    python -m analyses tab5 --scale tiny --seeds 1
"""

import sys

from zsq_probe.recipes.tab5_lr_sensitivity import RECIPE  # noqa: F401  (the recipe's data, importable from here too)

if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")  # the figures go to files
    from zsq_probe.cli.recipe import main

    sys.exit(main(recipe="tab5", prog="python analyses/tab5_lr_sensitivity.py"))
