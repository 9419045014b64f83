"""What a teacher's name says about it: the data set it was trained on (pytorchcv's `_cifar10` / `_cifar100`
suffixes, ImageNet otherwise, `digits`) and the input size it expects (pytorchcv's published `img_size`)."""

from __future__ import annotations

import functools

from zsq_probe.data.datasets import DATASETS, DatasetSpec, get_spec
from zsq_probe.errors import UserError

# suffixes of pytorchcv models trained on data sets (or tasks) this toolkit does not handle
_UNSUPPORTED_SUFFIXES = {
    "svhn": "SVHN",
    "cub": "CUB-200-2011",
    "voc": "Pascal VOC (segmentation)",
    "coco": "COCO (detection/segmentation/pose)",
    "ade20k": "ADE20K (segmentation)",
    "cityscapes": "Cityscapes (segmentation)",
    "celebamaskhq": "CelebAMask-HQ (segmentation)",
    "widerface": "WIDER FACE (detection)",
}


def dataset_for_teacher(teacher_name: str) -> str:
    """Which data set a teacher expects: ``*_cifar10`` -> cifar10, ``*_cifar100`` -> cifar100,
    ``digits`` -> digits, anything else -> imagenet. SVHN and non-classification pytorchcv
    models -> UserError."""
    name = str(teacher_name).strip().lower()
    if not name:
        raise UserError("empty teacher name: pass e.g. --teacher resnet20_cifar10 (or digits)")
    if name == "digits":
        return "digits"
    suffix = name.rsplit("_", 1)[-1] if "_" in name else ""
    if suffix == "cifar10":
        return "cifar10"
    if suffix == "cifar100":
        return "cifar100"
    if suffix in _UNSUPPORTED_SUFFIXES:
        raise UserError(
            f"teacher {teacher_name!r} is trained on {_UNSUPPORTED_SUFFIXES[suffix]}, which zsq-probe does not "
            f"support: use a CIFAR-10/100 model (*_cifar10, *_cifar100), an ImageNet model, or digits"
        )
    return "imagenet"


def teacher_input_size(teacher_name: str) -> int | None:
    """The square input size an ImageNet teacher expects: pytorchcv's published ``img_size`` of the model
    (299 for inceptionv3, 224 for most); 224 for an ImageNet name pytorchcv does not list; None for
    CIFAR and digits teachers (their data sets have one size)."""
    if dataset_for_teacher(teacher_name) != "imagenet":
        return None
    return _pytorchcv_img_sizes().get(str(teacher_name).strip().lower(), DATASETS["imagenet"].image_shape[1])


def spec_for_teacher(teacher_name: str, normalization: str = "reference") -> DatasetSpec:
    """The :class:`DatasetSpec` of a teacher's data set at the input size the teacher expects."""
    return get_spec(dataset_for_teacher(teacher_name), normalization, teacher_input_size(teacher_name))


@functools.cache
def _pytorchcv_img_sizes() -> dict[str, int]:
    """Pytorchcv's model_metainfos.csv: model name -> img_size (its test input size); read once per process."""
    sizes = {}
    try:
        from pytorchcv.models.common import model_store  # not in older pytorchcv releases: sizes unknown

        rows = model_store.load_csv(model_store.get_model_metainfos_file_path())
        header = rows[0]
        col = header.index("img_size")
        for r in rows[1:]:
            if len(r) > col and str(r[col]).isdigit():
                sizes[str(r[0])] = int(r[col])
    except (ImportError, AttributeError, OSError, ValueError):
        pass
    return sizes
