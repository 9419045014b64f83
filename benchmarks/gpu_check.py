"""GPU readiness (issue 15, item 5): is the CUDA path right, and how fast is it at real size?

    python benchmarks/gpu_check.py                      # on a CUDA machine (default --device cuda)
    python benchmarks/gpu_check.py --device cpu --quick  # a smoke test of this script on a CPU

1. correctness: a tiny end-to-end run (digits teacher, GDFQ 3w3a, 2 epochs x 3 iterations, cosine and Hessian
   probes) on `--device` and on the CPU from the same seed; the metrics and probe scalars must agree within
   tolerance (float summation order differs between devices, so not bit for bit).
2. speed at real size (random weights: nothing is downloaded; the numbers do not depend on the weights):
   one student training step (teacher forward + KL*T^2 + CE + backward + optimiser step, activation ranges
   frozen) of resnet20_cifar10 4w4a at batch 200 with GI-SGD, and of resnet18 4w4a at batch 16 (224 x 224) with
   SGD; one Hessian-vector product of resnet18 4w4a at batch 64.  Median seconds after a warm-up.

Prints one line per check and PASS/FAIL; exit status 1 when a correctness check fails.  Put its output in
docs/benchmarks.md whenever a GPU is available.  As of this writing it has only run on a CPU: the CUDA
path is untested.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

TOL = {"loss": 1e-3, "val_top1": 0.02, "probe": 2e-2}  # relative (val_top1: absolute, one image in 50)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, device, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ------------------------------------------------------------------------------------------------ correctness
def tiny_run(device: str, out: Path) -> dict:
    from zsq_probe.presets import resolve_config
    from zsq_probe.rundir.store import RunDir
    from zsq_probe.runs import train

    flags = {
        "epochs": 2,
        "iters_per_epoch": 3,
        "batch_size": 32,
        "warmup_epochs": 0,
        "act_range_epochs": 1,
        "val_max_batches": 2,
        "val_batch_size": 100,
        "hessian_batch_size": 64,
        "hessian_every_epochs": 1,
        "probe_every_steps": 1,
        "trace_max_products": 40,
        "slq_runs": 2,
        "slq_steps": 8,
        "hessian_top_k": 2,
        "w_bits": 3,
        "a_bits": 3,
        "probes": ["cosine", "hessian"],
        "device": device,
    }
    cfg = resolve_config("gdfq", teacher="digits", flags=flags)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(cfg, out, progress=False)
    run = RunDir(out)
    m = run.read_table("metrics").sort_values("epoch")
    values = {
        f"loss_{k}@{e}": v
        for e, k, v in (
            (r.epoch, k, getattr(r, f"loss_{k}")) for r in m.itertuples() for k in ("kl_scaled", "ce", "generator")
        )
    }
    values.update({f"val_top1@{r.epoch}": r.val_top1 for r in m.itertuples()})
    cos = run.read_table("cosine")
    cos = cos[cos["statistic"] == "epoch_mean"]
    values.update({f"cosine@{r.epoch}": r.cosine for r in cos.itertuples()})
    tr = run.read_table("hessian_trace")
    values.update({f"trace/{r.loss}/{r.estimator}@{r.epoch}": r.trace for r in tr.itertuples()})
    ev = run.read_table("hessian_eigenvalues")
    values.update({f"eig/{r.loss}/top{r.rank}@{r.epoch}": r.eigenvalue for r in ev.itertuples()})
    return values


def check_correctness(device: str) -> bool:
    work = Path(tempfile.mkdtemp(prefix="zsq-gpu-check-"))
    t0 = time.perf_counter()
    ref = tiny_run("cpu", work / "cpu")
    t1 = time.perf_counter()
    got = tiny_run(device, work / "dev")
    t2 = time.perf_counter()
    print(f"tiny end-to-end run: cpu {t1 - t0:.1f} s, {device} {t2 - t1:.1f} s (includes start-up)")
    ok = True
    for key in sorted(ref):
        a, b = float(ref[key]), float(got.get(key, float("nan")))
        kind = "val_top1" if key.startswith("val_top1") else ("loss" if key.startswith("loss") else "probe")
        if math.isnan(a) and math.isnan(b):
            continue
        diff = abs(a - b) if kind == "val_top1" else abs(a - b) / max(abs(a), 1e-8)
        good = diff <= TOL[kind]
        ok &= good
        if not good or key.endswith("@2"):
            print(
                f"  {'ok  ' if good else 'FAIL'} {key:<32} cpu {a:<14.6g} {device} {b:<14.6g} "
                f"{'abs' if kind == 'val_top1' else 'rel'} diff {diff:.2e} (tol {TOL[kind]:g})"
            )
    print(f"correctness {device} vs cpu: {'PASS' if ok else 'FAIL'} ({len(ref)} values compared)")
    return ok


# ------------------------------------------------------------------------------------------------ speed
def student_step_time(name: str, batch: int, size: int, classes: int, gi: bool, device, steps, warmup) -> float:
    from zsq_probe.quantization.gi import GradientInundation
    from zsq_probe.quantization.losses import student_terms
    from zsq_probe.quantization.quantizer import calibrate_activation_ranges, quantize_model, quantized_layers
    from zsq_probe.teachers.loader import build_architecture

    torch.manual_seed(0)
    teacher = build_architecture(name).to(device).eval()
    student = quantize_model(teacher, 4, 4).to(device).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    calibrate_activation_ranges(student, [x])
    base = torch.optim.SGD(student.parameters(), lr=1e-4, momentum=0.9, nesterov=True)
    opt = GradientInundation(base, quantized_layers(student), p=1e-3) if gi else base

    def step():
        with torch.no_grad():
            t_logits = teacher(x)
        _, kl, ce = student_terms(student, x, y, t_logits, 20.0)
        loss = kl * 400.0 + ce
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return median_seconds(step, device, steps, warmup)


def hvp_time(name: str, batch: int, size: int, classes: int, device, steps, warmup) -> float:
    import torch.nn.functional as F

    from zsq_probe.hessian import HessianOperator
    from zsq_probe.quantization.quantizer import calibrate_activation_ranges, quantize_model
    from zsq_probe.teachers.loader import build_architecture

    torch.manual_seed(0)
    model = quantize_model(build_architecture(name), 4, 4).to(device).eval()
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    calibrate_activation_ranges(model, [x])
    op = HessianOperator(model, F.cross_entropy, [(x, y)], mode="eval")
    v = torch.randn(op.dim, device=device)
    return median_seconds(lambda: op.matvec(v), device, steps, warmup)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=10, help="timed repetitions per speed check")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke test of this script on a CPU)")
    ap.add_argument("--skip-correctness", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print("no CUDA device: run with --device cpu --quick for a smoke test", file=sys.stderr)
            return 2
        p = torch.cuda.get_device_properties(device)
        print(
            f"device: {p.name}, {p.total_memory / 2**30:.0f} GiB; torch {torch.__version__}, "
            f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"
        )
    else:
        print(f"device: {args.device} ({torch.get_num_threads()} threads); torch {torch.__version__}")
    ok = True if args.skip_correctness else check_correctness(args.device)
    q = args.quick
    steps, warmup = (2, 1) if q else (args.steps, args.warmup)
    checks = [
        (
            "step resnet20_cifar10 4w4a batch 200, GI-SGD",
            lambda: student_step_time("resnet20_cifar10", 8 if q else 200, 32, 10, True, device, steps, warmup),
        ),
        (
            "step resnet18 4w4a batch 16 (224x224), SGD",
            lambda: student_step_time("resnet18", 1 if q else 16, 224, 1000, False, device, steps, warmup),
        ),
        (
            "Hessian-vector product resnet18 4w4a batch 64",
            lambda: hvp_time("resnet18", 1 if q else 64, 224, 1000, device, steps, warmup),
        ),
    ]
    for label, fn in checks:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sec = fn()
        mem = f", peak {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB" if device.type == "cuda" else ""
        print(f"{label}{' (quick sizes)' if q else ''}: {sec:.4f} s median of {steps}{mem}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
