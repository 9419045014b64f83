"""zsq_probe.hessian vs PyHessian 0.1 on pytorchcv resnet20_cifar10, one random batch, CE loss.

Prints, side by side in one run:
  1. seconds per Hessian-vector product (median over interleaved repeats), ours vs PyHessian;
  2. top-1 and top-5 eigenvalues: ours (ARPACK, largest algebraic) vs PyHessian's power
     iteration (``eigenvalues(top_n=...)``, which converges to the largest *magnitude*), with
     HVPs used, residuals ||Hv - lambda v|| / |lambda| and whether each value is signed-correct
     (equal to the k-th largest algebraic eigenvalue);
  3. our SLQ density and trace, while PyHessian's ``density()`` fails on torch 2 (torch.eig).

    python benchmarks/hessian.py [--device cuda] [--batch-size 64] [--quick]

Weights: ``~/.torch/models/resnet20_cifar10-*.pth`` when present (never downloaded), else the
random initialisation (pretrained=False).
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import statistics
import sys
import time
import traceback

import numpy as np
import torch
import torch.nn.functional as F


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_model(device: torch.device):
    from pytorchcv.model_provider import get_model

    model = get_model("resnet20_cifar10", pretrained=False)
    files = sorted(glob.glob(os.path.expanduser("~/.torch/models/resnet20_cifar10-*.pth")))
    source = "random init (pretrained=False)"
    if files:
        model.load_state_dict(torch.load(files[-1], map_location="cpu", weights_only=True))
        source = files[-1]
    return model.to(device).eval(), source


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hvp-repeats", type=int, default=8, help="timed HVPs per library (interleaved)")
    ap.add_argument("--tol", type=float, default=1e-3,
                    help="relative tolerance: ARPACK tol for ours, PyHessian's power-iteration tol")
    ap.add_argument("--power-iters", type=int, default=20,
                    help="PyHessian eigenvalues(maxIter=...) per eigenvalue (its default 100; 20 keeps the "
                         "run to a few minutes on a 2-core CPU)")
    ap.add_argument("--slq-steps", type=int, default=20)
    ap.add_argument("--slq-runs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    ap.add_argument("--sections", default="hvp,eig,slq", help="comma list of hvp, eig, slq")
    ap.add_argument("--quick", action="store_true", help="fewer repeats and iterations (smoke run)")
    args = ap.parse_args(argv)
    sections = {x.strip() for x in args.sections.split(",") if x.strip()}
    if not sections <= {"hvp", "eig", "slq"}:
        ap.error(f"unknown section(s): {sorted(sections - {'hvp', 'eig', 'slq'})}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.hvp_repeats, args.power_iters, args.slq_steps = 3, 10, 8

    import pyhessian

    ph_mod = sys.modules["pyhessian.hessian"]  # the attribute pyhessian.hessian is the class

    from zsq_probe.hessian import HessianOperator, hutchinson_trace, slq_density, slq_trace, top_eigenpairs

    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    model, source = load_model(device)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch_size, 3, 32, 32, generator=g).to(device)
    y = torch.randint(0, 10, (args.batch_size,), generator=g).to(device)
    crit = torch.nn.CrossEntropyLoss()

    print(f"# machine: {platform.machine()} {os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    print(f"# model: pytorchcv resnet20_cifar10, weights: {source}; batch {args.batch_size} random N(0,1) "
          f"images, random labels, CE loss")

    # -- build both ------------------------------------------------------------------
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

    def ph_list(flat: torch.Tensor) -> list[torch.Tensor]:
        return [c.view_as(p) for c, p in zip(flat.split([p.numel() for p in ph.params]), ph.params)]

    # -- 1. seconds per HVP --------------------------------------------------------
    if "hvp" in sections:
        gen = torch.Generator().manual_seed(1)
        vecs = [torch.randn(op.dim, generator=gen).to(device) for _ in range(args.hvp_repeats + 1)]
        op.matvec(vecs[0])
        ph_hvp(ph.gradsH, ph.params, ph_list(vecs[0]))  # warm-up both
        ours_t, ph_t, ours_cpu, ph_cpu, max_diff = [], [], [], [], 0.0

        def time_ours(v):
            sync(device)
            t, c = time.perf_counter(), time.process_time()
            hv = op.matvec(v)
            sync(device)
            ours_t.append(time.perf_counter() - t)
            ours_cpu.append(time.process_time() - c)
            return hv

        def time_ph(v):
            sync(device)
            t, c = time.perf_counter(), time.process_time()
            hv = ph_hvp(ph.gradsH, ph.params, ph_list(v))
            sync(device)
            ph_t.append(time.perf_counter() - t)
            ph_cpu.append(time.process_time() - c)
            return torch.cat([h.reshape(-1) for h in hv])

        for i, v in enumerate(vecs[1:]):  # ABBA order: neither library always runs first
            if i % 2 == 0:
                a, b = time_ours(v), time_ph(v)
            else:
                b, a = time_ph(v), time_ours(v)
            max_diff = max(max_diff, float((a - b).norm() / b.norm()))
        mo, mp = statistics.median(ours_t), statistics.median(ph_t)
        print("\n## 1. Hessian-vector product (median of %d interleaved)" % len(ours_t))
        print(f"{'':28s}{'ours':>12s}{'PyHessian':>12s}")
        print(f"{'build (forward+grad graph) s':28s}{t_ours_build:12.3f}{t_ph_build:12.3f}")
        print(f"{'seconds per HVP (median)':28s}{mo:12.4f}{mp:12.4f}")
        print(f"{'seconds per HVP (min)':28s}{min(ours_t):12.4f}{min(ph_t):12.4f}")
        print(f"{'CPU seconds per HVP (median)':28s}{statistics.median(ours_cpu):12.4f}{statistics.median(ph_cpu):12.4f}")
        print(f"ratio ours/PyHessian = {mo / mp:.3f} (median wall), {min(ours_t) / min(ph_t):.3f} (min wall), "
              f"{statistics.median(ours_cpu) / statistics.median(ph_cpu):.3f} (median CPU), target <= 0.9; "
              f"relative difference of the products {max_diff:.1e}")

    # -- 2. top eigenvalues ----------------------------------------------------------
    if "eig" in sections:
        def residual(vec: torch.Tensor, lam: float) -> float:
            hv = op.matvec(vec)
            return float((hv - lam * vec).norm() / (abs(lam) * vec.norm()))

        print("\n## 2. top eigenvalues (ours: ARPACK eigsh which='LA', tol=%g; PyHessian: power iteration, "
              "tol=%g, maxIter=%d)" % (args.tol, args.tol, args.power_iters))
        results = {}
        for k in (1, 5):
            start = op.num_products
            t = time.perf_counter()
            ours = top_eigenpairs(op, k=k, tol=args.tol, seed=args.seed)
            t_ours = time.perf_counter() - t
            torch.manual_seed(args.seed)
            hvp_calls["n"] = 0
            t = time.perf_counter()
            ph_vals, ph_vecs = ph.eigenvalues(maxIter=args.power_iters, tol=args.tol, top_n=k)
            t_ph = time.perf_counter() - t
            results[k] = (ours, op.num_products - start, t_ours, ph_vals, ph_vecs, hvp_calls["n"], t_ph)

        # reference: our top-5 (ARPACK, largest algebraic), checked with fresh products (residuals), and
        # the most negative eigenvalue: what a magnitude-based method locks on to once |it| is larger
        ref = results[5][0]
        low = top_eigenpairs(op, k=1, tol=1e-2, seed=args.seed, which="SA")
        print("reference = our top-5 (ARPACK LA): " + ", ".join(f"{lam:.5g}" for lam in ref.eigenvalues)
              + f" (its residuals: column 'resid' of the top-5 table); most negative eigenvalue (ARPACK SA, "
              f"{low.num_products} HVPs): {low.eigenvalues[0]:.5g}")
        print("ok = within 1% of the reference eigenvalue of that rank (signed-correct)")
        for k in (1, 5):
            ours, n_ours, t_ours, ph_vals, ph_vecs, n_ph, t_ph = results[k]
            print(f"\n### top-{k}")
            print(f"{'':10s}{'HVPs':>8s}{'seconds':>10s}   eigenvalues")
            print(f"{'ours':10s}{n_ours:8d}{t_ours:10.1f}   " + ", ".join(f"{v:.5g}" for v in ours.eigenvalues))
            print(f"{'PyHessian':10s}{n_ph:8d}{t_ph:10.1f}   " + ", ".join(f"{v:.5g}" for v in ph_vals))
            print(f"{'rank':>6s}{'reference':>12s}{'ours':>12s}{'resid':>9s}{'ok':>5s}{'PyHessian':>12s}"
                  f"{'resid':>9s}{'ok':>5s}")
            for i in range(k):
                lam = float(ref.eigenvalues[i])
                o = float(ours.eigenvalues[i])
                p = float(ph_vals[i])
                ro = residual(ours.eigenvectors[i], o)
                rp = residual(torch.cat([c.reshape(-1) for c in ph_vecs[i]]).to(op.dtype), p)
                ok_o = abs(o - lam) <= 1e-2 * abs(lam)
                ok_p = abs(p - lam) <= 1e-2 * abs(lam)
                print(f"{i + 1:6d}{lam:12.5g}{o:12.5g}{ro:9.1e}{'yes' if ok_o else 'NO':>5s}{p:12.5g}{rp:9.1e}"
                      f"{'yes' if ok_p else 'NO':>5s}")

    # -- 3. SLQ density and trace ------------------------------------------------------
    if "slq" in sections:
        print(f"\n## 3. spectral density (SLQ, {args.slq_runs} run(s) x {args.slq_steps} Lanczos steps)")
        t = time.perf_counter()
        dens = slq_density(op, num_runs=args.slq_runs, num_steps=args.slq_steps, seed=args.seed)
        t_slq = time.perf_counter() - t
        tr = slq_trace(dens)
        print(f"ours: {dens.num_products} HVPs, {t_slq:.1f} s; nodes in [{dens.nodes.min():.4g}, {dens.nodes.max():.4g}], "
              f"weights sum {dens.weights.sum():.6f}; SLQ trace {tr.estimate:.5g}"
              + (f" +- {tr.stderr:.2g}" if np.isfinite(tr.stderr) else ""))
        hut = hutchinson_trace(op, num_vectors=max(args.slq_steps, 10), seed=args.seed)
        print(f"ours: Hutchinson trace ({hut.num_vectors} vectors) {hut.estimate:.5g} +- {hut.stderr:.2g}")
        torch.manual_seed(args.seed)
        try:
            ph.density(iter=3, n_v=1)
            print("PyHessian density(): ran")
        except Exception as e:  # noqa: BLE001 - the point is to show how it fails
            frames = traceback.extract_tb(e.__traceback__)
            last = ([f for f in frames if "pyhessian" in f.filename] or frames)[-1]
            msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
            print(f"PyHessian density(): FAILS with {type(e).__name__}: {msg} (at {os.path.basename(last.filename)}:"
                  f"{last.lineno}: {last.line})")

    ph_mod.hessian_vector_product = ph_hvp
    for p in model.parameters():
        p.grad = None  # PyHessian leaves a graph in .grad
    op.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
