"""Real data: the embedded digits set, CIFAR-10/100 on disk, ImageNet as an image folder.

Every data set yields ``(image, label)`` with ``image`` a normalised float tensor of shape
``DatasetSpec.image_shape`` and ``label`` a Python ``int``. Nothing is ever downloaded
unless the caller passes ``download=True`` (the CLI's ``--download``).

* ``digits`` -- scikit-learn's ``load_digits`` (1,797 8x8 grey images, values 0..16, ships
  with scikit-learn). Each image is scaled to [0, 1], upsampled bilinearly
  (``align_corners=False``) to 1x16x16 and normalised with the train split's pixel
  mean/std (fixed constants in the spec, computed once on that split). Split: a fixed
  stratified split, ``sklearn.model_selection.train_test_split(test_size=1/3,
  stratify=labels, random_state=0)`` -> 1,198 train / 599 test images, indices sorted.
* ``cifar10`` / ``cifar100`` -- torchvision's python-pickle format
  (``cifar-10-batches-py/`` / ``cifar-100-python/``), read through
  ``torchvision.datasets.CIFAR10/100``. Normalisation (``normalization=``, the config's
  ``dataset.normalization``): ``"reference"`` (default, the AIT/GDFQ reference's evaluation
  protocol, GDFQ_AIT/dataloader.py: per-data-set statistics, CIFAR-10 mean (0.49139968,
  0.48215827, 0.44653124) std (0.24703233, 0.24348505, 0.26158768), CIFAR-100 mean
  (0.50705882, 0.48666667, 0.44078431) std (0.26745098, 0.25568627, 0.27607843)) or
  ``"pytorchcv"`` (what pytorchcv's weights were trained and scored with, imgclsmob's
  ``cifar10_val_transform``, also used for CIFAR-100: mean (0.4914, 0.4822, 0.4465), std
  (0.2023, 0.1994, 0.2010)). ZQ training is data-free (generator and BNS see no normalisation):
  only reported accuracies, and the real-data KD baseline, depend on it.
* ``imagenet`` -- an image folder of class sub-folders named by WordNet id; class index =
  position in sorted folder order (the order pytorchcv's 1000-class models use). Test
  transform: Resize(256) / CenterCrop(224); mean (0.485, 0.456, 0.406), std (0.229, 0.224,
  0.225) under both normalisation options (the reference and pytorchcv agree). A teacher with
  another input size (InceptionV3: 299, `teachers.metadata.teacher_input_size`) gets
  Resize(ceil(size / 0.875)) / CenterCrop(size), imgclsmob's rule (342 / 299): pass
  ``image_size=`` to :func:`get_spec` / :func:`load_dataset`, or use `teachers.metadata.spec_for_teacher`.

``augment=True`` (train-time augmentation, for the real-data KD baseline): digits -- random
translation by up to 2 pixels (zero padding in normalised space is the background value);
CIFAR -- RandomCrop(32, padding=4) + RandomHorizontalFlip (imgclsmob also adds a colour
jitter; we keep the standard crop/flip); ImageNet -- RandomResizedCrop(224) +
RandomHorizontalFlip. With ``num_workers=0`` augmentation draws from torch's global RNG
(seed it with ``torch.manual_seed``); with workers, from seeds drawn from the loader's
generator (see :func:`make_loader`).

One module (~450 lines): the three on-disk formats share the spec table, the presence checks and the
one-line errors; each format's reader is a short section.
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
import warnings
import zipfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from zsq_probe.data.cache import cache_dir
from zsq_probe.errors import UserError, one_line
from zsq_probe.rundir.atomic import atomic_write_bytes

if TYPE_CHECKING:  # torchvision loads with the CIFAR readers only (below)
    from zsq_probe.data.cifar_readers import OnDiskCIFAR10, OnDiskCIFAR100
    from zsq_probe.rundir.output import PathArg

Sample: TypeAlias = tuple[torch.Tensor, int]  # (normalised image tensor, label)
ImageDataset: TypeAlias = Dataset[Sample]  # a map-style data set of such samples
Transform: TypeAlias = Any  # a torchvision transform (torchvision is untyped here)
OnDiskCIFAR: TypeAlias = "OnDiskCIFAR10 | OnDiskCIFAR100"
_T = TypeVar("_T")

__all__ = [
    "DatasetSpec",
    "DATASETS",
    "DIGITS_SPLIT_SEED",
    "DIGITS_TEST_SHARE",
    "NORMALIZATIONS",
    "CIFAR_NORMALIZATION",
    "check_normalization",
    "get_spec",
    "load_dataset",
    "make_loader",
]


@dataclass(frozen=True)
class DatasetSpec:
    """What a data set is: the image shape a model sees and the normalisation applied; for data of your own
    (a teacher module passed to `train`), also the data itself.

    `train` / `val`: map-style data sets yielding (normalised image tensor of `image_shape`, int label), as
    torchvision's `ImageFolder` with a `transform` does.  `train` feeds the KD baseline (`source=real`) and
    calibration (`zsq_probe.teachers.accuracy.evaluate_quantized`); `val` gives validation top-1 every
    `val_every` epochs and the run summary's `final_val_top1`.  Neither is compared or written anywhere."""

    name: str
    num_classes: int
    image_shape: tuple[int, int, int]  # (C, H, W) after the test transform
    mean: tuple[float, ...]  # per channel, applied after scaling pixels to [0, 1]
    std: tuple[float, ...]
    description: str
    # the normalisation option the constants belong to ("reference" | "pytorchcv"); only CIFAR differs
    normalization: str = "reference"
    train: ImageDataset | None = dataclasses.field(default=None, compare=False, repr=False)
    val: ImageDataset | None = dataclasses.field(default=None, compare=False, repr=False)


