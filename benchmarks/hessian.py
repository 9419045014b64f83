"""zsq_probe.hessian vs other libraries on pytorchcv resnet20_cifar10, side by side in one run.

Sections (``--sections``, default all four):
  1. ``hvp``: seconds per Hessian-vector product (median over interleaved repeats), ours vs PyHessian 0.1;
  2. ``eig``: top-1 and top-5 eigenvalues: ours (ARPACK, largest algebraic) vs PyHessian's power
     iteration (``eigenvalues(top_n=...)``, which converges to the largest *magnitude*), with
     HVPs used, residuals ||Hv - lambda v|| / |lambda| and whether each value is signed-correct
     (equal to the k-th largest algebraic eigenvalue);
  3. ``slq``: our SLQ density and trace, while PyHessian's ``density()`` fails on torch 2 (torch.eig);
     sections 1-3 use one batch of ``--batch-size`` random N(0,1) images with random labels, CE loss;
  4. ``trace``: the Hessian trace of the CE and the KL*T^2 loss (KL to the model's own logits plus N(0, 0.5)
     noise at T = 20, times T^2: the trainer's KL term) on one batch, one thread (``--threads``, default 1 here),
     one table per loss with a row per method: products (Hessian-vector products "HVP", or per-sample
     vector-Jacobian products "VJP"), seconds (CPU seconds, ``time.process_time``; wall seconds on CUDA), the
     trace, its 95 % interval when the method gives one, and whether that interval covers the exact trace.
     Rows: ours ``auto`` (what trace_estimators "auto" picks: the exact trace where batch x (classes - 1) <=
     EXACT_PRODUCTS_PER_BUDGET x 400), ours ``exact`` (Gauss-Newton diagonal, ``--exact``), ours Hutch++ (the
     probe's default: top-3 eigenvectors deflate Hutch++, adaptive to +-5 %, budget 400), plain Hutchinson
     (``--reference-vectors`` samples, and the products it needs for +-5 % from their sd), BackPACK
     ``DiagGGNExact`` (``--exact``; on a copy of the model with its ``output`` Linear renamed and BackPACK's
     torch.fx converter, ``extend(..., use_converter=True)``, for the residual sums; the time ratio ours/BackPACK
     of the exact diagonal, median of ``--exact-repeats`` interleaved runs), curvlinops (``HessianLinearOperator``
     seconds per HVP, ``hutchpp_trace`` and ``xtrace`` with the products ours spent) and PyHessian (its HVP and
     ``trace()``, defaults maxIter 100, tol 1e-3; the interval is a t interval computed here from the samples it
     returns).  The HVP rows are timed interleaved (ours, curvlinops, PyHessian in rotating order) and each
     reports its relative difference to our product.  A library that is not installed gets one row saying so
     (``pip install -e '.[bench]'``).  ``--model digits`` measures the embedded default's quantised student
     instead (a 3-epoch GDFQ run, probe batch 200): ours vs plain Hutchinson, and ``--exact`` its exact trace.

Data and weights of the trace section: ``--data-root DIR`` takes ``--batch-size`` CIFAR-10 test images (DIR
holds ``cifar-10-batches-py/``, torchvision's python layout; normalised as zsq-probe feeds a teacher) chosen by a
``torch.randperm`` seeded with ``--seed`` (copies ordered by class make the first N one class), with their
labels; without it the batch is random N(0,1) images with random labels and the section says those numbers
are not the ones docs/benchmarks.md quotes.  ``--weights FILE``: a state dict for resnet20_cifar10 (strict
load, zsq_probe.teachers.loader.load_teacher); without it ``~/.torch/models/resnet20_cifar10-*.pth`` when
present (never downloaded), else the random initialisation (pretrained=False), which the section says.

    python benchmarks/hessian.py [--device cuda] [--batch-size 64] [--quick]
    python benchmarks/hessian.py --sections trace --data-root DIR [--weights FILE] [--exact] [--reference-vectors 1000]
    python benchmarks/hessian.py --sections trace --model digits --exact

Libraries of the trace section: ``pip install backpack-for-pytorch==1.7.1 curvlinops-for-pytorch==3.0.1``
(PyHessian is a dependency of zsq-probe).
"""

from __future__ import annotations

import argparse
import copy
import glob
import importlib
import math
import os
import platform
import statistics
import sys
import time
import traceback
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import torch
import torch.nn as nn

TEMPERATURE = 20.0  # the KL term's T (the trainer's default)
OURS_BUDGET = 400  # trace_max_products of the probe's default on CIFAR
INSTALL_HINT = "not installed (pip install -e '.[bench]')"
# optional libraries of the trace section: import name -> distribution name
LIBRARIES = {"backpack": "backpack-for-pytorch", "curvlinops": "curvlinops-for-pytorch", "pyhessian": "PyHessian"}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> float:
    """CPU seconds of this process (one thread: the work's own time, whatever else runs on the machine); on
    CUDA the synchronised wall clock."""
    sync(device)
    return time.process_time() if device.type == "cpu" else time.perf_counter()


def load_model(device: torch.device, weights: str | None = None):
    """resnet20_cifar10 in eval mode and where its weights came from: ``weights`` (a state dict, strict load
    through zsq_probe's teacher loader), else ``~/.torch/models/resnet20_cifar10-*.pth``, else random init."""
    if weights is not None:
        from zsq_probe.teachers.loader import load_teacher

        model, info = load_teacher("resnet20_cifar10", weights=weights)
        return model.to(device).eval(), f"{weights} (sha256 {(info.weights_sha256 or '?')[:12]})"
    from pytorchcv.model_provider import get_model

    model = get_model("resnet20_cifar10", pretrained=False)
    files = sorted(glob.glob(os.path.expanduser("~/.torch/models/resnet20_cifar10-*.pth")))
    source = "random init (pretrained=False)"
    if files:
        model.load_state_dict(torch.load(files[-1], map_location="cpu", weights_only=True))
        source = files[-1]
    return model.to(device).eval(), source


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = ap.add_argument
    add("--device", default="cpu")
    add("--batch-size", type=int, default=64)
    add("--seed", type=int, default=0)
    add("--hvp-repeats", type=int, default=8, help="timed HVPs per library (interleaved)")
    add("--tol", type=float, default=1e-3, help="relative tolerance: ARPACK tol for ours, PyHessian's power-iteration")
    add(
        "--power-iters",
        type=int,
        default=20,
        help="PyHessian eigenvalues(maxIter=...) per eigenvalue (its default 100; 20 keeps the "
        "run to a few minutes on a 2-core CPU)",
    )
    add("--slq-steps", type=int, default=20)
    add("--slq-runs", type=int, default=1)
    add("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default; the trace section: 1)")
    add("--sections", default="hvp,eig,slq,trace", help="comma list of hvp, eig, slq, trace")
    add(
        "--model",
        default="resnet20",
        choices=("resnet20", "digits"),
        help="trace section only: resnet20_cifar10 (see --data-root, --weights), or the digits student",
    )
    add("--data-root", default=None, help="trace section: CIFAR-10 folder (holds cifar-10-batches-py/)")
    add("--weights", default=None, help="trace section: resnet20_cifar10 state dict (default ~/.torch/models)")
    add("--reference-vectors", type=int, default=1000, help="trace section: Hutchinson samples (reference, sd)")
    add("--exact", action="store_true", help="trace section: the exact (GGN) trace too, and BackPACK's")
    add("--exact-repeats", type=int, default=3, help="trace section: interleaved runs of ours and BackPACK's exact")
    add(
        "--max-products-to-5",
        type=int,
        default=5000,
        help="trace section: budget of the rerun that finds the products ours needs for +-5 %% when the default "
        "budget (400) stops it first (skipped with --quick)",
    )
    add("--quick", action="store_true", help="fewer repeats and iterations (smoke run)")
    args = ap.parse_args(argv)
    args.section_set = {x.strip() for x in args.sections.split(",") if x.strip()}
    if not args.section_set <= {"hvp", "eig", "slq", "trace"}:
        ap.error(f"unknown section(s): {sorted(args.section_set - {'hvp', 'eig', 'slq', 'trace'})}")
    if args.quick:
        args.hvp_repeats, args.power_iters, args.slq_steps = 3, 10, 8
        args.reference_vectors = min(args.reference_vectors, 100)
        args.exact_repeats = min(args.exact_repeats, 2)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sections = args.section_set
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model == "digits" or sections == {"trace"}:
        return trace_section(args)
    bench = setup_bench(args)
    if "hvp" in sections:
        hvp_section(bench, args)
    if "eig" in sections:
        eig_section(bench, args)
    if "slq" in sections:
        slq_section(bench, args)
    bench.close()
    if "trace" in sections:
        return trace_section(args)
    return 0


