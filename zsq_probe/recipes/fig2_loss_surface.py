"""Fig. 2 (paper §3.2): the loss surface of CE and KL, KD vs ZQ, ResNet-20 on CIFAR-10 — (b) Hessian trace of CE
and of KL over epochs, (c) the loss along the top Hessian eigenvector, L(theta + k e delta) for k in
[-0.5, 0.5], per epoch, (d) the eigenvalue density of the CE and KL Hessians.  (Fig. 2a is a diagram.)

Paper scale:

    python -m analyses fig2 --data-root ~/data --device cuda --out runs/fig2

2 runs (KD and GDFQ 4w4a), one seed, the hessian probe (Hutchinson trace with 16 vectors, Lanczos top-5,
SLQ density) and the slice probe every 10 epochs on a fixed batch of 200.  Rough single-GPU estimate
(A100/H100 class): ~3 GPU-hours.  Writes OUT/figures/fig2/fig2b_*.png, fig2c_*.png, fig2d_*.png.

Tiny scale (2 CPU cores; ~4 min on a busy 2-core box, summed from measured per-run times):

    python -m analyses fig2 --scale tiny

Keeps both runs and all three measurements (every 3 epochs, 8 Hutchinson vectors, top-3 eigenvalues,
one 16-step SLQ run: config.py's digits scale); loses ResNet-20/CIFAR-10 and the 400-epoch curves.
"""

from zsq_probe.recipes.specs import run, tiny

PROBES = ["hessian", "slice"]
KD = run("kd", "resnet20_cifar10", probes=PROBES)
ZQ = run("gdfq", "resnet20_cifar10", 4, 4, probes=PROBES)

RECIPE = {
    "name": "fig2",
    "paper": "Figure 2b-d (§3.2)",
    "title": "Hessian trace, loss slices and eigenvalue density of CE and KL, KD vs ZQ",
    "description": "Tr(H) of CE and KL over epochs (KL much flatter, more so in ZQ), 1-D slices along the top "
    "eigenvector, and the SLQ eigenvalue density (CE has the longer tail).",
    "runs": [KD, ZQ],
    "seeds": [0],
    "figures": [{"name": "fig2b"}, {"name": "fig2c"}, {"name": "fig2d"}],
    "table": None,
    "tiny": tiny(keeps="both runs and the hessian + slice probes at the digits cadence"),
}
