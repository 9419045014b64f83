"""Fig. 3 (paper §3.2, §4.1): the naive KL-only zero-shot quantisation — (a) inter-epoch cosine of the epoch-mean
KL gradient, KD vs ZQ (ResNet-20, CIFAR-10; GDFQ and KL-only as the ZQ runs), (b, c) the number of integer
weight codes that change per layer and step for KL-only on ImageNet ResNet-18 at epochs 60 and 350.

Paper scale:

    python -m analyses fig3 --data-root ~/data --device cuda --out runs/fig3

4 runs, one seed: KD, GDFQ and KL-only on ResNet-20/CIFAR-10 with the inter_epoch probe; KL-only 4w4a on
ResNet-18/ImageNet with the crossings probe.  Rough single-GPU estimate (A100/H100 class): ~9 GPU-hours
(the ImageNet run dominates).  Writes OUT/figures/fig3/fig3a_*.png and fig3bc_*.png.

Tiny scale (2 CPU cores; ~4 min on a busy 2-core box, summed from measured per-run times):

    python -m analyses fig3 --scale tiny

Keeps all four runs as digits stand-ins (3w3a) and both probes; loses the real models, the ImageNet
scale of Figs. 3b/c and their epochs 60/350 (the figure's defaults, an early and the last epoch, apply).
"""

from zsq_probe.recipes.specs import run, tiny

KD = run("kd", "resnet20_cifar10", probes=["inter_epoch"])
GDFQ = run("gdfq", "resnet20_cifar10", 4, 4, probes=["inter_epoch"])
KL_ONLY = run("kl-only", "resnet20_cifar10", 4, 4, probes=["inter_epoch"])
KL_ONLY_RN18 = run("kl-only", "resnet18", 4, 4, probes=["crossings"])

RECIPE = {
    "name": "fig3",
    "paper": "Figure 3 (§3.2, §4.1)",
    "title": "Inter-epoch KL-gradient cosine; integer codes crossing under KL-only",
    "description": "(a) the epoch-mean KL gradient keeps its direction in ZQ (not at a KL minimum yet); "
    "(b, c) under KL-only very few integer codes change, in very few layers, ever fewer later.",
    "runs": [KD, GDFQ, KL_ONLY, KL_ONLY_RN18],
    "seeds": [0],
    "figures": [
        {"name": "fig3a", "runs": [KD["id"], GDFQ["id"], KL_ONLY["id"]]},
        {"name": "fig3bc", "runs": [KL_ONLY_RN18["id"]], "options": {"epochs": [60, 350]}},
    ],
    "table": None,
    "tiny": tiny(
        keeps="all four runs and both probes", loses="ImageNet ResNet-18 for Figs. 3b/c and the paper's epochs 60/350"
    ),
}
