"""Table 6 (appendix B): Lower bit widths: GDFQ ± AIT and ARC ± AIT.

A thin entry point over the recipe zsq_probe/recipes/tab6_low_bits.py (its docstring: the paper-scale
command, the cost, what the tiny scale keeps and loses).  From the repository root:

    python analyses/tab6_low_bits.py --scale tiny --seeds 1
    python -m analyses tab6 --scale tiny --seeds 1
"""

import sys

from zsq_probe.recipes.tab6_low_bits import RECIPE  # noqa: F401  (the recipe's data, importable from here too)

if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")  # the figures go to files
    from zsq_probe.cli.recipe import main

    sys.exit(main(recipe="tab6", prog="python analyses/tab6_low_bits.py"))
