"""Coverage of the trace intervals over many independent seeds, against exact traces.

For small networks whose Hessian is formed densely in float64 (so the exact trace is known), every
estimator the curvature probe offers is run with ``--seeds`` independent seeds (default 200) at the
probe's default settings, and the table reports, per estimator and problem:

  cover   share of the nominal 95 % intervals that contain the exact trace (target >= 0.90)
  lo/hi   share of misses below / above the exact trace (a skewed estimator misses low)
  prod    mean products per estimate
  hw      mean relative half-width of the interval
  tol     share of estimates stopped by the tolerance (the rest spent the budget)

Problems: CE and KL-to-teacher (T = 20, times T^2, as the trainer) of a float and a W4A4-quantised
student (straight-through surrogate, eval mode) of an MLP and of a small CNN with BatchNorm in eval
mode. The last line of each block is the Wilson 95 % interval of the coverage.

    python benchmarks/trace_coverage.py [--seeds 200] [--quick]

Estimators (``zsq_probe.hessian``): ``hutch++`` as the probe runs it (deflated by the top-3
eigenvectors from ``top_eigenpairs``, adaptive to rtol 5 %, budget 400), ``hutch++/nodefl``
(Hutch++ without deflation), ``hutchinson`` (adaptive, budget 400), ``slq`` (the probe's SLQ: runs
x steps, t interval over runs).
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DT = torch.float64
T = 20.0


class DenseOp:
    """A dense symmetric matrix as an operator (exact products, cheap: thousands of estimates run)."""

    def __init__(self, h: torch.Tensor) -> None:
        self.h = h
        self.dim, self.dtype, self.device = h.shape[0], h.dtype, h.device
        self.num_products = 0

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.num_products += 1
        return self.h @ v


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU(), nn.Linear(12, 4))


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6)
        self.conv2, self.bn2 = nn.Conv2d(6, 8, 3, padding=1, stride=2), nn.BatchNorm2d(8)
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()  # modules: the quantiser puts activation quantisers there
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def fit(model: nn.Module, x, y, steps: int) -> nn.Module:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def kd_loss(student_logits, teacher_logits):
    from zsq_probe.quantization.losses import kl_to_teacher

    return kl_to_teacher(student_logits, teacher_logits, T) * T * T


def problems():
    """name -> (model, loss, batch): float / quantised students of an MLP and a BN CNN, CE and KL."""
    from zsq_probe.quantization.quantizer import calibrate_activation_ranges, quantize_model

    out = {}
    g = torch.Generator().manual_seed(1)
    data = {
        "mlp": (torch.randn(48, 6, generator=g, dtype=DT), torch.randint(0, 4, (48,), generator=g)),
        "cnn": (torch.randn(32, 1, 6, 6, generator=g, dtype=DT), torch.randint(0, 4, (32,), generator=g)),
    }
    for arch, make in (("mlp", mlp), ("cnn", SmallCNN)):
        x, y = data[arch]
        torch.manual_seed(0)
        teacher = fit(make().to(DT), x, y, 200)
        student = copy.deepcopy(teacher)
        with torch.no_grad():  # a student near, not at, the teacher
            gs = torch.Generator().manual_seed(3)
            for p in student.parameters():
                p.add_(0.2 * p.abs().mean() * torch.randn(p.shape, generator=gs, dtype=DT))
        student.eval()
        quant = quantize_model(copy.deepcopy(student), 4, 4)
        calibrate_activation_ranges(quant, [x])
        quant.eval()
        with torch.no_grad():
            t_logits = teacher(x)
        for kind, model in (("float", student), ("w4a4", quant)):
            out[f"{arch}-{kind}-ce"] = (model, F.cross_entropy, (x, y))
            out[f"{arch}-{kind}-kl"] = (model, kd_loss, (x, t_logits))
    return out


def dense_hessian(model, loss, batch) -> torch.Tensor:
    from zsq_probe.hessian import HessianOperator
    from zsq_probe.probes.surrogate import frozen_quantization

    with frozen_quantization(model, batch[0]):
        h = HessianOperator(model, loss, [batch]).to_dense()
    return 0.5 * (h + h.T)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--rtol", type=float, default=0.05)
    ap.add_argument("--budget", type=int, default=400, help="product budget (the probe's trace_max_products)")
    ap.add_argument("--top-k", type=int, default=3, help="deflation vectors (the probe's hessian_top_k)")
    ap.add_argument("--slq-runs", type=int, default=4)
    ap.add_argument("--slq-steps", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="20 seeds (a smoke run)")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds = 20
    torch.set_num_threads(1)

    from zsq_probe.hessian import slq_density, slq_trace, top_eigenpairs
    from zsq_probe.hessian.trace import estimate_trace

    print(
        f"# machine: {platform.machine()} {os.cpu_count()} CPU cores, torch {torch.__version__}, 1 thread; "
        f"{args.seeds} seeds per cell, rtol {args.rtol}, budget {args.budget}, deflation top-{args.top_k}, "
        f"SLQ {args.slq_runs} runs x {args.slq_steps} steps"
    )
    t0 = time.perf_counter()
    worst = {}
    header = (
        f"{'problem':18s}{'dim':>6s}{'exact':>11s}  {'estimator':16s}{'cover':>7s}{'lo':>6s}{'hi':>6s}"
        f"{'prod':>7s}{'hw':>8s}{'tol':>6s}   wilson95"
    )
    print(header)
    for name, (model, loss, batch) in problems().items():
        h = dense_hessian(model, loss, batch)
        exact = float(torch.trace(h))
        op = DenseOp(h)
        for est in ("hutch++", "hutch++/nodefl", "hutchinson", "slq"):
            hits, lows, highs, prods, hws, tols = 0, 0, 0, [], [], 0
            for s in range(args.seeds):
                seed = 1000 + s
                if est == "slq":
                    r = slq_trace(slq_density(op, args.slq_runs, args.slq_steps, seed=seed))
                    lo, hi, n = r.ci_low, r.ci_high, r.num_products
                    stopped = False
                else:
                    deflate = None
                    used = 0
                    if est == "hutch++":
                        eig = top_eigenpairs(op, k=args.top_k, tol=1e-3, seed=seed)
                        deflate, used = eig.eigenvectors, eig.num_products
                    r = estimate_trace(
                        op,
                        "hutchinson" if est == "hutchinson" else "hutch++",
                        rtol=args.rtol,
                        max_products=args.budget,
                        deflate=deflate,
                        seed=seed,
                    )
                    lo, hi, n = r.ci_low, r.ci_high, r.num_products + used
                    stopped = r.stopped_by in ("tolerance", "exact")
                hits += lo <= exact <= hi
                lows += hi < exact
                highs += lo > exact
                prods.append(n)
                hws.append(0.5 * (hi - lo) / abs(exact))
                tols += stopped
            cover = hits / args.seeds
            wl, wh = wilson(hits, args.seeds)
            worst[est] = min(worst.get(est, 1.0), cover)
            print(
                f"{name:18s}{op.dim:6d}{exact:11.4g}  {est:16s}{cover:7.3f}{lows / args.seeds:6.3f}"
                f"{highs / args.seeds:6.3f}{np.mean(prods):7.1f}{np.mean(hws):8.3f}{tols / args.seeds:6.2f}"
                f"   [{wl:.3f}, {wh:.3f}]"
            )
    print(
        "\n# worst coverage per estimator over the problems (target >= 0.90): "
        + ", ".join(f"{k} {v:.3f}" for k, v in worst.items())
    )
    print(f"# (hutch++ products include the top-{args.top_k} eigenvector search; {time.perf_counter() - t0:.0f} s)")
    return 0 if all(v >= 0.90 for v in worst.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
