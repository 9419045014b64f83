"""Wall time of a short ZQ run with the default probe suite vs none, side by side in one process.

Target (issue "probes"): ratio <= 1.10 at the default cadence.  The paper-scale cadence (RunConfig defaults:
gradient probes every 10 steps, curvature probes every 20 epochs of 200 iterations) is emulated on the
embedded digits teacher by keeping its ratio of probed to unprobed work: one curvature measurement per
`--epochs` epochs of `--iters` iterations (the defaults, 20 x 200, are exactly that cadence).

    python benchmarks/probe_overhead.py [--epochs 20] [--iters 200] [--device cpu] [--repeats 2]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch

from zsq_probe.config import RunConfig
from zsq_probe.presets import resolve_config
from zsq_probe.probe_registry import BUILTIN_PROBE_NAMES
from zsq_probe.probes import build_probes
from zsq_probe.runs import train


def timed_run(cfg, out: Path) -> float:
    observers = build_probes(cfg)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(cfg, out, observers=observers, progress=False)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--preset", default="gdfq")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    defaults = RunConfig().probing  # the paper-scale probe cadence and sizes
    common = {
        "epochs": args.epochs,
        "iters_per_epoch": args.iters,
        "warmup_epochs": 1,
        "act_range_epochs": 1,
        "device": args.device,
        "val_max_batches": 1,
        "checkpoint_every": args.epochs,
    }
    cadence = {
        "probe_every_steps": defaults.every_steps,
        "hessian_every_epochs": args.epochs,
        "hessian_vectors": defaults.hessian_vectors,
        "slq_runs": defaults.slq_runs,
        "slq_steps": defaults.slq_steps,
        "hessian_top_k": defaults.hessian_top_k,
        "hessian_batch_size": defaults.batch_size,
    }
    resolve_config(args.preset, flags=common)  # trains / loads the digits teacher before timing
    tmp = Path(tempfile.mkdtemp())
    try:
        base, probed = [], []
        plain = resolve_config(args.preset, flags=dict(common, **cadence))
        full = resolve_config(args.preset, flags=dict(common, **cadence, probes=list(BUILTIN_PROBE_NAMES)))
        timed_run(plain, tmp / "warm")  # the first run in a process pays one-time costs: not counted
        for r in range(args.repeats):  # ABBA order so a drift in machine speed hits both alike
            order = [("none", plain, base), ("all", full, probed)]
            for name, cfg, times in order if r % 2 == 0 else order[::-1]:
                times.append(timed_run(cfg, tmp / f"{name}{r}"))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    b, p = sum(base) / len(base), sum(probed) / len(probed)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {args.device}"
    )
    print(
        f"{args.preset} on digits, {args.epochs} epochs x {args.iters} iterations; "
        f"probes: {', '.join(BUILTIN_PROBE_NAMES)} "
        f"(gradients every {defaults.every_steps} steps, curvature once, batch {defaults.batch_size})"
    )
    print(f"{'no probes':<22}{b:8.1f} s  (runs: {', '.join(f'{t:.1f}' for t in base)})")
    print(f"{'default probe suite':<22}{p:8.1f} s  (runs: {', '.join(f'{t:.1f}' for t in probed)})")
    print(f"ratio {p / b:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
