"""Data sets: specs, on-disk CIFAR / ImageNet folders, the embedded digits set and loaders.

The implementation lives in `zsq_probe.data.datasets`; the names users import from `zsq_probe.data` are
re-exported here.
"""

from typing import Any

from zsq_probe.data.datasets import (
    CIFAR_NORMALIZATION,
    DATASETS,
    IMAGENET_CROP_RATIO,
    NORMALIZATIONS,
    DatasetSpec,
    TensorImageDataset,
    check_normalization,
    get_spec,
    load_dataset,
    make_loader,
)

__all__ = [
    "CIFAR_NORMALIZATION",
    "DATASETS",
    "IMAGENET_CROP_RATIO",
    "NORMALIZATIONS",
    "DatasetSpec",
    "OnDiskCIFAR10",
    "OnDiskCIFAR100",
    "TensorImageDataset",
    "check_normalization",
    "get_spec",
    "load_dataset",
    "make_loader",
]


def __getattr__(name: str) -> type[Any]:
    """`OnDiskCIFAR10` / `OnDiskCIFAR100`: zsq_probe.data.datasets' lazy re-exports (torchvision on first use).

    Args:
        name: The attribute asked for.

    Returns:
        The reader class of that name.

    Raises:
        AttributeError: `name` is not one of the lazy readers.
    """
    from zsq_probe.data import datasets  # on first use (module docstring)

    if name in datasets.LAZY_READERS:
        reader: type[Any] = getattr(datasets, name)
        return reader
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
