"""torchvision's CIFAR-10/100 readers, minus the md5 checks and minus ``pickle.load`` (zsq_probe.data.datasets
loads this module, and torchvision with it, only when a CIFAR folder is read: a digits run never imports
torchvision)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
from torchvision import datasets as _tvd
from torchvision.datasets.vision import VisionDataset

from zsq_probe.rundir.safe_pickle import safe_load

__all__ = ["OnDiskCIFAR10", "OnDiskCIFAR100"]


class _PresenceCheckMixin:
    """torchvision's CIFAR readers, minus the md5 checks and minus ``pickle.load``.

    torchvision verifies every file's md5 (180 MB hashed on every construction) and answers a
    mismatch with a generic 'not found or corrupted'; worse, it ``pickle.load``s every batch file, so a
    hostile data folder runs code.  We check that the files of the requested split exist, then read the
    same on-disk format with :func:`zsq_probe.rundir.safe_pickle.safe_load` (only dicts, lists, str/bytes and
    numpy arrays can come out), giving the same ``data`` / ``targets`` / ``classes`` as torchvision; a
    file that cannot be read becomes a UserError naming the folder (zsq_probe.data.datasets._load_cifar).
    """

    # torchvision's CIFAR10 / CIFAR100, which this mixes into, define these
    root: str
    base_folder: str
    train_list: list[list[str]]
    test_list: list[list[str]]
    meta: dict[str, str]
    download: Callable[[], None]

    def __init__(
        self,
        root: str | os.PathLike[str],
        train: bool = True,
        transform: Callable[[Any], Any] | None = None,
        target_transform: Callable[[Any], Any] | None = None,
        download: bool = False,
    ) -> None:
        VisionDataset.__init__(self, root, transform=transform, target_transform=target_transform)
        self.train = train
        if download:
            self.download()
        if not self._check_integrity():
            raise RuntimeError("Dataset not found; use download=True to download it")
        data, targets = [], []
        for file_name, _ in self.train_list if train else self.test_list:
            with open(os.path.join(self.root, self.base_folder, file_name), "rb") as f:
                entry = safe_load(f, encoding="latin1")
            if not isinstance(entry, dict) or not isinstance(entry.get("data"), np.ndarray):
                raise ValueError(f"{file_name} is not a CIFAR batch (no 'data' array)")
            data.append(entry["data"])
            targets.extend(entry["labels"] if "labels" in entry else entry["fine_labels"])
        self.data = np.vstack(data).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))
        self.targets = targets
        self._load_meta()

    def _check_integrity(self) -> bool:
        files = self.train_list if self.train else self.test_list
        folder = os.path.join(self.root, self.base_folder)
        return all(os.path.isfile(os.path.join(folder, f)) for f, _ in files)

    def _load_meta(self) -> None:
        path = os.path.join(self.root, self.base_folder, self.meta["filename"])
        with open(path, "rb") as infile:
            data = safe_load(infile, encoding="latin1")
        self.classes = list(data[self.meta["key"]])
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class OnDiskCIFAR10(_PresenceCheckMixin, _tvd.CIFAR10):  # type: ignore[misc]  # torchvision has no stubs here
    """torchvision's CIFAR10 reader without md5 checks or pickle.load (module level: picklable for workers)."""


class OnDiskCIFAR100(_PresenceCheckMixin, _tvd.CIFAR100):  # type: ignore[misc]  # torchvision has no stubs here
    """torchvision's CIFAR100 reader without md5 checks or pickle.load (module level: picklable for workers)."""