# ---------------------------------------------------------------------------------------------- sections 1-3


@dataclass
class Bench:
    """Sections 1-3: our operator and PyHessian's object on one random batch, CE loss."""

    device: torch.device
    model: nn.Module
    op: Any
    ph: Any
    ph_mod: Any
    ph_hvp: Any  # PyHessian's own hessian_vector_product (the module's attribute counts calls meanwhile)
    hvp_calls: dict[str, int]
    t_ours_build: float
    t_ph_build: float

    def ph_list(self, flat: torch.Tensor) -> list[torch.Tensor]:
        params = self.ph.params
        return [c.view_as(p) for c, p in zip(flat.split([p.numel() for p in params]), params)]

    def close(self) -> None:
        self.ph_mod.hessian_vector_product = self.ph_hvp
        for p in self.model.parameters():
            p.grad = None  # PyHessian leaves a graph in .grad
        self.op.close()


def setup_bench(args: argparse.Namespace) -> Bench:
    import pyhessian

    from zsq_probe.hessian import HessianOperator

    ph_mod = sys.modules["pyhessian.hessian"]  # the attribute pyhessian.hessian is the class
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    model, source = load_model(device)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch_size, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (args.batch_size,), generator=g).to(device)
    crit = torch.nn.CrossEntropyLoss()
    print(
        f"# machine: {platform.machine()} {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    print(
        f"# model: pytorchcv resnet20_cifar10, weights: {source}; batch {args.batch_size} random N(0,1) "
        f"images, random labels, CE loss"
    )
    t = time.perf_counter()
    op = HessianOperator(model, crit, [(x, y)])
    sync(device)
    t_ours_build = time.perf_counter() - t
    print(f"# parameters: {op.dim}")
    hvp_calls = {"n": 0}
    ph_hvp = ph_mod.hessian_vector_product

    def counting_hvp(*a, **k):
        hvp_calls["n"] += 1
        return ph_hvp(*a, **k)

    ph_mod.hessian_vector_product = counting_hvp  # count PyHessian's products (benchmark only)
    t = time.perf_counter()
    ph = pyhessian.hessian(model, crit, data=(x, y), cuda=device.type == "cuda")
    sync(device)
    t_ph_build = time.perf_counter() - t
    return Bench(device, model, op, ph, ph_mod, ph_hvp, hvp_calls, t_ours_build, t_ph_build)


def hvp_section(b: Bench, args: argparse.Namespace) -> None:
    """1. seconds per HVP, ours vs PyHessian, interleaved (ABBA), then the batched-product check."""
    device, op = b.device, b.op
    gen = torch.Generator().manual_seed(1)
    vecs = [torch.randn(op.dim, generator=gen).to(device) for _ in range(args.hvp_repeats + 1)]
    op.matvec(vecs[0])
    b.ph_hvp(b.ph.gradsH, b.ph.params, b.ph_list(vecs[0]))  # warm-up both
    ours_t, ph_t, ours_cpu, ph_cpu, max_diff = [], [], [], [], 0.0

    def timed(f, v, wall, cpu):
        sync(device)
        t, c = time.perf_counter(), time.process_time()
        hv = f(v)
        sync(device)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
        return hv

    def ph_product(v):
        return b.ph_hvp(b.ph.gradsH, b.ph.params, b.ph_list(v))

    def flat(hv):
        return torch.cat([h.reshape(-1) for h in hv])

    for i, v in enumerate(vecs[1:]):  # ABBA order: neither library always runs first
        if i % 2 == 0:
            a, c = timed(op.matvec, v, ours_t, ours_cpu), flat(timed(ph_product, v, ph_t, ph_cpu))
        else:
            c, a = flat(timed(ph_product, v, ph_t, ph_cpu)), timed(op.matvec, v, ours_t, ours_cpu)
        max_diff = max(max_diff, float((a - c).norm() / c.norm()))
    mo, mp = statistics.median(ours_t), statistics.median(ph_t)
    print(f"\n## 1. Hessian-vector product (median of {len(ours_t)} interleaved)")
    print(f"{'':28s}{'ours':>12s}{'PyHessian':>12s}")
    print(f"{'build (forward+grad graph) s':28s}{b.t_ours_build:12.3f}{b.t_ph_build:12.3f}")
    print(f"{'seconds per HVP (median)':28s}{mo:12.4f}{mp:12.4f}")
    print(f"{'seconds per HVP (min)':28s}{min(ours_t):12.4f}{min(ph_t):12.4f}")
    print(f"{'CPU seconds per HVP (median)':28s}{statistics.median(ours_cpu):12.4f}{statistics.median(ph_cpu):12.4f}")
    print(
        f"ratio ours/PyHessian = {mo / mp:.3f} (median wall), {min(ours_t) / min(ph_t):.3f} (min wall), "
        f"{statistics.median(ours_cpu) / statistics.median(ph_cpu):.3f} (median CPU), target <= 0.9; "
        f"relative difference of the products {max_diff:.1e}"
    )
    batched_product_check(b, torch.stack(vecs[1:9]))


