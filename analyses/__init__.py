"""One recipe per paper experiment, and a runner.

Each module ``analyses/<name>.py`` defines ``RECIPE``: the exact runs (preset, teacher, data set, bits,
probes, config overrides), seeds, the figures it draws and the table it prints with the paper's values.
``python -m analyses NAME`` trains the runs (finished runs are skipped, partial ones resumed), draws the
figures and prints the table; ``python -m analyses list`` lists the recipes; ``--scale tiny`` maps every
run onto the embedded digits teacher so a recipe runs on a laptop CPU; ``--dry-run`` prints the
``zsq-probe`` commands instead.  Shared logic lives in ``analyses._runner``.
"""

# short name -> module, in the paper's order
RECIPES = {
    "fig1": "fig1_cosine",
    "fig2": "fig2_loss_surface",
    "fig3": "fig3_kl_only",
    "fig4": "fig4_crossings_gi",
    "fig5": "fig5_training",
    "fig7": "fig7_cosine_cifar10",
    "fig8": "fig8_cosine_cifar100",
    "fig9": "fig9_hessian_trace",
    "tab1": "tab1_backbones",
    "tab2": "tab2_ablation",
    "tab3": "tab3_optimizers",
    "tab4": "tab4_p_sensitivity",
    "tab5": "tab5_lr_sensitivity",
    "tab6": "tab6_low_bits",
    "tab8": "tab8_p_fine",
    "tab9": "tab9_label_smoothing",
}


def load(name: str) -> dict:
    """The RECIPE of a short name ('tab1') or module name ('tab1_backbones')."""
    from analyses._runner import load_recipe

    return load_recipe(name)


__all__ = ["RECIPES", "load"]
