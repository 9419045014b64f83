"""Fig. 4 (paper §5.3): integer codes changed per layer and step on ImageNet ResNet-18 at 4w4a under a 100x
learning rate (KL-only, high lr; Figs. 4a/b) and under gradient inundation (AIT; Figs. 4c/d, p as a dotted
red line), to compare with Fig. 3c; epochs 60 and 350.

Paper scale:

    python -m analyses fig4 --data-root ~/data --device cuda --out runs/fig4

2 runs, one seed, the crossings probe.  Rough single-GPU estimate (A100/H100 class): ~10 GPU-hours.
Writes OUT/figures/fig4/fig4_*.png.  Run fig3 with the same --out to have the KL-only run of Fig. 3c
beside them.

Tiny scale (2 CPU cores; ~3 min on a busy 2-core box, summed from measured per-run times):

    python -m analyses fig4 --scale tiny

Keeps both runs (3w3a digits stand-ins; digits' p = 1e-3 is the dotted line; high lr = 10 x digits'
1e-3 = 1e-2, since 100x diverges at that scale) and the probe; loses ResNet-18/ImageNet and the paper's
epochs 60/350 (an early and the last epoch are drawn).
"""

from zsq_probe.recipes.specs import run, tiny

HIGH_LR = run("kl-only-high-lr", "resnet18", 4, 4, probes=["crossings"])
AIT = run("ait", "resnet18", 4, 4, probes=["crossings"])

RECIPE = {
    "name": "fig4",
    "paper": "Figure 4 (§5.3)",
    "title": "Integer-code updates per layer: high learning rate vs gradient inundation",
    "description": "A 100x learning rate over-updates a few layers and still leaves many untouched; GI makes "
    "about a share p of every layer's codes change.",
    "runs": [HIGH_LR, AIT],
    "seeds": [0],
    "figures": [{"name": "fig4", "options": {"epochs": [60, 350]}}],
    "table": None,
    "tiny": tiny(keeps="both runs and the crossings probe", loses="ImageNet ResNet-18, the epochs 60/350"),
}