def batched_product_check(b: Bench, block: torch.Tensor) -> None:
    """Several vectors at once (Hutch++ sketches, SLQ runs): one vmapped backward (is_grads_batched) for 8
    vectors vs 8 single products, interleaved; the estimators use single products unless this wins."""
    device, op = b.device, b.op
    grads = list(op._grads) if op.keep_graphs else None  # benchmark only: the operator's own graph
    if grads is None:
        return
    seq_t, bat_t, bat_err = [], [], ""
    for rep in range(3):
        for order in (0, 1) if rep % 2 == 0 else (1, 0):
            sync(device)
            t = time.perf_counter()
            if order == 0:
                seq = torch.stack([op.matvec(v) for v in block])
                sync(device)
                seq_t.append(time.perf_counter() - t)
                continue
            try:
                parts = [
                    c.reshape(block.shape[0], *p.shape) for c, p in zip(block.split(op._numels, dim=1), op._params)
                ]
                hv = torch.autograd.grad(
                    grads, op._params, grad_outputs=parts, retain_graph=True, is_grads_batched=True
                )
                bat = torch.cat([h.reshape(block.shape[0], -1) for h in hv], dim=1)
                sync(device)
                bat_t.append(time.perf_counter() - t)
            except RuntimeError as e:  # vmap over some backward formulas is not supported
                bat_err = str(e).splitlines()[0][:120]
                break
    if bat_t:
        diff = float((bat - seq).norm() / seq.norm())
        print(
            f"batched product, 8 vectors in one vmapped backward: {statistics.median(bat_t):.3f} s vs "
            f"8 single products {statistics.median(seq_t):.3f} s (ratio "
            f"{statistics.median(bat_t) / statistics.median(seq_t):.3f}; relative difference {diff:.1e}); "
            f"the probes use single products; a batched path would pay only where this ratio is < 1"
        )
    else:
        print(f"batched product: not available here ({bat_err})")


def residual(op, vec: torch.Tensor, lam: float) -> float:
    """||H v - lambda v|| / (|lambda| ||v||)."""
    hv = op.matvec(vec)
    return float((hv - lam * vec).norm() / (abs(lam) * vec.norm()))


def eig_section(b: Bench, args: argparse.Namespace) -> None:
    """2. top eigenvalues: ours (ARPACK LA) vs PyHessian's power iteration, top-1 and top-5."""
    from zsq_probe.hessian import top_eigenpairs

    op = b.op
    print(
        f"\n## 2. top eigenvalues (ours: ARPACK eigsh which='LA', tol={args.tol:g}; PyHessian: power "
        f"iteration, tol={args.tol:g}, maxIter={args.power_iters:d})"
    )
    results = {}
    for k in (1, 5):
        start = op.num_products
        t = time.perf_counter()
        ours = top_eigenpairs(op, k=k, tol=args.tol, seed=args.seed)
        t_ours = time.perf_counter() - t
        torch.manual_seed(args.seed)
        b.hvp_calls["n"] = 0
        t = time.perf_counter()
        ph_vals, ph_vecs = b.ph.eigenvalues(maxIter=args.power_iters, tol=args.tol, top_n=k)
        t_ph = time.perf_counter() - t
        results[k] = (ours, op.num_products - start, t_ours, ph_vals, ph_vecs, b.hvp_calls["n"], t_ph)
    pyhessian_tightening(b, args, results[1])
    # reference: our top-5 (ARPACK, largest algebraic), checked with fresh products (residuals), and
    # the most negative eigenvalue: what a magnitude-based method locks on to once |it| is larger
    ref = results[5][0]
    low = top_eigenpairs(op, k=1, tol=1e-2, seed=args.seed, which="SA")
    print(
        "reference = our top-5 (ARPACK LA): "
        + ", ".join(f"{lam:.5g}" for lam in ref.eigenvalues)
        + f" (its residuals: column 'resid' of the top-5 table); most negative eigenvalue (ARPACK SA, "
        f"{low.num_products} HVPs): {low.eigenvalues[0]:.5g}"
    )
    print("ok = within 1% of the reference eigenvalue of that rank (signed-correct)")
    for k in (1, 5):
        eig_table(b, k, results[k], ref)


def pyhessian_tightening(b: Bench, args: argparse.Namespace, top1: tuple) -> None:
    """PyHessian top-1 to the same accuracy: its power iteration at tightening tolerances until the residual
    ||Hv - lambda v|| <= tol * |lambda| that ours guarantees (its default rule bounds the change of lambda)."""
    op = b.op
    print(f"\nPyHessian top-1 at tightening power-iteration tolerances (residual target {args.tol:g}):")
    for ph_tol in (args.tol, args.tol / 10, args.tol / 100, args.tol / 1000):
        torch.manual_seed(args.seed)
        b.hvp_calls["n"] = 0
        vals, vecs_ph = b.ph.eigenvalues(maxIter=100, tol=ph_tol, top_n=1)
        r = residual(op, torch.cat([c.reshape(-1) for c in vecs_ph[0]]).to(op.dtype), float(vals[0]))
        print(
            f"  tol {ph_tol:g}: {b.hvp_calls['n']} HVPs, {float(vals[0]):.6g}, residual {r:.1e}"
            + ("  <- first to reach the target" if r <= args.tol else "")
        )
        if r <= args.tol:
            break
    ours1 = top1[0]
    print(
        f"  ours: {top1[1]} HVPs, {float(ours1.eigenvalues[0]):.6g}, residual "
        f"{residual(op, ours1.eigenvectors[0], float(ours1.eigenvalues[0])):.1e}"
    )


def eig_table(b: Bench, k: int, result: tuple, ref) -> None:
    """The top-k table: values, HVPs, seconds; per rank the residuals and whether each is signed-correct."""
    op = b.op
    ours, n_ours, t_ours, ph_vals, ph_vecs, n_ph, t_ph = result
    print(f"\n### top-{k}")
    print(f"{'':10s}{'HVPs':>8s}{'seconds':>10s}   eigenvalues")
    print(f"{'ours':10s}{n_ours:8d}{t_ours:10.1f}   " + ", ".join(f"{v:.5g}" for v in ours.eigenvalues))
    print(f"{'PyHessian':10s}{n_ph:8d}{t_ph:10.1f}   " + ", ".join(f"{v:.5g}" for v in ph_vals))
    print(
        f"{'rank':>6s}{'reference':>12s}{'ours':>12s}{'resid':>9s}{'ok':>5s}{'PyHessian':>12s}{'resid':>9s}{'ok':>5s}"
    )
    for i in range(k):
        lam = float(ref.eigenvalues[i])
        o = float(ours.eigenvalues[i])
        p = float(ph_vals[i])
        ro = residual(op, ours.eigenvectors[i], o)
        rp = residual(op, torch.cat([c.reshape(-1) for c in ph_vecs[i]]).to(op.dtype), p)
        ok_o = abs(o - lam) <= 1e-2 * abs(lam)
        ok_p = abs(p - lam) <= 1e-2 * abs(lam)
        print(
            f"{i + 1:6d}{lam:12.5g}{o:12.5g}{ro:9.1e}{'yes' if ok_o else 'NO':>5s}{p:12.5g}{rp:9.1e}"
            f"{'yes' if ok_p else 'NO':>5s}"
        )


