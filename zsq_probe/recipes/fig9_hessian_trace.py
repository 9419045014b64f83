"""Fig. 9 (appendix G): Hessian trace of CE and of KL over training, KD vs ZQ (GDFQ, 4w4a), across CIFAR-10 and
CIFAR-100 models — ResNet-20, ResNet-56, WRN-28-10, WRN-40-8; one panel per run.

Paper scale:

    python -m analyses fig9 --data-root ~/data --device cuda --out runs/fig9

16 runs, one seed, the hessian probe every 10 epochs (16 Hutchinson vectors, Lanczos top-5, SLQ on a
batch of 200).  Rough single-GPU estimate (A100/H100 class): ~61 GPU-hours.  Writes
OUT/figures/fig9/fig9_*.png.

Tiny scale (2 CPU cores; ~4 min on a busy 2-core box, summed from measured per-run times):

    python -m analyses fig9 --scale tiny

Keeps one setting (the CIFAR-10 ResNet-20 pair as digits stand-ins: KD and GDFQ at 3w3a) and the probe
at the digits cadence; loses the other seven settings, the real data and the 400-epoch curves.
"""

from zsq_probe.recipes.specs import run, tiny

MODELS = ["resnet20", "resnet56", "wrn28_10", "wrn40_8"]
TEACHERS = [f"{m}_{d}" for d in ("cifar10", "cifar100") for m in MODELS]
RUNS = [r for t in TEACHERS for r in (run("kd", t, probes=["hessian"]), run("gdfq", t, 4, 4, probes=["hessian"]))]

RECIPE = {
    "name": "fig9",
    "paper": "Figure 9 (appendix G)",
    "title": "Hessian trace of CE and KL across CIFAR models, KD vs ZQ",
    "description": "The Fig. 2b measurement on four models and two data sets: KL is much flatter than CE, "
    "with a larger gap under ZQ.",
    "runs": RUNS,
    "seeds": [0],
    "figures": [{"name": "fig9"}],
    "table": None,
    "tiny": tiny(only=["resnet20_cifar10-*"], keeps="the CIFAR-10 ResNet-20 pair", loses="the other seven settings"),
}
