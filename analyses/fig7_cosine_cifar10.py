"""Figure 7 (appendix F): CE-KL gradient cosine across CIFAR-10 models, KD vs ZQ.

A thin entry point over the recipe zsq_probe/recipes/fig7_cosine_cifar10.py (its docstring: the paper-scale
command, the cost, what the tiny scale keeps and loses).  From the repository root:

    python analyses/fig7_cosine_cifar10.py --scale tiny
    python -m analyses fig7 --scale tiny
"""

import sys

from zsq_probe.recipes.fig7_cosine_cifar10 import RECIPE  # noqa: F401  (the recipe's data, importable from here too)

if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")  # the figures go to files
    from zsq_probe.cli.recipe import main

    sys.exit(main(recipe="fig7", prog="python analyses/fig7_cosine_cifar10.py"))
