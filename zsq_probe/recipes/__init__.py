"""The paper's experiments as recipes, and the machinery that runs them.

A recipe (one module per figure or table, e.g. ``zsq_probe.recipes.tab2_ablation``) is data: a ``RECIPE``
dict naming the exact runs (preset, teacher, bits, probes, config overrides), seeds, the figures it
draws and the table it prints beside the paper's values.  Running one trains every run and seed through
``zsq_probe``'s own ``train`` (finished runs skipped, partial ones resumed), draws the figures and builds
the table; ``scale="tiny"`` maps every run onto the embedded digits teacher so it runs on a laptop CPU.

    from zsq_probe.recipes import run_recipe
    result = run_recipe("tab2", "tiny", seeds=1)
    print(result.table)

Modules: ``specs`` (run specs, tiny stand-ins), ``models`` (setting names), ``jobs`` (planning),
``train_runs`` (training), ``figures``, ``tables``, ``estimates`` (GPU-hours), ``catalog`` (the recipes by
name), ``runner`` (the steps together), ``command`` (the command-line handler ``analyses/`` scripts call).

Importing this package loads no torch (the command line imports it to build its parser): the data sets load
where a recipe module is loaded, the trainer (through the executors) where a run trains and the plots where
a figure is drawn.
"""

from zsq_probe.recipes.catalog import RECIPES, load_recipe, recipe_listing, recipe_module
from zsq_probe.recipes.jobs import Job, plan
from zsq_probe.recipes.runner import RecipePlan, RecipeResult, dry_run_text, plan_recipe, run_plan, run_recipe
from zsq_probe.recipes.specs import PAPER_SCALE, TINY_SCALE, cell, run, tiny

__all__ = [
    "RECIPES",
    "load_recipe",
    "recipe_listing",
    "recipe_module",
    "Job",
    "plan",
    "RecipePlan",
    "RecipeResult",
    "dry_run_text",
    "plan_recipe",
    "run_plan",
    "run_recipe",
    "PAPER_SCALE",
    "TINY_SCALE",
    "cell",
    "run",
    "tiny",
]
