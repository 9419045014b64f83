"""Figure 9 (appendix G): Hessian trace of CE and KL across CIFAR models, KD vs ZQ.

A thin entry point over the recipe zsq_probe/recipes/fig9_hessian_trace.py (its docstring: the paper-scale
command, the cost, what the tiny scale keeps and loses).  From the repository root:

    python analyses/fig9_hessian_trace.py --scale tiny
    python -m analyses fig9 --scale tiny
"""

import sys

from zsq_probe.recipes.fig9_hessian_trace import RECIPE  # noqa: F401  (the recipe's data, importable from here too)

if __name__ == "__main__":
    import matplotlib

    matplotlib.use("Agg")  # the figures go to files
    from zsq_probe.cli.recipe import main

    sys.exit(main(recipe="fig9", prog="python analyses/fig9_hessian_trace.py"))
