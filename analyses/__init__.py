"""The paper's experiments, one runnable script per figure or table.

Thin entry points over ``zsq_probe.recipes``, where the recipes (``RECIPE`` dicts with their docstrings:
paper-scale command, cost, tiny scale) and the machinery that runs them live.  From the repository root:

    python -m analyses list                                   # the recipes
    python -m analyses NAME [--scale paper|tiny] [--out DIR] [--device D] [--data-root DIR] [--seeds N] [--dry-run]
    python analyses/tab2_ablation.py --scale tiny --seeds 1   # the same, one recipe per script
"""

from zsq_probe.recipes import RECIPES, load_recipe

__all__ = ["RECIPES", "load_recipe"]