DIGITS_SPLIT_SEED = 0
DIGITS_TEST_SHARE = 1 / 3
_DIGITS_SIZE = 16

NORMALIZATIONS = ("reference", "pytorchcv")
# CIFAR (mean, std) per normalisation option.  "reference": the AIT code's CIFAR test transform
# (iamkanghyunchoi/ait GDFQ_AIT/dataloader.py lines 130-134; the same numbers in Qimera_AIT/ and
# AutoReCon_AIT/dataloader.py and in xushoukai/GDFQ dataloader.py lines 129-133).  "pytorchcv": imgclsmob's
# cifar10_val_transform (osmr/imgclsmob pytorch/datasets/cifar10_cls_dataset.py), which its CIFAR-100
# meta-info inherits unchanged (cifar100_cls_dataset.py): the statistics pytorchcv's CIFAR weights were
# trained and scored with.
_PYTORCHCV_CIFAR = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
CIFAR_NORMALIZATION: dict[str, dict[str, tuple[tuple[float, ...], tuple[float, ...]]]] = {
    "cifar10": {
        "reference": ((0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768)),
        "pytorchcv": _PYTORCHCV_CIFAR,
    },
    "cifar100": {
        "reference": ((0.50705882, 0.48666667, 0.44078431), (0.26745098, 0.25568627, 0.27607843)),
        "pytorchcv": _PYTORCHCV_CIFAR,
    },
}

DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(
        name="digits",
        num_classes=10,
        image_shape=(1, _DIGITS_SIZE, _DIGITS_SIZE),
        # pixel mean / population std of the train split after scaling to [0, 1] and upsampling
        mean=(0.3054,),
        std=(0.3189,),
        description=(
            "scikit-learn digits (embedded, no download): 8x8 grey upsampled to 16x16, "
            "stratified split seed 0, 1198 train / 599 test"
        ),
    ),
    "cifar10": DatasetSpec(
        name="cifar10",
        num_classes=10,
        image_shape=(3, 32, 32),
        mean=CIFAR_NORMALIZATION["cifar10"]["reference"][0],
        std=CIFAR_NORMALIZATION["cifar10"]["reference"][1],
        description="CIFAR-10 in torchvision's python-pickle format (cifar-10-batches-py/)",
    ),
    "cifar100": DatasetSpec(
        name="cifar100",
        num_classes=100,
        image_shape=(3, 32, 32),
        mean=CIFAR_NORMALIZATION["cifar100"]["reference"][0],
        std=CIFAR_NORMALIZATION["cifar100"]["reference"][1],
        description="CIFAR-100 in torchvision's python-pickle format (cifar-100-python/)",
    ),
    "imagenet": DatasetSpec(
        name="imagenet",
        num_classes=1000,
        image_shape=(3, 224, 224),
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        description="ImageNet-1k as an image folder of WordNet-id class folders (val: Resize 256, CenterCrop 224)",
    ),
}

