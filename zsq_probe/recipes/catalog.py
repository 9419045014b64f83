"""The recipes, one module per paper experiment, by short name; loading and listing them."""

from __future__ import annotations

import importlib
from types import ModuleType

from zsq_probe.errors import UserError
from zsq_probe.recipes.estimates import estimate_hours
from zsq_probe.recipes.specs import Recipe

# short name -> module of zsq_probe.recipes, in the paper's order
RECIPES = {
    "fig1": "fig1_cosine",
    "fig2": "fig2_loss_surface",
    "fig3": "fig3_kl_only",
    "fig4": "fig4_crossings_gi",
    "fig5": "fig5_training",
    "fig6": "fig6_samples",
    "fig7": "fig7_cosine_cifar10",
    "fig8": "fig8_cosine_cifar100",
    "fig9": "fig9_hessian_trace",
    "tab1": "tab1_backbones",
    "tab2": "tab2_ablation",
    "tab3": "tab3_optimizers",
    "tab4": "tab4_p_sensitivity",
    "tab5": "tab5_lr_sensitivity",
    "tab6": "tab6_low_bits",
    "tab7": "tab7_more_models",
    "tab8": "tab8_p_fine",
    "tab9": "tab9_label_smoothing",
}


def recipe_module(name: str) -> ModuleType:
    """The module defining a recipe; its docstring says how to run it and what it costs.

    Args:
        name: A short name such as 'tab1' or a module name such as 'tab1_backbones'.

    Returns:
        The module.

    Raises:
        UserError: No recipe has that name.
    """
    module = RECIPES.get(name) or (name if name in RECIPES.values() else None)
    if module is None:
        raise UserError(f"unknown analysis {name!r}; choose one of: {', '.join(sorted(RECIPES))} (or 'list')")
    return importlib.import_module(f"zsq_probe.recipes.{module}")


def load_recipe(name: str) -> Recipe:
    """The RECIPE dict of a recipe.

    Args:
        name: A short or a module name.

    Returns:
        The recipe.

    Raises:
        UserError: No recipe has that name.
    """
    recipe: Recipe = recipe_module(name).RECIPE
    return recipe


def recipe_listing() -> str:
    """One line per recipe: name, paper reference, kind, runs x seeds, rough GPU-hours, title."""
    lines = []
    for short in RECIPES:
        r = load_recipe(short)
        kind = "table" if r.get("table") else "figure"
        lines.append(
            f"{short:<6}{r['paper']:<34}{kind:<7}{len(r['runs']):>4} runs x {len(r['seeds'])} seed(s)  "
            f"~{estimate_hours(r):.0f} GPU-h  {r['title']}"
        )
    return "\n".join(lines)
