"""Fig. 8 (appendix F): CE-KL gradient cosine, KD (self-distillation on real data) vs ZQ (GDFQ, 4w4a), across
CIFAR-100 models — ResNet-20, ResNet-56, ResNeXt-29 32x4d, WRN-28-10, WRN-40-8; one panel per model.

Paper scale:

    python -m analyses fig8 --data-root ~/data --device cuda --out runs/fig8

10 runs, one seed, the cosine probe.  Rough single-GPU estimate (A100/H100 class): ~32 GPU-hours
(WRN and ResNeXt dominate).  Writes OUT/figures/fig8/fig7_8_*.png.

Tiny scale (2 CPU cores; ~1.5 min on a busy 2-core box, summed from measured per-run times):

    python -m analyses fig8 --scale tiny

Keeps one setting (the ResNet-20 pair as digits stand-ins: KD and GDFQ at 3w3a) and the probe; loses
the other four models, the real data and the 400-epoch curves.
"""

from zsq_probe.recipes.specs import run, tiny

MODELS = ["resnet20_cifar100", "resnet56_cifar100", "resnext29_32x4d_cifar100", "wrn28_10_cifar100", "wrn40_8_cifar100"]
RUNS = [r for t in MODELS for r in (run("kd", t, probes=["cosine"]), run("gdfq", t, 4, 4, probes=["cosine"]))]

RECIPE = {
    "name": "fig8",
    "paper": "Figure 8 (appendix F)",
    "title": "CE-KL gradient cosine across CIFAR-100 models, KD vs ZQ",
    "description": "The Fig. 1 measurement on five CIFAR-100 models: CE and KL disagree more under ZQ.",
    "runs": RUNS,
    "seeds": [0],
    "figures": [{"name": "fig7_8"}],
    "table": None,
    "tiny": tiny(only=["resnet20_cifar100-*"], keeps="the ResNet-20 pair", loses="the other four models"),
}
