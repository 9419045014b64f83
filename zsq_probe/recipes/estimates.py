"""Rough single-GPU hours of a run and of a recipe at paper scale (an estimate, not a measurement)."""

from __future__ import annotations

from zsq_probe.recipes.jobs import Job, unique_jobs
from zsq_probe.recipes.specs import Recipe, RunSpec

# Hours per run at paper scale (400 epochs x 200 iterations, validation every epoch) on a current
# data-centre GPU such as an A100/H100.  Probes add their PROBE_FACTOR share.  Used by the dry run, the
# recipe listing and the recipes' docstrings ("expected time").
EST_HOURS = {
    "resnet20_cifar10": 1.2,
    "resnet20_cifar100": 1.2,
    "resnet56_cifar10": 2.5,
    "resnet56_cifar100": 2.5,
    "resnext29_32x4d_cifar10": 6.0,
    "resnext29_32x4d_cifar100": 6.0,
    "wrn28_10_cifar10": 5.0,
    "wrn28_10_cifar100": 5.0,
    "wrn40_8_cifar10": 4.0,
    "wrn40_8_cifar100": 4.0,
    "resnet18": 5.0,
    "resnet50": 9.0,
    "mobilenetv2_w1": 5.0,
    "inceptionv3": 10.0,
    "sqnxt23_w2": 5.0,
    "shufflenet_g1_w1": 4.0,  # Tab. 7 (InceptionV3 at 299x299)
}
EST_KD_FACTOR = 0.5  # real-data self-distillation: one pass over the training set per epoch, no generator
EST_ZEROQ_HOURS = 0.1  # distillation of the ZeroQ set + calibration, no fine-tuning
PROBE_FACTOR = {"cosine": 0.15, "inter_epoch": 0.1, "crossings": 0.05, "hessian": 0.6, "slice": 0.2}


def spec_hours(spec: RunSpec) -> float:
    """Rough single-GPU hours of one run at paper scale.

    Args:
        spec: The run.

    Returns:
        The hours.
    """
    base = EST_HOURS.get(spec["teacher"], 5.0)
    if spec["preset"] == "zeroq":
        h = EST_ZEROQ_HOURS
    elif spec["preset"] == "kd":
        h = base * EST_KD_FACTOR
    else:
        h = base
    return h * (1 + sum(PROBE_FACTOR.get(p, 0.2) for p in spec["probes"]))


def estimate_hours(recipe: Recipe, seeds: int | None = None) -> float:
    """Rough single-GPU hours of a whole recipe at paper scale (runs x seeds).

    Args:
        recipe: The recipe.
        seeds: The seeds per run (default: the recipe's).

    Returns:
        The hours.
    """
    n = len(recipe["seeds"]) if seeds is None else seeds
    return n * sum(spec_hours(s) for s in recipe["runs"])


def jobs_hours(jobs: list[Job]) -> float:
    """Rough single-GPU hours of the distinct runs among `jobs`.

    Args:
        jobs: The jobs.

    Returns:
        The hours.
    """
    return sum(spec_hours(j.spec) for j in unique_jobs(jobs))