def slq_section(b: Bench, args: argparse.Namespace) -> None:
    """3. our SLQ density and trace; how PyHessian's density() fails."""
    from zsq_probe.hessian import estimate_trace, slq_density, slq_trace

    op = b.op
    print(f"\n## 3. spectral density (SLQ, {args.slq_runs} run(s) x {args.slq_steps} Lanczos steps)")
    t = time.perf_counter()
    dens = slq_density(op, num_runs=args.slq_runs, num_steps=args.slq_steps, seed=args.seed)
    t_slq = time.perf_counter() - t
    tr = slq_trace(dens)
    print(
        f"ours: {dens.num_products} HVPs, {t_slq:.1f} s; nodes in [{dens.nodes.min():.4g}, "
        f"{dens.nodes.max():.4g}], weights sum {dens.weights.sum():.6f}; SLQ trace {tr.estimate:.5g}"
        + (f" +- {tr.stderr:.2g}" if np.isfinite(tr.stderr) else "")
    )
    n_hut = max(args.slq_steps, 10)
    hut = estimate_trace(op, "hutchinson", rtol=None, max_products=n_hut, min_samples=n_hut, seed=args.seed)
    print(f"ours: Hutchinson trace ({hut.num_vectors} vectors) {hut.estimate:.5g} +- {hut.stderr:.2g}")
    torch.manual_seed(args.seed)
    try:
        b.ph.density(iter=3, n_v=1)
        print("PyHessian density(): ran")
    except Exception as e:  # noqa: BLE001 - the point is to show how it fails
        frames = traceback.extract_tb(e.__traceback__)
        last = ([f for f in frames if "pyhessian" in f.filename] or frames)[-1]
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(
            f"PyHessian density(): FAILS with {type(e).__name__}: {msg} (at {os.path.basename(last.filename)}:"
            f"{last.lineno}: {last.line})"
        )


# ---------------------------------------------------------------------------------------------- 4. trace


def trace_section(args: argparse.Namespace) -> int:
    """4. the trace: resnet20_cifar10 beside other libraries, or the digits student (ours vs Hutchinson)."""
    device = torch.device(args.device)
    torch.set_num_threads(args.threads or 1)
    if args.model == "digits":
        return digits_trace(args, device)
    return resnet20_trace(args, device)


@dataclass
class Stochastic:
    """Our default (top-3 deflated, adaptive Hutch++) and the plain-Hutchinson reference on one operator."""

    ours: Any  # TraceInterval
    eig: Any  # Eigenpairs of the top-3 search
    products: int  # ours, the top-3 search included
    seconds: float  # ours, the top-3 search included
    ref: Any  # TraceInterval of the --reference-vectors Hutchinson samples
    ref_seconds: float
    ref_half: float  # t half-width (95 %) of the reference mean
    sd: float  # sd of the Hutchinson samples
    need: int  # Hutchinson products for the half-width ours reached
    need5: int  # Hutchinson products for +-5 %


def default_vs_hutchinson(op, args: argparse.Namespace, device: torch.device) -> Stochastic:
    from scipy.stats import t as student_t

    from zsq_probe.hessian import estimate_trace, top_eigenpairs

    c0, start = clock(device), op.num_products
    eig = top_eigenpairs(op, k=3, tol=1e-3, seed=args.seed)
    ours = estimate_trace(
        op, "hutch++", rtol=0.05, max_products=OURS_BUDGET, deflate=eig.eigenvectors, seed=args.seed + 11
    )
    products, seconds = op.num_products - start, clock(device) - c0
    c0, n = clock(device), args.reference_vectors
    ref = estimate_trace(op, "hutchinson", rtol=None, max_products=n, min_samples=n, seed=args.seed + 23)
    ref_seconds = clock(device) - c0
    sd = float(np.std(ref.samples, ddof=1))
    n_ref = len(ref.samples)
    ref_half = float(student_t.ppf(0.975, n_ref - 1)) * sd / math.sqrt(n_ref)
    need5 = math.ceil((1.96 * sd / (0.05 * abs(ref.estimate))) ** 2)
    need = math.ceil((1.96 * sd / ours.half_width) ** 2)  # for the half-width ours reached (<= 5 %)
    return Stochastic(ours, eig, products, seconds, ref, ref_seconds, ref_half, sd, need, need5)


def products_to_5(op, args: argparse.Namespace, st: Stochastic) -> str:
    """Products ours needs for +-5 %: its own when it stopped by tolerance, else a rerun with the
    --max-products-to-5 budget (not with --quick)."""
    from zsq_probe.hessian import estimate_trace

    if st.ours.stopped_by != "budget":
        return str(st.products)
    if args.quick:
        return f"> {st.products} (the budget stopped it; no rerun with --quick)"
    longer = estimate_trace(
        op, "hutch++", rtol=0.05, max_products=args.max_products_to_5, deflate=st.eig.eigenvectors,
        seed=args.seed + 11,
    )  # fmt: skip
    if longer.stopped_by == "tolerance":
        return str(st.eig.num_products + longer.num_products)
    return f"> {args.max_products_to_5}"


def print_to5(st: Stochastic, to5: str) -> None:
    print(
        f"      products to +-5 %: ours {to5} (top-3 search {st.eig.num_products} included), plain Hutchinson "
        f"{st.need5}; for the half-width ours reached Hutchinson needs {st.need} (ratio ours/Hutchinson "
        f"{st.products / st.need:.3f})"
    )
    print(
        f"      ours: +-{100 * st.ours.relative_half_width:.1f} %, stopped by {st.ours.stopped_by}; rank "
        f"{st.ours.rank}, {st.ours.num_vectors} complement samples (skewness {st.ours.skewness:.2f}); Hutchinson "
        f"samples skewness {st.ref.skewness:.2f}"
    )


# ------------------------------------------------------------------------- digits student


def digits_operators(args, device):
    """CE and KL operators of the embedded default's W3A3 GDFQ student after a 3-epoch run, on the probe
    batch of 200 the curvature probe would use at its last epoch (eval mode, straight-through surrogate)."""
    import tempfile

    from zsq_probe.hessian import HessianOperator
    from zsq_probe.presets import resolve_config
    from zsq_probe.probes.curvature import loss_functions
    from zsq_probe.runs.posthoc import open_run
    from zsq_probe.runs.training_run import train

    out = tempfile.mkdtemp(prefix="zsq-bench-digits-")
    cfg = resolve_config("gdfq", "digits", overrides=["epochs=3", f"seed={args.seed}"])
    train(cfg, f"{out}/run", progress=False)
    run, ctx = open_run(f"{out}/run", device=str(device))
    epoch = ctx.checkpoint_epochs[-1]
    ctx.load_checkpoint(epoch)
    batch = ctx.probe_batch(epoch, 200)
    ops = {}
    for loss, (fn, target_name) in loss_functions(ctx.cfg).items():
        ops[loss] = (
            HessianOperator(ctx.student, fn, [(batch.inputs, getattr(batch, target_name))], mode="eval"),
            (ctx.student, batch, ctx.cfg),
        )
    return ops, f"digits GDFQ W3A3 student after 3 epochs ({run.path}), probe batch 200"


