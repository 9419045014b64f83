"""CIFAR folders fabricated in tmp_path, in torchvision's on-disk layouts, and the tensors their rows must load
as (the data tests, and the tests that train or evaluate a CIFAR teacher on them)."""

import pickle

import numpy as np
import torch

CIFAR10_PER_BATCH = 3


def _pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def make_cifar10(root, per_batch=CIFAR10_PER_BATCH, n_test=4, seed=0):
    """torchvision's cifar-10-batches-py layout: data uint8 N x 3072 (R,G,B planes), 'labels'."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for i in range(1, 6):
        x = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        _pickle(
            folder / f"data_batch_{i}",
            {
                "batch_label": f"training batch {i} of 5",
                "data": x,
                "labels": y,
                "filenames": [f"img{i}_{j}.png" for j in range(per_batch)],
            },
        )
        batches[f"data_batch_{i}"] = (x, y)
    xt = rng.integers(0, 256, size=(n_test, 3072), dtype=np.uint8)
    yt = [int(v) for v in rng.integers(0, 10, size=n_test)]
    _pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "data": xt, "labels": yt})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072})
    train_x = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    train_y = sum((batches[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    return folder, (train_x, train_y), (xt, yt), names


def make_cifar100(root, n_train=6, n_test=3, seed=1):
    """torchvision's cifar-100-python layout: train/test with 'fine_labels', meta with names."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, size=n)]
        fine[0] = 99
        _pickle(folder / split, {"data": x, "fine_labels": fine, "coarse_labels": [v // 5 for v in fine]})
        out[split] = (x, fine)
    names = [f"class{i:02d}" for i in range(100)]
    _pickle(folder / "meta", {"fine_label_names": names, "coarse_label_names": [f"c{i}" for i in range(20)]})
    return folder, out, names


def expected_cifar_tensor(row, spec):
    """The normalised image a CIFAR row must become: planes R,G,B of 32x32, /255, (x-mean)/std."""
    img = torch.from_numpy(row.astype(np.float32)).view(3, 32, 32) / 255.0
    mean = torch.tensor(spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1)
    return (img - mean) / std
