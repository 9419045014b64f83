"""Table 7 (appendix C): More network models: GDFQ ± AIT on InceptionV3, SqueezeNext, ShuffleNet.

A thin entry point over the recipe zsq_probe/recipes/tab7_more_models.py (its docstring: the paper-scale
command, the cost, what the tiny scale keeps and loses).  From the repository root:

    python analyses/tab7_more_models.py --scale tiny --seeds 1
    python -m analyses tab7 --scale tiny --seeds 1
"""

import sys

from zsq_probe.recipes.tab7_more_models import RECIPE  # noqa: F401  (the recipe's data, importable from here too)

if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")  # the figures go to files
    from zsq_probe.cli.recipe import main

    sys.exit(main(recipe="tab7", prog="python analyses/tab7_more_models.py"))
