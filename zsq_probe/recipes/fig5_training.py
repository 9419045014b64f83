"""Fig. 5 (paper §5.5): training curves of GDFQ, KL-only and AIT — (a) the KL divergence to the teacher,
(b) the CE-KL gradient cosine (CE measured only, not trained on, for KL-only and AIT), (c) the validation CE
against the hard labels.

The extracted paper text does not name the model of Fig. 5; this recipe uses ResNet-20 on CIFAR-10 at
4w4a, the setting of the paper's other analysis figures (§3).

Paper scale:

    python -m analyses fig5 --data-root ~/data --device cuda --out runs/fig5

3 runs, one seed, the cosine probe.  Rough single-GPU estimate (A100/H100 class): ~4 GPU-hours.
Writes OUT/figures/fig5/fig5_*.png.

Tiny scale (2 CPU cores; ~4 min on a busy 2-core box, summed from measured per-run times):

    python -m analyses fig5 --scale tiny

Keeps the three methods (3w3a digits stand-ins) and all three panels; loses the real model and data
and the 400-epoch curves.
"""

from zsq_probe.recipes.specs import run, tiny

RUNS = [run(p, "resnet20_cifar10", 4, 4, probes=["cosine"]) for p in ("gdfq", "kl-only", "ait")]

RECIPE = {
    "name": "fig5",
    "paper": "Figure 5 (§5.5)",
    "title": "KL, CE-KL cosine and validation CE over training: GDFQ vs KL-only vs AIT",
    "description": "AIT reaches a lower KL than GDFQ and KL-only, keeps a positive CE-KL cosine late in "
    "training, and a lower validation CE although it never trains on CE.",
    "runs": RUNS,
    "seeds": [0],
    "figures": [{"name": "fig5"}],
    "table": None,
    "tiny": tiny(keeps="the three methods and all three panels"),
}
