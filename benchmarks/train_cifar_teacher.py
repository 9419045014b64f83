"""Train a pytorchcv CIFAR teacher (default resnet20_cifar10) on CIFAR from a user's folder, on CPU or GPU.

The benchmarks and the laptop-scale recipe need *trained* weights; pytorchcv's cannot be downloaded on every
machine, so this script makes them from the data set alone.  Never run by the tests or CI (it takes hours on a
laptop CPU; docs/benchmarks.md gives the measured time and accuracy).

    python benchmarks/train_cifar_teacher.py --data-root DIR --out resnet20_cifar10.pt [--epochs 30]

DIR holds `cifar-10-batches-py/` (the python layout; docs/real-data.md says how to make it from the public
JPEG copy).  The images are normalised as zsq-probe feeds them to a teacher (`--normalization reference`,
the AIT code's statistics, or `pytorchcv`), augmented with the usual 4-pixel-padded random crop and
horizontal flip (done on whole batches as tensors: per-image PIL transforms cost more than the network on a
2-core machine), and trained with SGD (momentum 0.9, Nesterov, weight decay 5e-4) under a one-cycle learning
rate.  The file written is `torch.save(model.state_dict())`, what `--weights` takes; a file already at
`--out` is never replaced.  Each epoch prints the train loss, the test top-1 and the time.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zsq_probe.data.datasets import load_dataset
from zsq_probe.teachers.loader import build_architecture
from zsq_probe.teachers.metadata import dataset_for_teacher


def as_tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole split as (uint8 N×3×32×32, int64 N) from the on-disk reader's arrays."""
    base = getattr(ds, "dataset", ds)
    data, targets = getattr(base, "data", None), getattr(base, "targets", None)
    if not isinstance(data, np.ndarray) or targets is None:
        raise SystemExit(f"{type(base).__name__} does not expose the CIFAR arrays (data, targets)")
    return torch.from_numpy(data).permute(0, 3, 1, 2).contiguous(), torch.as_tensor(list(targets))


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop of the 4-pixel zero-padded image and a horizontal flip, per image, on a uint8 batch."""
    n = x.shape[0]
    padded = F.pad(x, (4, 4, 4, 4))
    dx = torch.randint(0, 9, (n,), generator=gen)
    dy = torch.randint(0, 9, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(32))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(32))[:, None, None, :]
    out = padded[torch.arange(n)[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> the teacher's input (scaled to [0, 1], then the data set's mean/std)."""
    return (x.float() / 255.0 - mean) / std


@torch.no_grad()
def test_top1(model, x, y, mean, std, device, batch=500) -> float:
    """Top-1 on the test split (eval mode)."""
    model.eval()
    correct = 0
    for i in range(0, len(y), batch):
        logits = model(normalise(x[i : i + batch].to(device), mean, std))
        correct += int((logits.argmax(1).cpu() == y[i : i + batch]).sum())
    return correct / len(y)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="resnet20_cifar10")
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1, help="peak of the one-cycle schedule")
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--normalization", default="reference", choices=("reference", "pytorchcv"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        print(f"train_cifar_teacher: {out} exists: not replaced (choose another --out)", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = dataset_for_teacher(args.teacher)
    train = load_dataset(data, args.data_root, "train", normalization=args.normalization)
    test = load_dataset(data, args.data_root, "test", normalization=args.normalization)
    spec = train.spec if hasattr(train, "spec") else None
    xtr, ytr = as_tensors(train)
    xte, yte = as_tensors(test)
    print(f"{args.teacher}: {len(ytr)} training and {len(yte)} test images from {args.data_root}", flush=True)
    device = torch.device(args.device)
    mean_std = spec if spec is not None else None
    mean = torch.tensor(mean_std.mean if mean_std else (0.0, 0.0, 0.0), device=device).view(1, 3, 1, 1)
    std = torch.tensor(mean_std.std if mean_std else (1.0, 1.0, 1.0), device=device).view(1, 3, 1, 1)
    model = build_architecture(args.teacher).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(ytr) / args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch, pct_start=0.15
    )
    gen = torch.Generator().manual_seed(args.seed)
    t_start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = torch.randperm(len(ytr), generator=gen)
        total, seen = 0.0, 0
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            xb = normalise(augment(xtr[idx], gen).to(device), mean, std)
            loss = F.cross_entropy(model(xb), ytr[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            seen += len(idx)
        top1 = test_top1(model, xte, yte, mean, std, device)
        print(
            f"epoch {epoch:3d}/{args.epochs}  train CE {total / seen:.4f}  test top-1 {100 * top1:.2f}%  "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    model.cpu().eval()
    tmp = out.with_name(out.name + ".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(out)
    minutes = (time.perf_counter() - t_start) / 60
    print(f"wrote {out}: test top-1 {100 * top1:.2f}% after {args.epochs} epochs, {minutes:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