def digits_exact(loss: str, extra: tuple) -> tuple[float, str]:
    """The exact (Gauss-Newton diagonal) trace of the digits student, or NaN and why it was refused."""
    from zsq_probe.probes.curvature import exact_trace_or_reason

    student, batch, cfg = extra
    result = exact_trace_or_reason(student, loss, batch, cfg)
    if isinstance(result, str):
        return float("nan"), result
    return result.trace, ""


def digits_trace(args: argparse.Namespace, device: torch.device) -> int:
    """Products to a +-5 % trace on the digits student: our default vs plain Hutchinson (and --exact)."""
    ops, what = digits_operators(args, device)
    print(f"\n## 4. trace to +-5 % (95 % interval): {what}")
    print(
        f"# machine: {platform.machine()} {os.cpu_count()} CPU cores, torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}, device {device}"
    )
    print(
        "# ours = the probe's default: top-3 eigenvectors (ARPACK tol 1e-3) deflate Hutch++ (sketch 20), adaptive "
        "to rtol 0.05, budget 400; its products include the eigenvector search"
    )
    print(
        f"# Hutchinson: products needed for the half-width ours reached = (1.96 sd / half-width)^2 (and for "
        f"+-5 %), sd from {args.reference_vectors} samples whose mean is the reference trace"
    )
    check = "covers" if args.exact else "overlaps"  # with an exact trace: coverage; else two intervals overlap
    print(
        f"{'loss':5s}{'reference':>12s}{'+-95%':>9s}{'exact':>10s}{'ours':>10s}{'ours 95% interval':>22s}"
        f"{check:>9s}{'ours prod':>10s}{'Hutch. prod':>12s}{'ratio':>8s}{'s/prod':>8s}"
    )
    ok = True
    for loss, (op, extra) in ops.items():
        st = default_vs_hutchinson(op, args, device)
        exact, why = digits_exact(loss, extra) if args.exact else (float("nan"), "")
        ok &= digits_row(loss, st, exact)
        if why:
            print(f"      no exact {loss} trace: {why}")
        print_to5(st, products_to_5(op, args, st))
        op.close()
    print(
        f"target: ours {check} the reference ({'the exact trace' if check == 'covers' else 'its interval'}) and "
        f"ratio <= 0.25"
    )
    return 0 if ok else 1


def digits_row(loss: str, st: Stochastic, exact: float) -> bool:
    """One row of the digits table; whether ours covers the truth and spends <= 1/4 of Hutchinson's products."""
    ours, ref = st.ours, st.ref
    low, high = (exact, exact) if math.isfinite(exact) else (ref.estimate - st.ref_half, ref.estimate + st.ref_half)
    covers = ours.ci_low <= high and low <= ours.ci_high
    print(
        f"{loss:5s}{ref.estimate:12.5g}{st.ref_half:9.3g}{exact:10.5g}{ours.estimate:10.5g}"
        f"{f'[{ours.ci_low:.5g}, {ours.ci_high:.5g}]':>22s}{'yes' if covers else 'NO':>9s}{st.products:10d}"
        f"{st.need:12d}{st.products / st.need:8.3f}{st.seconds / st.products:8.3f}"
    )
    return covers and st.products <= st.need / 4


# ------------------------------------------------------------------------- resnet20 beside other libraries


@dataclass
class Problem:
    """One batch of resnet20_cifar10: inputs, labels (CE) and stand-in teacher logits (KL*T^2)."""

    model: nn.Module
    source: str
    x: torch.Tensor
    y: torch.Tensor
    t_logits: torch.Tensor
    data: str
    device: torch.device

    def target(self, loss: str) -> torch.Tensor:
        return self.y if loss == "ce" else self.t_logits


@dataclass
class Row:
    """A row of a trace table: a method's products, seconds, trace and 95 % interval (None: a point)."""

    method: str
    products: str = "-"
    seconds: float = float("nan")
    trace: float = float("nan")
    low: float | None = None
    high: float | None = None
    note: str = ""


class LossModule(nn.Module):
    """A loss function as curvlinops wants it: a module with ``reduction`` ("mean": for one batch its normaliser
    batch / N is 1, so the operator is the Hessian of ``fn`` on the batch, as ours)."""

    reduction = "mean"

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.fn(logits, target)


class Renamed(nn.Module):
    """pytorchcv's ResNet with its ``output`` Linear registered as ``classifier`` (same parameters, same forward):
    BackPACK keeps each module's result in a ``.output`` attribute and torch.fx names its graph's result node
    ``output``, so with the original name its converter fails ("module Linear ... with target output has
    parameters and is used 2 times").  ``scale``: BackPACK's ScaleModule(1/T) for the KL term."""

    def __init__(self, net: nn.Module, scale: nn.Module | None = None):
        super().__init__()
        self.features = net.features
        self.classifier = net.output
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.features(x), 1)  # pytorchcv's x.view(x.size(0), -1): the converter keeps view
        x = self.classifier(x)  # as a call_method node and DiagGGNExact then fails on a shape check
        return x if self.scale is None else self.scale(x)


def failure(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg[:200]}"


def optional_import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def cifar_batch(args: argparse.Namespace, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, str]:
    """--batch-size CIFAR-10 test images chosen by a seeded randperm (never the first N: some copies are
    ordered by class), with their labels."""
    from zsq_probe.data.datasets import load_dataset

    ds = load_dataset("cifar10", args.data_root, "test")
    if args.batch_size > len(ds):
        raise SystemExit(f"--batch-size {args.batch_size} > {len(ds)} test images in {args.data_root}")
    idx = torch.randperm(len(ds), generator=g)[: args.batch_size].tolist()
    items = [ds[i] for i in idx]
    x = torch.stack([image for image, _ in items])
    y = torch.tensor([int(label) for _, label in items])
    spec = getattr(ds, "spec", None)
    what = (
        f"{args.batch_size} CIFAR-10 test images from {args.data_root} (torch.randperm, seed {args.seed}; "
        f"{len(set(y.tolist()))} classes; normalisation {getattr(spec, 'normalization', '?')}) with their labels"
    )
    return x, y, what


def resnet20_problem(args: argparse.Namespace, device: torch.device) -> Problem:
    model, source = load_model(device, args.weights)
    g = torch.Generator().manual_seed(args.seed)
    if args.data_root:
        x, y, data = cifar_batch(args, g)
    else:  # the same draws as sections 1-3
        x = torch.randn(args.batch_size, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (args.batch_size,), generator=g)
        data = f"{args.batch_size} random N(0,1) images with random labels"
    x, y = x.to(device), y.to(device)
    with torch.no_grad():  # a stand-in teacher: the model's own logits plus N(0, 0.5) noise
        t_logits = model(x) + 0.5 * torch.randn(args.batch_size, 10, generator=g).to(device)
    return Problem(model, source, x, y, t_logits, data, device)


