"""Fig. 6 (§6): real vs synthetic samples — a class x sample grid (the first real test image of each class
beside the generator's samples of that class, drawn by zsq_probe.plots.samples) for CIFAR-10 (its 10
classes) and ImageNet (10 randomly chosen classes), from a GDFQ and an AIT run.

The extracted paper text names neither the models nor the method behind Fig. 6; this recipe uses the main
settings, ResNet-20 on CIFAR-10 and ResNet-18 on ImageNet at 4w4a, and draws both GDFQ and AIT (AIT keeps
GDFQ's generator loss, so the two should look alike: the paper's privacy remark).  The run ids are Tab. 1's
and Tab. 2's: with the same --out their finished runs are reused, not trained again.  Real images come
from the test split under --data-root.

Paper scale:

    python -m analyses fig6 --data-root ~/data --device cuda --out runs/fig6

4 runs, one seed.  Rough single-GPU estimate (A100/H100 class): ~12 GPU-hours (0 with Tab. 1's runs in
the same --out).  Writes OUT/figures/fig6/fig6_samples_<run>.png, one grid per run.

Tiny scale (2 CPU cores; ~5 min on a busy 2-core box, summed from measured per-run times):

    python -m analyses fig6 --scale tiny

Keeps GDFQ and AIT (3w3a digits stand-ins) and the grid (the digits test split gives the real row); loses
ImageNet (it would map onto the same digits runs), the real models and data (see RECIPE["tiny"]).
"""

from zsq_probe.recipes.specs import run, tiny

RUNS = [run(p, t, 4, 4) for t in ("resnet20_cifar10", "resnet18") for p in ("gdfq", "ait")]

RECIPE = {
    "name": "fig6",
    "paper": "Figure 6 (§6)",
    "title": "Real vs synthetic samples (CIFAR-10, ImageNet): GDFQ and AIT",
    "description": "One grid per run: the first real test image of each of 10 classes beside the generator's "
    "samples of that class; no sign that the generator reconstructs real images.",
    "runs": RUNS,
    "seeds": [0],
    "figures": [{"name": "fig6"}],
    "table": None,
    "tiny": tiny(
        only=["resnet20_cifar10-*"],
        keeps="GDFQ and AIT and the class x sample grid",
        loses="the ImageNet runs (they would map onto the same digits runs)",
    ),
}