_SPLITS = ("train", "test")


def check_normalization(normalization: object) -> str:
    """A normalisation option's name.

    Args:
        normalization: "reference" or "pytorchcv" (any case, spaces around allowed).

    Returns:
        The name, lower case.

    Raises:
        UserError: anything else.
    """
    key = str(normalization).strip().lower()
    if key not in NORMALIZATIONS:
        raise UserError(
            f"unknown normalisation {normalization!r}: use 'reference' (the AIT/GDFQ reference "
            f"code's CIFAR statistics, default) or 'pytorchcv' (imgclsmob's, which pytorchcv scores with)"
        )
    return key


def get_spec(name: str, normalization: str = "reference", image_size: int | None = None) -> DatasetSpec:
    """The :class:`DatasetSpec` of a data set name under a normalisation option (only CIFAR's constants
    depend on it); unknown name or option -> UserError.  ``image_size``: ImageNet's square input size
    (default 224; e.g. 299 for InceptionV3, see `teachers.metadata.teacher_input_size`); other data sets have
    one size."""
    key = str(name).lower()
    if key not in DATASETS:
        raise UserError(f"unknown data set {name!r}: choose one of {', '.join(DATASETS)}")
    norm = check_normalization(normalization)
    spec = DATASETS[key]
    if image_size is not None and int(image_size) != spec.image_shape[1]:
        size = int(image_size)
        if key != "imagenet" or size < 32:
            raise UserError(
                f"image size {image_size!r}: only ImageNet's input size can be chosen (>= 32), "
                f"{key} images are {spec.image_shape[1]}x{spec.image_shape[2]}"
            )
        spec = dataclasses.replace(
            spec,
            image_shape=(3, size, size),
            description=spec.description.replace(
                "Resize 256, CenterCrop 224", f"Resize {_imagenet_resize(size)}, CenterCrop {size}"
            ),
        )
    if norm == spec.normalization:
        return spec
    if key in CIFAR_NORMALIZATION:
        mean, std = CIFAR_NORMALIZATION[key][norm]
        return dataclasses.replace(spec, mean=mean, std=std, normalization=norm)
    return dataclasses.replace(spec, normalization=norm)  # digits, ImageNet: the same constants either way


# --------------------------------------------------------------------------- digits


class TensorImageDataset(Dataset[Sample]):
    """Images held in memory as one normalised tensor (used for the embedded digits set)."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        spec: DatasetSpec,
        classes: list[str],
        augment: bool = False,
        max_shift: int = 2,
    ) -> None:
        if images.shape[0] != labels.shape[0]:
            raise ValueError("images and labels differ in length")
        self.images = images
        self.targets = [int(v) for v in labels.tolist()]
        self.spec = spec
        self.classes = classes
        self.augment = augment
        self.max_shift = max_shift

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Sample:
        x = self.images[index]
        if self.augment and self.max_shift > 0:
            s = self.max_shift
            # background value after normalisation (pixel value 0)
            bg = -self.spec.mean[0] / self.spec.std[0]
            padded = F.pad(x, (s, s, s, s), value=bg)
            dy, dx = torch.randint(0, 2 * s + 1, (2,)).tolist()
            h, w = x.shape[-2:]
            x = padded[:, dy : dy + h, dx : dx + w]
        return x, self.targets[index]


def _digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(images scaled to [0,1] as N x 8 x 8 float32, labels, train indices, test indices), from the cache once a
    process has computed them (importing scikit-learn takes seconds; each fresh process paid it before any work)."""
    path = _digits_split_cache()
    try:
        # our own file object: np.load leaves its file open when the cache is no zip at all
        with open(path, "rb") as file, np.load(file, allow_pickle=False) as z:
            return z["images"], z["labels"], z["train_idx"], z["test_idx"]
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile):  # absent or damaged: computed again
        pass
    split = _digits_split_from_sklearn()
    try:
        buffer = io.BytesIO()
        images, labels, train_idx, test_idx = split
        np.savez(buffer, images=images, labels=labels, train_idx=train_idx, test_idx=test_idx)
        atomic_write_bytes(path, buffer.getvalue())
    except OSError:  # a read-only cache: nothing lost but the next process's seconds
        pass
    return split