def resnet20_header(args: argparse.Namespace, p: Problem, libs: dict[str, Any]) -> None:
    def ver(dist: str) -> str:
        try:
            return f"{dist} {version(dist)}"
        except PackageNotFoundError:
            return f"{dist} not installed"

    print(f"\n## 4. Hessian trace of pytorchcv resnet20_cifar10: ours beside {', '.join(LIBRARIES.values())}")
    print(
        f"# machine: {platform.machine()} {os.cpu_count()} CPU cores, torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}, device {p.device}; " + ", ".join(ver(d) for d in LIBRARIES.values())
    )
    print(f"# weights: {p.source}" + ("  <- NOT a trained teacher" if "random init" in p.source else ""))
    print(f"# data: {p.data}")
    if not args.data_root:
        print(
            "# NOTE: random N(0,1) images with random labels (no --data-root): these numbers are NOT the ones "
            "docs/benchmarks.md quotes"
        )
    print(
        f"# losses: CE to the labels; KL*T^2 to the model's own logits plus N(0, 0.5) noise at T = {TEMPERATURE:g} "
        f"(the trainer's KL term: KLDivLoss mean x T^2); all {sum(q.numel() for q in p.model.parameters())} parameters"
    )
    print(
        f"# products: HVP = Hessian-vector products, VJP = per-sample vector-Jacobian products; seconds: "
        f"{'CPU (process_time)' if p.device.type == 'cpu' else 'wall (synchronised)'}; interval: 95 %; "
        f"covers: whether it holds the exact trace ('-': a point); rel.err: against the exact trace"
    )


