"""Figure 8 (appendix F): CE-KL gradient cosine across CIFAR-100 models, KD vs ZQ.

A thin entry point over the recipe zsq_probe/recipes/fig8_cosine_cifar100.py (its docstring: the paper-scale
command, the cost, what the tiny scale keeps and loses).  From the repository root:

    python analyses/fig8_cosine_cifar100.py --scale tiny
    python -m analyses fig8 --scale tiny
"""

import sys

from zsq_probe.recipes.fig8_cosine_cifar100 import RECIPE  # noqa: F401  (the recipe's data, importable from here too)

if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")  # the figures go to files
    from zsq_probe.cli.recipe import main

    sys.exit(main(recipe="fig8", prog="python analyses/fig8_cosine_cifar100.py"))
