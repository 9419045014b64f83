"""The embedded teacher: a small pytorchcv `CIFARResNet` (a ResNet-8) trained on first use on the digits
training split, deterministically, and cached under `cache_dir()/teachers/` keyed by a hash of its recipe."""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, TypedDict

import torch
import torch.nn as nn

from zsq_probe.data.cache import cache_dir
from zsq_probe.data.datasets import DATASETS, load_dataset, make_loader
from zsq_probe.errors import one_line
from zsq_probe.rundir.atomic import atomic_write_bytes
from zsq_probe.rundir.store import atomic_torch_save

# The embedded teacher's architecture ("class" is a keyword: the functional form)
DigitsArch = TypedDict(
    "DigitsArch",
    {
        "class": str,
        "channels": list[list[int]],
        "init_block_channels": int,
        "bottleneck": bool,
        "in_channels": int,
        "in_size": list[int],
        "num_classes": int,
        "final_pool_kernel": int,
    },
)


class DigitsTraining(TypedDict):
    """How the embedded teacher is trained (`fit_digits`)."""

    optimizer: str
    lr: float
    weight_decay: float
    schedule: str
    epochs: int
    batch_size: int
    augment: bool
    seed: int
    threads: int


# The embedded teacher: pytorchcv's CIFARResNet, one basic unit per stage (a ResNet-8), on 1x16x16.
DIGITS_ARCH: DigitsArch = {
    "class": "pytorchcv.models.resnet_cifar.CIFARResNet",
    "channels": [[16], [32], [64]],
    "init_block_channels": 16,
    "bottleneck": False,
    "in_channels": 1,
    "in_size": [16, 16],
    "num_classes": 10,
    "final_pool_kernel": 4,  # 16 -> 8 -> 4 after two stride-2 stages
}

DIGITS_TRAIN: DigitsTraining = {
    "optimizer": "adam",
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "schedule": "cosine",
    "epochs": 10,
    "batch_size": 64,
    "augment": True,  # random shifts up to 2 px
    "seed": 0,
    "threads": 1,  # torch CPU threads while training (see train_digits_teacher)
}

DIGITS_MIN_TOP1 = 95.0  # the embedded teacher must reach this test top-1 (%)

_DIGITS_FORMAT = 1  # bump when the cache file layout changes


def digits_architecture() -> nn.Module:
    """The embedded teacher's network (a small pytorchcv CIFARResNet, DIGITS_ARCH), randomly initialised."""
    from pytorchcv.models.resnet_cifar import CIFARResNet  # where a network is built (zsq_probe.teachers.loader)

    a = DIGITS_ARCH
    net: nn.Module = CIFARResNet(
        channels=[list(c) for c in a["channels"]],
        init_block_channels=a["init_block_channels"],
        bottleneck=a["bottleneck"],
        in_channels=a["in_channels"],
        in_size=tuple(a["in_size"]),
        num_classes=a["num_classes"],
    )
    # pytorchcv's final pool is AvgPool2d(8) for 32x32 inputs; ours ends at 4x4 (same module name)
    net.get_submodule("features").final_pool = nn.AvgPool2d(kernel_size=a["final_pool_kernel"], stride=1)
    return net


