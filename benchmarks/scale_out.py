"""Scale-out on one machine, side by side (issue 15): the `local` executor against today's sequential runner,
and the Hessian split over 2 gloo ranks against one process.

    python benchmarks/scale_out.py                      # both parts
    python benchmarks/scale_out.py --part executor --only 'resnet20_cifar10-4w4a-gdfq,resnet20_cifar10-4w4a-ait'
    python benchmarks/scale_out.py --part hessian --batch 128 --products 12

executor: the tiny Tab. 2 recipe (`python -m analyses tab2 --scale tiny --seeds 1`, six digits runs), once
sequential in one process with 2 torch threads (today's runner), once with `--workers 2 --threads 1`, each
into a fresh folder, in fresh interpreters.  Target: parallel wall time <= 0.7 x sequential.

hessian: Hessian-vector products of a quantised (4w4a) pytorchcv resnet20_cifar10 (random weights) on one
CIFAR-shaped batch, by 1 process with 1 thread, and split over 2 gloo ranks (torchrun) with 1 thread each;
products per second after a warm-up.  Target: >= 1.5 x.

Both need 2 free cores to mean anything: the script prints the load average beside the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load() -> str:
    try:
        return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average unknown"


def env(threads: int) -> dict:
    return dict(
        os.environ,
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        PYTHONPATH=str(ROOT) + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""),
    )


# ------------------------------------------------------------------------------------------------ executor
def executor_part(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="zsq-scale-out-"))
    base = [sys.executable, "-m", "analyses", "tab2", "--scale", "tiny", "--seeds", "1", "--quiet"]
    if args.only:
        base += ["--only", args.only]
    for s in args.set:
        base += ["--set", s]
    runs = {
        "sequential (1 process, 2 threads)": (["--threads", "2"], 2),
        "local executor (2 workers x 1 thread)": (["--workers", "2", "--threads", "1"], 1),
    }
    wall = {}
    print(f"executor: tiny Tab. 2 recipe{' --only ' + args.only if args.only else ''}; {load()}", flush=True)
    for name, (extra, threads) in runs.items():
        out = work / name.split()[0]
        t0 = time.perf_counter()
        proc = subprocess.run(
            base + ["--out", str(out)] + extra, cwd=ROOT, env=env(threads), capture_output=True, text=True
        )
        wall[name] = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-2000:])
            raise SystemExit(f"{name}: exit status {proc.returncode}")
        n = len(list((out / "runs").iterdir()))
        print(f"  {name:<40} {wall[name]:7.1f} s  ({n} runs; {load()})", flush=True)
    seq, par = wall.values()
    print(f"  ratio parallel / sequential: {par / seq:.3f}  (target <= 0.7)")
    shutil.rmtree(work, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ hessian
def hessian_worker(args) -> None:
    """One rank (or the single process): products per second on the shared batch."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    from zsq_probe.hessian import HessianOperator
    from zsq_probe.hessian.distributed import split_across_ranks
    from zsq_probe.quantization.quantizer import calibrate_activation_ranges, quantize_model
    from zsq_probe.teachers.loader import build_architecture

    torch.manual_seed(0)
    model = quantize_model(build_architecture("resnet20_cifar10"), 4, 4).eval()
    x = torch.randn(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (args.batch,), generator=torch.Generator().manual_seed(2))
    calibrate_activation_ranges(model, [x])
    with split_across_ranks() as group:
        op = HessianOperator(model, F.cross_entropy, [(x, y)], mode="eval")
        v = torch.randn(op.dim, generator=torch.Generator().manual_seed(3))
        for _ in range(2):
            op.matvec(v)  # warm-up
        if group is not None:
            group.barrier()
        t0 = time.perf_counter()
        for _ in range(args.products):
            hv = op.matvec(v)
        if group is not None:
            group.barrier()
        dt = time.perf_counter() - t0
        if group is None or group.rank == 0:
            print(
                json.dumps(
                    {"products_per_s": args.products / dt, "world_size": op.world_size, "norm": float(hv.norm())}
                )
            )


def hessian_part(args) -> None:
    me = [
        str(Path(__file__).resolve()),
        "--hessian-worker",
        "--batch",
        str(args.batch),
        "--products",
        str(args.products),
    ]
    cmds = {
        "1 process x 1 thread": [sys.executable] + me,
        "2 gloo ranks x 1 thread": [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "2",
        ]
        + me,
    }
    print(f"hessian: resnet20_cifar10 4w4a, batch {args.batch}, {args.products} products; {load()}", flush=True)
    rate, norms = {}, {}
    for name, cmd in cmds.items():
        proc = subprocess.run(cmd, cwd=ROOT, env=env(1), capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stderr[-3000:])
            raise SystemExit(f"{name}: exit status {proc.returncode}")
        doc = json.loads(proc.stdout.strip().splitlines()[-1])
        rate[name], norms[name] = doc["products_per_s"], doc["norm"]
        print(f"  {name:<26} {doc['products_per_s']:7.2f} products/s  (|Hv| {doc['norm']:.6g}; {load()})", flush=True)
    one, two = rate.values()
    print(f"  ratio 2 ranks / 1 process: {two / one:.3f}  (target >= 1.5)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("both", "executor", "hessian"), default="both")
    ap.add_argument("--only", help="executor: --only patterns for the recipe (default: all six runs)")
    ap.add_argument("--set", action="append", default=[], help="executor: --set for every run (e.g. epochs=4)")
    ap.add_argument("--batch", type=int, default=128, help="hessian: probe batch size")
    ap.add_argument("--products", type=int, default=10, help="hessian: timed products")
    ap.add_argument("--hessian-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.hessian_worker:
        return hessian_worker(args)
    if args.part in ("both", "hessian"):
        hessian_part(args)
    if args.part in ("both", "executor"):
        executor_part(args)


if __name__ == "__main__":
    main()