def _digits_split_cache() -> Path:
    """The split's cache file, keyed by the scikit-learn release and the split's settings (both decide it)."""
    key = f"{version('scikit-learn')}-{DIGITS_SPLIT_SEED}-{DIGITS_TEST_SHARE:.6f}"
    return cache_dir() / "data" / f"digits-split-{key}.npz"


def _digits_split_from_sklearn() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # sklearn (~3 s): the digits data only (zsq_probe.data)
    from sklearn.model_selection import train_test_split  # sklearn (~3 s): the digits data only (zsq_probe.data)

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    labels = digits.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(labels)),
        test_size=DIGITS_TEST_SHARE,
        stratify=labels,
        random_state=DIGITS_SPLIT_SEED,
    )
    return images, labels, np.sort(train_idx), np.sort(test_idx)


def _digits_unnormalised(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Digits images of one split in [0, 1], upsampled to 1x16x16 (before normalisation)."""
    images, labels, train_idx, test_idx = _digits_split()
    idx = train_idx if split == "train" else test_idx
    x = torch.from_numpy(images[idx]).unsqueeze(1)
    x = F.interpolate(x, size=(_DIGITS_SIZE, _DIGITS_SIZE), mode="bilinear", align_corners=False)
    return x.contiguous(), torch.from_numpy(labels[idx])


def _load_digits(split: str, augment: bool) -> TensorImageDataset:
    spec = DATASETS["digits"]
    x, y = _digits_unnormalised(split)
    x = (x - spec.mean[0]) / spec.std[0]
    return TensorImageDataset(x, y, spec, classes=[str(i) for i in range(10)], augment=augment)


# --------------------------------------------------------------------------- CIFAR


# torchvision (1.7 s to import) loads with the CIFAR and ImageNet readers only, inside these functions: a digits
# run never imports it (tests/package/test_architecture.py, LIGHT_IMPORTS)
def _normalize(spec: DatasetSpec) -> Transform:
    from torchvision import transforms  # torchvision (1.7 s): CIFAR / ImageNet only (zsq_probe.data)

    return transforms.Normalize(mean=spec.mean, std=spec.std)


def _cifar_transform(spec: DatasetSpec, augment: bool) -> Transform:
    from torchvision import transforms  # torchvision (1.7 s): CIFAR / ImageNet only (zsq_probe.data)

    steps = []
    if augment:
        steps += [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
    steps += [transforms.ToTensor(), _normalize(spec)]
    return transforms.Compose(steps)


_CIFAR_INFO = {
    # name: (label, folder, archive, train files, test files, meta file, official train/test sizes)
    "cifar10": (
        "CIFAR-10",
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        "batches.meta",
        (50000, 10000),
    ),
    "cifar100": (
        "CIFAR-100",
        "cifar-100-python",
        "cifar-100-python.tar.gz",
        ["train"],
        ["test"],
        "meta",
        (50000, 10000),
    ),
}


def _cifar_classes(name: str) -> type[OnDiskCIFAR]:
    from zsq_probe.data.cifar_readers import (  # torchvision (1.7 s): CIFAR / ImageNet only (zsq_probe.data)
        OnDiskCIFAR10,
        OnDiskCIFAR100,
    )

    return OnDiskCIFAR10 if name == "cifar10" else OnDiskCIFAR100


def _load_cifar(
    name: str, root: PathArg | None, split: str, download: bool, augment: bool, spec: DatasetSpec | None = None
) -> ImageDataset:
    """One split of CIFAR-10/100 from torchvision's python-pickle folder under `root` (fetched there with
    `download`); every way the folder can be wrong is a UserError naming it."""
    spec = spec if spec is not None else DATASETS[name]
    label, folder, archive, train_files, test_files, meta_file, _ = _CIFAR_INFO[name]
    if root is None:
        raise UserError(
            f"{label} needs a data folder: pass --data-root DIR, the folder that contains {folder}/ "
            f"(add --download to fetch it there)"
        )
    root_path = Path(root).expanduser()
    parent = root_path.parent if root_path.name == folder else root_path
    data_dir = parent / folder
    needed = (train_files if split == "train" else test_files) + [meta_file]
    if download and not all((data_dir / f).is_file() for f in needed):
        _download_cifar(name, parent)
    _check_cifar_folder(name, root_path, parent, needed)
    try:
        ds = _cifar_classes(name)(
            root=str(parent), train=(split == "train"), download=False, transform=_cifar_transform(spec, augment)
        )
    except Exception as exc:  # whatever the files hold, the answer is: not CIFAR batches
        raise UserError(
            f"{label} files in {data_dir} could not be read ({one_line(exc)}); "
            f"they must be torchvision's python-pickle batches: re-extract {archive} or pass --download"
        ) from exc
    _check_cifar_contents(name, ds, split, data_dir, spec)
    ds.spec = spec
    return ds


def _download_cifar(name: str, parent: Path) -> None:
    """Fetch and extract the CIFAR archive into `parent` (torchvision's URL and md5)."""
    from torchvision.datasets.utils import download_and_extract_archive  # torchvision: CIFAR only (zsq_probe.data)

    label, folder = _CIFAR_INFO[name][:2]
    base = _cifar_classes(name)  # torchvision's URL and archive md5
    try:
        parent.mkdir(parents=True, exist_ok=True)
        download_and_extract_archive(base.url, str(parent), filename=base.filename, md5=base.tgz_md5)
    except Exception as exc:  # network, disk, archive errors
        raise UserError(
            f"downloading {label} into {parent} failed ({one_line(exc)}); "
            f"check the network or place {folder}/ there yourself"
        ) from exc


def _check_cifar_folder(name: str, root_path: Path, parent: Path, needed: list[str]) -> None:
    """UserError when the CIFAR folder under `parent` is absent (with a hint: an archive to extract, the other
    CIFAR's folder) or lacks one of the `needed` files."""
    label, folder, archive = _CIFAR_INFO[name][:3]
    data_dir = parent / folder
    if not data_dir.is_dir():
        hint = "pass --download to fetch it"
        if (parent / archive).is_file():
            hint = f"found {parent / archive}: extract it there (tar xzf {archive}) or pass --download"
        else:
            for other, info in _CIFAR_INFO.items():
                if other != name and (parent / info[1]).is_dir():
                    hint = f"that folder holds {info[0]} ({info[1]}/), not {label}; pass --download to fetch {label}"
        raise UserError(
            f"{label} not found under {root_path}: expected {data_dir}/ (torchvision's python-pickle format); {hint}"
        )
    missing = [f for f in needed if not (data_dir / f).is_file()]
    if missing:
        raise UserError(
            f"{label} folder {data_dir} is incomplete: missing {', '.join(missing)}; "
            f"re-extract {archive} there or pass --download"
        )


def _check_cifar_contents(name: str, ds: OnDiskCIFAR, split: str, data_dir: Path, spec: DatasetSpec) -> None:
    """UserError when the files read hold no images, unmatched labels, labels or classes of another data set;
    a warning when the split's size is not the official one."""
    label, _, archive, _, _, meta_file, sizes = _CIFAR_INFO[name]
    n = len(ds.data)
    if len(ds.targets) != n:
        raise UserError(
            f"{label} files in {data_dir} hold {n} images but {len(ds.targets)} labels; "
            f"re-extract {archive} or pass --download"
        )
    if n == 0:
        raise UserError(f"{label} {split} split in {data_dir} is empty; re-extract {archive} or pass --download")
    _check_cifar_types(label, ds, data_dir, archive)
    bad = [t for t in ds.targets if not 0 <= int(t) < spec.num_classes]
    if bad:
        raise UserError(
            f"{label} files in {data_dir} hold label {bad[0]} outside 0..{spec.num_classes - 1}; "
            f"is this really {label}?"
        )
    if len(ds.classes) != spec.num_classes:
        raise UserError(
            f"{label} meta file {data_dir / meta_file} names {len(ds.classes)} classes, "
            f"expected {spec.num_classes}; is this really {label}?"
        )
    official = sizes[0] if split == "train" else sizes[1]
    if n != official:
        warnings.warn(
            f"{label} {split} split in {data_dir} has {n} images, the official one has {official}", stacklevel=4
        )


def _check_cifar_types(label: str, ds: OnDiskCIFAR, data_dir: Path, archive: str) -> None:
    """UserError when the images are not 8-bit (what torchvision's batches hold and PIL reads) or a label is not
    an integer (a string, a float, a bool): found while loading, not when a figure or a loader meets them."""
    if ds.data.dtype != np.uint8:
        raise UserError(
            f"{label} files in {data_dir} hold {ds.data.dtype} images, expected uint8 (0..255); "
            f"re-extract {archive} or pass --download"
        )
    odd = next((t for t in ds.targets if isinstance(t, bool) or not isinstance(t, (int, np.integer))), None)
    if odd is not None:
        raise UserError(
            f"{label} files in {data_dir} hold label {odd!r} ({type(odd).__name__}), expected integers; "
            f"re-extract {archive} or pass --download"
        )


# --------------------------------------------------------------------------- ImageNet

_WNID = re.compile(r"^n\d{8}$")


IMAGENET_CROP_RATIO = 0.875  # imgclsmob's test transform: Resize(ceil(size / 0.875)), CenterCrop(size)


def _imagenet_resize(size: int) -> int:
    return int(math.ceil(size / IMAGENET_CROP_RATIO))  # 224 -> 256, 299 -> 342


def _imagenet_transform(spec: DatasetSpec, augment: bool) -> Transform:
    from torchvision import transforms  # torchvision (1.7 s): CIFAR / ImageNet only (zsq_probe.data)

    size = int(spec.image_shape[1])
    if augment:
        steps = [transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()]
    else:
        steps = [transforms.Resize(_imagenet_resize(size)), transforms.CenterCrop(size)]
    return transforms.Compose(steps + [transforms.ToTensor(), _normalize(spec)])


def _load_imagenet(
    root: PathArg | None,
    split: str,
    download: bool,
    augment: bool,
    num_classes: int | None,
    spec: DatasetSpec | None = None,
) -> ImageDataset:
    spec = spec if spec is not None else DATASETS["imagenet"]
    if root is None:
        raise UserError(
            "ImageNet needs a data folder: pass --data-root DIR, the val folder of "
            "WordNet-id class folders (n01440764/ ...) or a folder containing val/"
        )
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        how = " (ImageNet cannot be downloaded automatically: get it from image-net.org)" if download else ""
        raise UserError(
            f"ImageNet folder {root_path} does not exist: pass --data-root DIR, the val folder "
            f"of WordNet-id class folders or a folder containing val/{how}"
        )
    from torchvision.datasets import ImageFolder  # torchvision (1.7 s): CIFAR / ImageNet only (zsq_probe.data)

    sub = "train" if split == "train" else "val"
    folder = root_path / sub if (root_path / sub).is_dir() else root_path
    try:
        ds = ImageFolder(str(folder), transform=_imagenet_transform(spec, augment))
    except (FileNotFoundError, RuntimeError, OSError) as exc:
        raise UserError(
            f"ImageNet folder {folder} has no class sub-folders with images ({one_line(exc)}); "
            f"expected {folder}/n01440764/*.JPEG ... (one folder per WordNet id), or a folder containing {sub}/"
        ) from exc
    expected = spec.num_classes if num_classes is None else int(num_classes)
    if not any(_WNID.match(c) for c in ds.classes):
        warnings.warn(
            f"ImageNet folder {folder}: class folders ({ds.classes[0]}, ...) do not look like "
            f"WordNet ids (n01440764 ...); labels are their sorted order",
            stacklevel=3,
        )
    if len(ds.classes) != expected:
        warnings.warn(
            f"ImageNet folder {folder} has {len(ds.classes)} class folders, the teacher predicts {expected} "
            f"classes: labels are positions in the sorted folders present and will not match the teacher's "
            f"classes unless all {expected} folders are there",
            stacklevel=3,
        )
    ds.spec = spec
    images: ImageDataset = ds  # torchvision's ImageFolder (untyped here) with the transform yields Samples
    return images


# --------------------------------------------------------------------------- public API


def load_dataset(
    name: str,
    root: PathArg | None = None,
    split: str = "train",
    download: bool = False,
    augment: bool = False,
    num_classes: int | None = None,
    normalization: str = "reference",
    image_size: int | None = None,
) -> ImageDataset:
    """A data set yielding ``(normalised float tensor, int label)``.

    Args:
        name: ``"digits"``, ``"cifar10"``, ``"cifar100"`` or ``"imagenet"``.
        root: for CIFAR the folder containing ``cifar-10-batches-py/`` (``cifar-100-python/``) or that folder
            itself; for ImageNet the val folder of class folders or a folder containing ``val/`` (and ``train/``
            for ``split="train"``); ignored for digits.
        split: ``"train"`` or ``"test"`` (ImageNet's ``"test"`` is its val set).
        download: fetch a missing CIFAR folder into `root`.
        augment: train-time augmentation (module docstring).
        num_classes: how many classes the consuming teacher predicts (ImageNet warns when the folder has a
            different number of classes; other data sets raise UserError on a mismatch).
        normalization: ``"reference"`` (default) or ``"pytorchcv"``; only CIFAR's constants differ (see the
            module docstring).  The data set's ``spec`` records which was applied.
        image_size: ImageNet's input size (default 224; `teachers.metadata.teacher_input_size` gives a
            teacher's).

    Returns:
        The data set (with a ``spec`` attribute, its DatasetSpec).

    Raises:
        UserError: missing or malformed data, an unknown name, split or normalisation, or a class count that does
            not match, with a one-line message.
    """
    spec = get_spec(name, normalization, image_size)
    if split not in _SPLITS:
        raise UserError(f"unknown split {split!r}: use 'train' or 'test'")
    if spec.name == "imagenet":
        return _load_imagenet(root, split, download, augment, num_classes, spec=spec)
    if num_classes is not None and int(num_classes) != spec.num_classes:
        raise UserError(
            f"data set {spec.name} has {spec.num_classes} classes but the teacher predicts "
            f"{num_classes}: pick the data set that matches the teacher"
        )
    if spec.name == "digits":
        return _load_digits(split, augment)
    return _load_cifar(spec.name, root, split, download, augment, spec=spec)


def make_loader(
    dataset: Dataset[_T],
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
    persistent_workers: bool = False,
) -> DataLoader[_T]:
    """A DataLoader whose order depends only on ``seed`` (its own ``torch.Generator``).

    Worker processes (``num_workers > 0``) get torch/random/numpy seeds derived from that
    generator, so augmentation in workers is reproducible too.

    Args:
        dataset: a map-style data set.
        batch_size: samples per batch (>= 1).
        shuffle: a new order every pass, drawn from the generator.
        seed: the generator's seed.
        num_workers: loader worker processes (0: in this process).
        drop_last: leave out the last, smaller batch.
        pin_memory: batches in page-locked memory (fast, asynchronous copies to a GPU; only when CUDA is
            available).
        persistent_workers: keep the workers between passes (a loader iterated every epoch).

    Returns:
        The loader.

    Raises:
        UserError: a batch size below 1, a negative worker count, or an empty data set.
    """
    if int(batch_size) < 1:
        raise UserError(f"batch size must be >= 1, got {batch_size}")
    if int(num_workers) < 0:
        raise UserError(f"number of data workers must be >= 0, got {num_workers}")
    if len(dataset) == 0:  # type: ignore[arg-type]  # map-style data sets are sized; torch's Dataset stub is not
        raise UserError("the data set is empty: check --data-root")
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=int(batch_size),
        shuffle=bool(shuffle),
        generator=gen,
        num_workers=int(num_workers),
        drop_last=bool(drop_last),
        pin_memory=bool(pin_memory) and torch.cuda.is_available(),
        persistent_workers=bool(persistent_workers) and int(num_workers) > 0,
    )


# names served from zsq_probe.data.cifar_readers on first use (it imports torchvision)
LAZY_READERS = ("OnDiskCIFAR10", "OnDiskCIFAR100")


def __getattr__(name: str) -> type[OnDiskCIFAR]:
    """The CIFAR readers (`OnDiskCIFAR10`, `OnDiskCIFAR100`), loaded with torchvision on first use.

    Args:
        name: the attribute looked up.

    Returns:
        The reader class.

    Raises:
        AttributeError: any other name.
    """
    if name in LAZY_READERS:
        from zsq_probe.data import cifar_readers  # torchvision (1.7 s): CIFAR / ImageNet only (zsq_probe.data)

        reader: type[OnDiskCIFAR] = getattr(cifar_readers, name)
        return reader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