def resnet20_trace(args: argparse.Namespace, device: torch.device) -> int:
    import warnings

    # known and harmless here: PyHessian's backward(create_graph=True) (its .grad is reset after each loss),
    # BackPACK's full backward hooks on modules whose inputs need no gradient, deprecations inside the libraries
    for text in ("Using backward\\(\\) with create_graph=True", "Full backward hook is firing"):
        warnings.filterwarnings("ignore", message=text, category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    p = resnet20_problem(args, device)
    libs = {name: optional_import(name) for name in LIBRARIES}
    resnet20_header(args, p, libs)
    ok = True
    for loss in ("ce", "kl"):
        ok &= resnet20_loss_table(p, loss, args, libs)
    print(
        "target: ours Hutch++ covers the exact trace (without --exact: overlaps the Hutchinson reference), and with "
        "--exact and BackPACK installed, ours/BackPACK time <= 1.0 for the exact diagonal"
    )
    return 0 if ok else 1


def resnet20_loss_table(p: Problem, loss: str, args: argparse.Namespace, libs: dict[str, Any]) -> bool:
    """Every method on one loss; prints the table and the ratios; whether ours met the target."""
    from zsq_probe.hessian import HessianOperator
    from zsq_probe.quantization.losses import loss_function

    fn = loss_function(loss, TEMPERATURE)
    clear_grads(p.model)
    c0 = clock(p.device)
    with HessianOperator(p.model, fn, [(p.x, p.target(loss))]) as op:
        build = clock(p.device) - c0
        objs, missing = library_operators(p, loss, fn, libs)
        hvp_rows, hvp_secs = interleaved_hvps(p, op, objs, missing, args, build)
        exact_rows, exact_secs = exact_comparison(p, loss, args, libs) if args.exact else ([], {})
        st = default_vs_hutchinson(op, args, p.device)
        to5 = products_to_5(op, args, st)
    lib_rows = library_traces(p, objs, missing, st, args)
    objs.clear()
    clear_grads(p.model)  # PyHessian leaves a graph in .grad
    exact = exact_rows[0].trace if exact_rows else float("nan")
    rows = [auto_row(p, exact_rows, st), *exact_rows, *stochastic_rows(st), *lib_rows, *hvp_rows]
    name = "CE" if loss == "ce" else f"KL*T^2 (T = {TEMPERATURE:g})"
    print_trace_table(f"{name}, batch {p.x.shape[0]}", rows, exact, st)
    if "ours" in exact_secs and "backpack" in exact_secs:
        print(
            f"      exact diagonal, ours/BackPACK time = {exact_secs['ours'] / exact_secs['backpack']:.3f} (median of "
            f"{args.exact_repeats} interleaved runs: ours {exact_secs['ours']:.3f} s, BackPACK "
            f"{exact_secs['backpack']:.3f} s)"
        )
    others = [k for k in hvp_secs if k != "ours"]
    if others:
        print(
            "      seconds per HVP, ours/"
            + ", ours/".join(f"{k} = {hvp_secs['ours'] / hvp_secs[k]:.3f}" for k in others)
            + f" (median of {args.hvp_repeats} interleaved)"
        )
    print_to5(st, to5)
    low, high = (
        (exact, exact) if math.isfinite(exact) else (st.ref.estimate - st.ref_half, st.ref.estimate + st.ref_half)
    )
    covers = st.ours.ci_low <= high and low <= st.ours.ci_high
    # issue 33's targets: the default's estimate covers the exact trace, and the exact diagonal costs no more than
    # BackPACK's (the old "<= 1/4 of Hutchinson's products" held on the digits student only: 0.34 / 0.16 here)
    as_fast = "ours" not in exact_secs or "backpack" not in exact_secs or exact_secs["ours"] <= exact_secs["backpack"]
    return covers and as_fast


def clear_grads(model: nn.Module) -> None:
    for q in model.parameters():
        q.grad = None


def library_operators(p: Problem, loss: str, fn, libs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """curvlinops' HessianLinearOperator and PyHessian's hessian object on the batch (with their build seconds
    under "<name>_build"), and why a library has none."""
    objs: dict[str, Any] = {}
    missing: dict[str, str] = {}
    target = p.target(loss)
    if libs["curvlinops"] is None:
        missing["curvlinops"] = INSTALL_HINT
    else:
        params = [q for q in p.model.parameters() if q.requires_grad]
        c0 = clock(p.device)
        try:
            objs["curvlinops"] = libs["curvlinops"].HessianLinearOperator(
                p.model, LossModule(fn), params, [(p.x, target)], check_deterministic=False
            )
            objs["curvlinops_build"] = clock(p.device) - c0
        except Exception as e:  # noqa: BLE001 - a library that fails here gets a row saying why
            missing["curvlinops"] = failure(e)
    if libs["pyhessian"] is None:
        missing["pyhessian"] = INSTALL_HINT
    else:
        c0 = clock(p.device)  # its constructor: forward and the gradient graph (create_graph=True)
        objs["pyhessian"] = libs["pyhessian"].hessian(p.model, fn, data=(p.x, target), cuda=p.device.type == "cuda")
        objs["pyhessian_build"] = clock(p.device) - c0
    return objs, missing


def hvp_functions(op, objs: dict[str, Any]) -> dict[str, Any]:
    """name -> flat vector -> flat Hessian-vector product, for ours and each library that has an operator."""
    products = {"ours": op.matvec}
    if "curvlinops" in objs:
        cl = objs["curvlinops"]
        products["curvlinops"] = lambda v: cl @ v
    if "pyhessian" in objs:
        ph = objs["pyhessian"]
        ph_hvp = sys.modules["pyhessian.hessian"].hessian_vector_product
        sizes = [q.numel() for q in ph.params]

        def ph_product(v: torch.Tensor) -> torch.Tensor:
            parts = [c.view_as(q) for c, q in zip(v.split(sizes), ph.params)]
            return torch.cat([h.reshape(-1) for h in ph_hvp(ph.gradsH, ph.params, parts)])

        products["pyhessian"] = ph_product
    return products


def interleaved(runs: dict[str, Any], repeats: int, device: torch.device) -> tuple[dict[str, float], dict[str, list]]:
    """Each run (round index -> result) ``repeats`` times, in an order that rotates every round: the median
    seconds of each and its results."""
    names = list(runs)
    secs: dict[str, list[float]] = {n: [] for n in names}
    out: dict[str, list] = {n: [] for n in names}
    for i in range(repeats):
        for n in names[i % len(names) :] + names[: i % len(names)]:
            c0 = clock(device)
            out[n].append(runs[n](i))
            secs[n].append(clock(device) - c0)
    return {n: statistics.median(s) for n, s in secs.items()}, out


def interleaved_hvps(
    p: Problem, op, objs: dict[str, Any], missing: dict[str, str], args: argparse.Namespace, build: float
) -> tuple[list[Row], dict[str, float]]:
    """Rows of seconds per HVP (ours, curvlinops, PyHessian; interleaved) with each product's relative
    difference to ours, and the medians."""
    products = hvp_functions(op, objs)
    gen = torch.Generator().manual_seed(1)
    vecs = [torch.randn(op.dim, generator=gen).to(p.device) for _ in range(args.hvp_repeats + 1)]
    for f in products.values():
        f(vecs[0])  # warm-up
    secs, out = interleaved(
        {n: (lambda i, f=f: f(vecs[i + 1])) for n, f in products.items()}, args.hvp_repeats, p.device
    )
    labels = {
        "ours": "ours HessianOperator",
        "curvlinops": "curvlinops HessianLinearOperator",
        "pyhessian": "PyHessian hessian_vector_product",
    }
    rows = []
    for n, label in labels.items():
        if n not in products:
            rows.append(Row(f"{label} (HVP)", note=missing.get(n, "")))
            continue
        diff = max(float((a - b).norm() / b.norm()) for a, b in zip(out[n], out["ours"]))
        b = build if n == "ours" else objs.get(f"{n}_build", float("nan"))
        note = f"s per HVP; build {b:.3f} s" + ("" if n == "ours" else f"; rel. diff to ours {diff:.1e}")
        rows.append(Row(f"{label} (HVP)", "1 HVP", secs[n], note=note))
    return rows, secs


def backpack_runner(p: Problem, loss: str, bp) -> tuple[Any, str]:
    """(a function: round -> BackPACK's DiagGGNExact trace of the loss on the batch, a note) or (None, why not).
    On a deep copy: in-place ReLUs off (BackPACK's hooks forbid modifying their outputs in place), the ``output``
    Linear renamed (:class:`Renamed`), converted by BackPACK's torch.fx converter (residual sums).  KL*T^2 is
    (T^2 / C) x CE(logits / T, softmax(teacher / T)) up to a constant: a ScaleModule(1/T) and that factor."""
    if bp is None:
        return None, INSTALL_HINT
    from backpack.custom_module.scale_module import ScaleModule
    from backpack.extensions import DiagGGNExact

    net = copy.deepcopy(p.model)
    for m in net.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    c0 = clock(p.device)
    try:
        model = bp.extend(Renamed(net, ScaleModule(1.0 / TEMPERATURE) if loss == "kl" else None), use_converter=True)
    except Exception as e:  # noqa: BLE001 - the failure is the row
        return None, f"extend(use_converter=True) failed: {failure(e)}"
    build = clock(p.device) - c0
    crit = bp.extend(nn.CrossEntropyLoss())
    target, factor = p.y, 1.0
    if loss == "kl":
        target, factor = torch.softmax(p.t_logits / TEMPERATURE, dim=1), TEMPERATURE**2 / p.t_logits.shape[1]

    def run(_: int) -> float:
        model.zero_grad()
        value = crit(model(p.x), target)
        with bp.backpack(DiagGGNExact()):
            value.backward()
        return factor * sum(float(q.diag_ggn_exact.sum(dtype=torch.float64)) for q in model.parameters())

    return run, f"Renamed + extend(use_converter=True), {build:.2f} s"


def backpack_without_converter(p: Problem, bp) -> str:
    """What DiagGGNExact does on the ResNet without BackPACK's converter: nn.Sequential(features, Flatten,
    Linear) of a copy with in-place ReLUs off."""
    from backpack.extensions import DiagGGNExact

    net = copy.deepcopy(p.model)
    for m in net.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    try:
        seq = bp.extend(nn.Sequential(net.features, nn.Flatten(), net.output))
        value = bp.extend(nn.CrossEntropyLoss())(seq(p.x), p.y)
        with bp.backpack(DiagGGNExact()):
            value.backward()
    except Exception as e:  # noqa: BLE001 - the failure is the finding
        text = failure(e)
        if " Module: " in text:  # BackPACK names the module by its whole repr: keep its class
            head, tail = text.split(" Module: ", 1)
            text = f"{head} (at {tail.split('(')[0]})"
        return f"without the converter (residual sums are no BackPACK modules): {text}"
    trace = sum(float(q.diag_ggn_exact.sum(dtype=torch.float64)) for q in seq.parameters())
    return f"without the converter it runs: trace {trace:.6g}"


def exact_comparison(
    p: Problem, loss: str, args: argparse.Namespace, libs: dict[str, Any]
) -> tuple[list[Row], dict[str, float]]:
    """Ours (exact_trace, method ggn) and BackPACK's DiagGGNExact, interleaved: rows and median seconds."""
    from zsq_probe.hessian import exact_trace

    target = p.target(loss)
    runs: dict[str, Any] = {
        "ours": lambda i: exact_trace(p.model, loss, p.x, target, method="ggn", temperature=TEMPERATURE)
    }
    runs["ours"](-1)  # warm-up, as BackPACK's first run below
    bp_run, bp_note = backpack_runner(p, loss, libs["backpack"])
    if bp_run is not None:
        try:
            bp_run(-1)  # a first run (warm-up): a failure is the row
            runs["backpack"] = bp_run
        except Exception as e:  # noqa: BLE001 - the failure is the row
            bp_run, bp_note = None, f"DiagGGNExact failed: {failure(e)}"
    secs, out = interleaved(runs, max(1, args.exact_repeats), p.device)
    ex = out["ours"][-1]
    rows = [
        Row(
            "ours exact (GGN diagonal)",
            f"{ex.num_products} VJP",
            secs["ours"],
            ex.trace,
            note=f"exact={ex.exact}; N x (C - 1) products; median of {len(out['ours'])}",
        )
    ]
    if bp_run is None:
        rows.append(Row("BackPACK DiagGGNExact", note=bp_note))
        return rows, secs
    if loss == "ce":  # once: what happens without the converter
        bp_note += "; " + backpack_without_converter(p, libs["backpack"])
    n, c = p.t_logits.shape
    rows.append(Row("BackPACK DiagGGNExact", f"{n * c} VJP", secs["backpack"], out["backpack"][-1], note=bp_note))
    return rows, secs


def library_traces(
    p: Problem, objs: dict[str, Any], missing: dict[str, str], st: Stochastic, args: argparse.Namespace
) -> list[Row]:
    """curvlinops' hutchpp_trace and xtrace (the products ours spent; at most 60 with --quick) and PyHessian's
    trace() (maxIter 100, 30 with --quick; tol 1e-3) with a t interval from its samples."""
    from scipy.stats import t as student_t

    rows = []
    budget = min(st.products, 60) if args.quick else st.products
    if "curvlinops" in objs:
        cl = sys.modules["curvlinops"]
        for name, n in (("hutchpp_trace", 3 * max(1, round(budget / 3))), ("xtrace", 2 * max(1, budget // 2))):
            f = getattr(cl, name, None)
            if f is None:
                rows.append(Row(f"curvlinops {name}", note=f"not in curvlinops {version('curvlinops-for-pytorch')}"))
                continue
            torch.manual_seed(args.seed)
            c0 = clock(p.device)
            value = float(f(objs["curvlinops"], n))
            rows.append(Row(f"curvlinops {name}", f"{n} HVP", clock(p.device) - c0, value, note="point estimate"))
    else:
        rows.append(Row("curvlinops hutchpp_trace / xtrace", note=missing["curvlinops"]))
    if "pyhessian" not in objs:
        return [*rows, Row("PyHessian trace()", note=missing["pyhessian"])]
    max_iter = 30 if args.quick else 100
    torch.manual_seed(args.seed)
    c0 = clock(p.device)
    samples = objs["pyhessian"].trace(maxIter=max_iter, tol=1e-3)
    seconds, n = clock(p.device) - c0, len(samples)
    mean = float(np.mean(samples))
    half = float(student_t.ppf(0.975, n - 1)) * float(np.std(samples, ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    stop = "hit maxIter" if n == max_iter else "its tol rule"
    if 1 < n < max_iter and float(np.mean(samples[:-1])) < 0:  # |change| / (mean + 1e-6) < tol: always, if mean < 0
        stop = "its tol rule divides by the signed running mean: negative, so it stopped at once"
    note = f"maxIter {max_iter}, tol 1e-3 ({stop}); t interval from its samples"
    return [*rows, Row("PyHessian trace()", f"{n} HVP", seconds, mean, mean - half, mean + half, note=note)]


def stochastic_rows(st: Stochastic) -> list[Row]:
    """Ours Hutch++ (default), the plain-Hutchinson reference and the products Hutchinson needs for +-5 %."""
    ours, ref = st.ours, st.ref
    n = len(ref.samples)
    return [
        Row(
            "ours Hutch++ (default: top-3 deflated)",
            f"{st.products} HVP",
            st.seconds,
            ours.estimate,
            ours.ci_low,
            ours.ci_high,
            f"+-{100 * ours.relative_half_width:.1f} %, stopped by {ours.stopped_by}; top-3 search "
            f"{st.eig.num_products} incl.",
        ),
        Row(
            f"plain Hutchinson, {n} samples",
            f"{n} HVP",
            st.ref_seconds,
            ref.estimate,
            ref.estimate - st.ref_half,
            ref.estimate + st.ref_half,
            "the reference; t interval",
        ),
        Row(
            "plain Hutchinson to +-5 % (projected)",
            f"{st.need5} HVP" if st.need5 < 10**6 else f"{st.need5:.1e} HVP",
            st.need5 * st.ref_seconds / n,
            note=f"(1.96 sd / (0.05 |mean|))^2, sd {st.sd:.4g} from the {n} samples",
        ),
    ]


def auto_row(p: Problem, exact_rows: list[Row], st: Stochastic) -> Row:
    """What trace_estimators "auto" picks (zsq_probe.probes.curvature.auto_choice's rule): the exact trace where
    batch x (classes - 1) <= EXACT_PRODUCTS_PER_BUDGET x the budget, else Hutch++ (the numbers of that row)."""
    from zsq_probe.probes.curvature import EXACT_PRODUCTS_PER_BUDGET

    n, c = p.t_logits.shape
    c -= 1  # the output Hessian's rank: the products the exact diagonal runs per sample
    limit = EXACT_PRODUCTS_PER_BUDGET * OURS_BUDGET
    rule = f"{n} x {c} = {n * c} {'<=' if n * c <= limit else '>'} {EXACT_PRODUCTS_PER_BUDGET} x {OURS_BUDGET}"
    if n * c > limit:
        hutchpp = stochastic_rows(st)[0]
        return Row("ours auto -> hutch++", hutchpp.products, hutchpp.seconds, hutchpp.trace, hutchpp.low,
                   hutchpp.high, f"{rule}; the Hutch++ row's run")  # fmt: skip
    if not exact_rows:
        return Row("ours auto -> exact", note=f"{rule}; not run without --exact")
    ex = exact_rows[0]
    return Row("ours auto -> exact", ex.products, ex.seconds, ex.trace, note=f"{rule}; the exact row's run")


def print_trace_table(title: str, rows: list[Row], exact: float, st: Stochastic) -> None:
    """The table: one line per row; ``covers`` against the exact trace (without one: ``overlaps`` the
    Hutchinson reference interval)."""
    have_exact = math.isfinite(exact)
    ref_low, ref_high = st.ref.estimate - st.ref_half, st.ref.estimate + st.ref_half
    check = "covers" if have_exact else "overlaps"
    print(
        f"\n### {title}" + ("" if have_exact else " (no --exact: the check is overlap with the Hutchinson reference)")
    )
    print(
        f"{'method':42s}{'products':>10s}{'seconds':>9s}{'trace':>12s}{'95 % interval':>26s}{check:>9s}"
        f"{'rel.err':>9s}  note"
    )
    for r in rows:
        sec = "-" if not math.isfinite(r.seconds) else f"{r.seconds:.3f}" if r.seconds < 1e4 else f"{r.seconds:.1e}"
        trace = f"{r.trace:.6g}" if math.isfinite(r.trace) else "-"
        interval, verdict = "-", "-"
        if r.low is not None and r.high is not None and math.isfinite(r.low):
            interval = f"[{r.low:.6g}, {r.high:.6g}]"
            lo, hi = (exact, exact) if have_exact else (ref_low, ref_high)
            verdict = check if r.low <= hi and lo <= r.high else "NO"
        err = f"{(r.trace - exact) / abs(exact):+.1e}" if have_exact and math.isfinite(r.trace) else "-"
        print(f"{r.method:42s}{r.products:>10s}{sec:>9s}{trace:>12s}{interval:>26s}{verdict:>9s}{err:>9s}  {r.note}")


if __name__ == "__main__":
    sys.exit(main())