def digits_key() -> str:
    """A short hash of everything the cached teacher depends on (format, architecture, training, data)."""
    spec = DATASETS["digits"]
    blob = json.dumps(
        {
            "format": _DIGITS_FORMAT,
            "arch": DIGITS_ARCH,
            "train": DIGITS_TRAIN,
            "data": {"mean": spec.mean, "std": spec.std, "shape": spec.image_shape},
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def digits_teacher_path() -> Path:
    """Where the embedded teacher is cached: ``cache_dir()/teachers/digits-<config hash>.pt``."""
    return cache_dir() / "teachers" / f"digits-{digits_key()}.pt"


@torch.no_grad()
def evaluate_top1(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Top-1 accuracy in percent of ``model`` (eval mode) over a loader of (image, label).

    Args:
        model: The classifier (put back in the mode it was found in).
        loader: Batches of (images, class indices).

    Returns:
        The top-1 in percent (0 for an empty loader).
    """
    was_training = model.training
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += (model(x).argmax(1) == y).sum().item()
        total += y.numel()
    model.train(was_training)
    return 100.0 * correct / max(total, 1)


def fit_digits(cfg: DigitsTraining) -> tuple[nn.Module, float, int]:
    """Train the digits architecture with ``cfg``.

    Runs on ``cfg["threads"]`` CPU threads: this net is too small to gain from more, multi-threaded
    CPU kernels were ~10x slower on a busy 2-core machine, and a fixed thread count keeps the result
    repeatable. Leaves torch's global RNG and thread count as they were.

    Args:
        cfg: The recipe (`DIGITS_TRAIN` or a variant of it).

    Returns:
        (model in eval mode, test top-1 %, test size).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg["threads"])
    try:
        return _fit_once(cfg)
    finally:
        torch.set_num_threads(threads)


def _fit_once(cfg: DigitsTraining) -> tuple[nn.Module, float, int]:
    with torch.random.fork_rng(devices=[]):  # leaves the caller's global RNG untouched
        torch.manual_seed(cfg["seed"])
        net = digits_architecture()
        train = load_dataset("digits", split="train", augment=cfg["augment"])
        test = load_dataset("digits", split="test")
        loader = make_loader(train, cfg["batch_size"], shuffle=True, seed=cfg["seed"])
        opt = torch.optim.Adam(net.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg["epochs"] * len(loader))
        loss_fn = nn.CrossEntropyLoss()
        net.train()
        for _epoch in range(cfg["epochs"]):
            for x, y in loader:
                opt.zero_grad(set_to_none=True)
                loss_fn(net(x), y).backward()
                opt.step()
                sched.step()
        net.eval()
        top1 = evaluate_top1(net, make_loader(test, 256, shuffle=False, seed=0))
    return net, top1, len(test)  # type: ignore[arg-type]  # map-style data sets are sized; torch's stub is not


def train_digits_teacher() -> tuple[nn.Module, dict[str, Any]]:
    """Train the embedded teacher (deterministic, leaves torch's global RNG untouched).

    Returns:
        (the network in eval mode, its metadata: key, test top-1, recipe, versions, time).
    """
    cfg = DIGITS_TRAIN
    start = time.perf_counter()
    net, top1, n_test = fit_digits(cfg)
    seconds = time.perf_counter() - start
    try:
        ptcv_version = version("pytorchcv")
    except PackageNotFoundError:
        ptcv_version = None
    meta = {
        "format": _DIGITS_FORMAT,
        "key": digits_key(),
        "test_top1": round(top1, 4),
        "test_images": n_test,
        "train_seconds": round(seconds, 2),
        "arch": DIGITS_ARCH,
        "train": DIGITS_TRAIN,
        "torch_version": str(torch.__version__),
        "pytorchcv_version": ptcv_version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if top1 < DIGITS_MIN_TOP1:
        warnings.warn(
            f"embedded digits teacher reached only {top1:.2f}% test top-1 (expected >= {DIGITS_MIN_TOP1}%)",
            stacklevel=2,
        )
    return net, meta


def read_cached_teacher(path: Path) -> tuple[nn.Module, dict[str, Any]] | None:
    """The cached teacher (a warning when the file is there but unusable).

    Args:
        path: The cache file (`digits_teacher_path()`).

    Returns:
        (network, metadata), or None when absent or unusable (then it is retrained).
    """
    if not path.is_file():
        return None
    try:
        blob = torch.load(str(path), map_location="cpu", weights_only=True)
        meta = dict(blob["meta"])
        if meta.get("key") != digits_key():
            raise ValueError("config hash differs")
        net = digits_architecture()
        net.load_state_dict(blob["state_dict"], strict=True)
        float(meta["test_top1"])
    except Exception as exc:  # noqa: BLE001 - any damage to the cache file means retrain, never a crash
        warnings.warn(f"cached digits teacher {path} is unusable ({one_line(exc)}); retraining it", stacklevel=3)
        return None
    return net, meta


def digits_teacher() -> tuple[nn.Module, dict[str, Any], Path]:
    """The embedded teacher: trained and cached on first use, read from the cache after.

    Returns:
        (network, its metadata, the cache file).
    """
    path = digits_teacher_path()
    cached = read_cached_teacher(path)
    if cached is None:
        net, meta = train_digits_teacher()
        state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        atomic_torch_save({"state_dict": state, "meta": meta}, path)
        cached = (net, meta)
    net, meta = cached
    json_path = path.with_suffix(".json")
    if not json_path.is_file():
        atomic_write_bytes(json_path, (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    return net, meta, path
