"""zsq_probe.data.datasets: real on-disk formats fabricated in tmp_path and read through load_dataset; CIFAR files of
the wrong types or holding pickled code are refused (issues 13 and 24); the CIFAR normalisation as the AIT
reference evaluates it, or pytorchcv's on request (issue 12, item 4: the statistics from iamkanghyunchoi/ait
GDFQ_AIT/dataloader.py lines 130-134, the same in xushoukai/GDFQ dataloader.py lines 129-133; pytorchcv's from
osmr/imgclsmob pytorch/datasets/cifar10_cls_dataset.py, cifar10_val_transform, inherited by CIFAR-100); loader
workers give the same batches (issue 15)."""

import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_checks import snapshot
from fabricated_data import CIFAR10_PER_BATCH, _pickle, expected_cifar_tensor, make_cifar10, make_cifar100
from PIL import Image

from zsq_probe.data import datasets as data
from zsq_probe.data.datasets import DATASETS, get_spec, load_dataset, make_loader
from zsq_probe.errors import UserError
from zsq_probe.teachers.metadata import dataset_for_teacher


def load_quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_dataset(*args, **kwargs)


# --------------------------------------------------------------------------- specs


def test_specs():
    # default: the reference's per-data-set CIFAR statistics (both: test_cifar_constants_per_data_set_and_option)
    assert DATASETS["cifar10"].mean == (0.49139968, 0.48215827, 0.44653124)
    assert DATASETS["cifar10"].std == (0.24703233, 0.24348505, 0.26158768)
    assert DATASETS["cifar100"].mean == (0.50705882, 0.48666667, 0.44078431)
    assert DATASETS["cifar100"].std == (0.26745098, 0.25568627, 0.27607843)
    assert DATASETS["cifar100"].num_classes == 100
    assert DATASETS["imagenet"].mean == (0.485, 0.456, 0.406)
    assert DATASETS["imagenet"].std == (0.229, 0.224, 0.225)
    assert DATASETS["imagenet"].image_shape == (3, 224, 224)
    assert DATASETS["digits"].image_shape == (1, 16, 16)
    assert data.get_spec("CIFAR10") is DATASETS["cifar10"]
    with pytest.raises(UserError, match="unknown data set 'mnist'.*cifar10"):
        data.get_spec("mnist")


# --------------------------------------------------------------------------- CIFAR


def test_cifar10_train_and_test_values(tmp_path):
    folder, (train_x, train_y), (test_x, test_y), names = make_cifar10(tmp_path)
    spec = DATASETS["cifar10"]
    with pytest.warns(UserWarning, match="has 15 images, the official one has 50000"):
        train = load_dataset("cifar10", root=tmp_path, split="train")
    assert len(train) == 5 * CIFAR10_PER_BATCH
    assert list(train.classes) == names
    for i in (0, 4, 14):
        x, y = train[i]
        assert x.dtype == torch.float32 and x.shape == (3, 32, 32)
        assert isinstance(y, int) and y == train_y[i]
        torch.testing.assert_close(x, expected_cifar_tensor(train_x[i], spec), atol=1e-5, rtol=0)
    with pytest.warns(UserWarning, match="official one has 10000"):
        test = load_dataset("cifar10", root=tmp_path, split="test")
    assert [test[i][1] for i in range(len(test))] == test_y
    torch.testing.assert_close(test[3][0], expected_cifar_tensor(test_x[3], spec), atol=1e-5, rtol=0)


def test_cifar10_root_may_be_the_batches_folder_itself(tmp_path):
    folder, _, (test_x, test_y), _ = make_cifar10(tmp_path)
    a = load_quiet("cifar10", root=folder, split="test")
    b = load_quiet("cifar10", root=str(tmp_path), split="test")
    assert len(a) == len(b) == len(test_y)
    torch.testing.assert_close(a[1][0], b[1][0])


def test_cifar100_fine_labels_and_values(tmp_path):
    folder, out, names = make_cifar100(tmp_path)
    spec = DATASETS["cifar100"]
    for split in ("train", "test"):
        ds = load_quiet("cifar100", root=tmp_path, split=split)
        x_raw, fine = out[split]
        assert len(ds) == len(fine)
        assert [ds[i][1] for i in range(len(ds))] == fine
        assert ds[0][1] == 99
        assert len(ds.classes) == 100 and ds.classes[7] == names[7]
        torch.testing.assert_close(ds[1][0], expected_cifar_tensor(x_raw[1], spec), atol=1e-5, rtol=0)
    ds = load_quiet("cifar100", root=folder, split="test")
    assert len(ds) == 3


def test_cifar_missing_root_names_expected_folder(tmp_path):
    with pytest.raises(UserError) as err:
        load_dataset("cifar10", root=tmp_path / "nowhere")
    msg = str(err.value)
    assert "\n" not in msg
    assert f"CIFAR-10 not found under {tmp_path / 'nowhere'}" in msg
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg
    assert "--download" in msg
    with pytest.raises(UserError, match=r"cifar-100-python/.*--download"):
        load_dataset("cifar100", root=tmp_path)
    with pytest.raises(UserError, match="--data-root"):
        load_dataset("cifar10", root=None)


def test_cifar_folder_mixups_get_specific_hints(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "cifar-10-python.tar.gz").write_bytes(b"not extracted")
    with pytest.raises(UserError, match="extract it there"):
        load_dataset("cifar10", root=tmp_path / "a")
    make_cifar10(tmp_path / "b")
    with pytest.raises(UserError, match=r"holds CIFAR-10 \(cifar-10-batches-py/\), not CIFAR-100"):
        load_dataset("cifar100", root=tmp_path / "b")


def test_cifar_incomplete_and_corrupt_folders(tmp_path):
    folder, *_ = make_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(UserError, match="incomplete: missing data_batch_3"):
        load_dataset("cifar10", root=tmp_path, split="train")
    assert len(load_quiet("cifar10", root=tmp_path, split="test")) == 4  # the test split is still complete
    (folder / "test_batch").write_bytes(b"\x00garbage")
    with pytest.raises(UserError, match="could not be read") as err:
        load_dataset("cifar10", root=tmp_path, split="test")
    assert "\n" not in str(err.value)


def test_cifar_labels_out_of_range_rejected(tmp_path):
    folder, *_ = make_cifar10(tmp_path)
    _pickle(folder / "test_batch", {"data": np.zeros((2, 3072), np.uint8), "labels": [3, 10]})
    with pytest.raises(UserError, match="label 10 outside 0..9"):
        load_dataset("cifar10", root=tmp_path, split="test")


def test_cifar_augment_keeps_shape_and_is_seeded(tmp_path):
    make_cifar10(tmp_path)
    plain = load_quiet("cifar10", root=tmp_path, split="train")
    aug = load_quiet("cifar10", root=tmp_path, split="train", augment=True)
    torch.manual_seed(3)
    a = torch.stack([aug[i][0] for i in range(len(aug))])
    torch.manual_seed(3)
    b = torch.stack([aug[i][0] for i in range(len(aug))])
    p = torch.stack([plain[i][0] for i in range(len(plain))])
    assert a.shape == p.shape == (15, 3, 32, 32)
    assert torch.equal(a, b)
    assert not torch.equal(a, p)


def test_num_classes_mismatch_rejected(tmp_path):
    with pytest.raises(UserError, match="digits has 10 classes but the teacher predicts 100"):
        load_dataset("digits", num_classes=100)


def test_unknown_split_rejected():
    with pytest.raises(UserError, match="unknown split 'val'"):
        load_dataset("digits", split="val")


# --------------------------------------------------------------------------- ImageNet


def make_imagenet(folder, wnids=("n01443537", "n01440764", "n01484850"), per_class=2):
    colours = {}
    for k, wnid in enumerate(wnids):
        (folder / wnid).mkdir(parents=True)
        for j in range(per_class):
            colour = (10 + 40 * k, 200 - 30 * j, 77)
            ext = "png" if j % 2 == 0 else "JPEG"
            Image.new("RGB", (48, 40), colour).save(folder / wnid / f"{wnid}_{j}.{ext}")
            colours[(wnid, j)] = colour
    return colours


def test_imagenet_folder_class_order_and_values(tmp_path):
    colours = make_imagenet(tmp_path / "val")
    with pytest.warns(UserWarning, match="has 3 class folders, the teacher predicts 1000"):
        ds = load_dataset("imagenet", root=tmp_path, split="test")  # a folder containing val/
    assert ds.classes == ["n01440764", "n01443537", "n01484850"]  # sorted wnid order
    assert len(ds) == 6
    spec = DATASETS["imagenet"]
    by_label = {}
    for i in range(len(ds)):
        x, y = ds[i]
        assert x.shape == (3, 224, 224) and isinstance(y, int)
        by_label.setdefault(y, []).append(x)
    assert sorted(by_label) == [0, 1, 2]
    # the png of n01443537 (sorted index 1) is a constant colour: normalisation is exact
    colour = colours[("n01443537", 0)]
    expected = torch.tensor([(c / 255 - m) / s for c, m, s in zip(colour, spec.mean, spec.std)])
    x0 = by_label[1][0]
    torch.testing.assert_close(x0.mean(dim=(1, 2)), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(x0[:, 100, 100], expected, atol=1e-5, rtol=0)
    # root may be the val folder itself
    ds2 = load_quiet("imagenet", root=tmp_path / "val", split="test")
    assert ds2.classes == ds.classes and len(ds2) == 6
    # when the folder count matches the teacher, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset("imagenet", root=tmp_path / "val", num_classes=3)


def test_imagenet_bad_layouts(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_dataset("imagenet", root=tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(UserError, match="no class sub-folders with images") as err:
        load_dataset("imagenet", root=tmp_path / "flat")
    assert "\n" not in str(err.value)
    (tmp_path / "emptyclass" / "n01440764").mkdir(parents=True)
    with pytest.raises(UserError, match="no class sub-folders with images"):
        load_dataset("imagenet", root=tmp_path / "emptyclass")
    with pytest.raises(UserError, match="--data-root"):
        load_dataset("imagenet", root=None)


def test_imagenet_non_wnid_folders_warn(tmp_path):
    make_imagenet(tmp_path, wnids=("cat", "dog"), per_class=1)
    with pytest.warns(UserWarning, match="do not look like WordNet ids"):
        load_dataset("imagenet", root=tmp_path, num_classes=2)


# --------------------------------------------------------------------------- digits


def test_digits_split_fixed_disjoint_stratified():
    images, labels, train_idx, test_idx = data._digits_split()
    assert len(train_idx) == 1198 and len(test_idx) == 599
    assert len(set(train_idx) & set(test_idx)) == 0
    assert sorted(set(train_idx) | set(test_idx)) == list(range(1797))
    # stratified: each class's test share is about 1/3
    for c in range(10):
        n_c = (labels == c).sum()
        assert abs((labels[test_idx] == c).sum() - n_c / 3) <= 1
    again = data._digits_split()
    assert np.array_equal(again[2], train_idx) and np.array_equal(again[3], test_idx)


def test_digits_split_cache_holds_sklearns_split_and_a_damaged_file_is_computed_again(tmp_path, monkeypatch):
    """The cached split (what a process reads instead of importing scikit-learn) is sklearn's, array for array and
    dtype for dtype; a damaged cache file is replaced, not trusted."""
    monkeypatch.setenv("ZSQ_PROBE_CACHE", str(tmp_path))
    want = data._digits_split_from_sklearn()
    first = data._digits_split()  # computes and writes the cache
    path = data._digits_split_cache()
    assert path.is_file() and path.parent == tmp_path / "data"
    cached = data._digits_split()  # reads it
    for w, f, c in zip(want, first, cached):
        assert np.array_equal(w, f) and np.array_equal(w, c) and w.dtype == c.dtype and w.shape == c.shape
    path.write_bytes(b"PK\x03\x04 not a zip")
    again = data._digits_split()
    assert all(np.array_equal(w, a) for w, a in zip(want, again))
    assert all(np.array_equal(w, a) for w, a in zip(want, data._digits_split()))  # rewritten whole


def test_with_the_split_cached_digits_load_without_sklearn(tmp_path, monkeypatch):
    """The point of the cache: once written, loading the digits never reaches scikit-learn (seconds to import in
    a fresh process)."""
    monkeypatch.setenv("ZSQ_PROBE_CACHE", str(tmp_path))
    data._digits_split()  # writes the cache

    def no_sklearn():
        raise AssertionError("the cached split was not used")

    monkeypatch.setattr(data, "_digits_split_from_sklearn", no_sklearn)
    assert len(load_dataset("digits", split="test")) == 599


def test_digits_dataset_values_and_constants():
    spec = DATASETS["digits"]
    train = load_dataset("digits", split="train")
    test = load_dataset("digits", split="test")
    assert len(train) == 1198 and len(test) == 599
    x, y = train[0]
    assert x.shape == (1, 16, 16) and x.dtype == torch.float32 and isinstance(y, int)
    # the spec's constants are the train split's pixel mean / std (after upsampling)
    raw, _ = data._digits_unnormalised("train")
    assert 0.0 <= raw.min() and raw.max() <= 1.0
    assert abs(raw.mean().item() - spec.mean[0]) < 1e-3
    assert abs(raw.std(unbiased=False).item() - spec.std[0]) < 1e-3
    torch.testing.assert_close(train.images, (raw - spec.mean[0]) / spec.std[0])
    # upsampling is bilinear from the 8x8 originals scaled to [0, 1]
    images, labels, train_idx, _ = data._digits_split()
    up = torch.nn.functional.interpolate(
        torch.from_numpy(images[train_idx[:5]]).unsqueeze(1), size=(16, 16), mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(raw[:5], up)
    assert [train[i][1] for i in range(5)] == labels[train_idx[:5]].tolist()
    # deterministic
    assert torch.equal(load_dataset("digits", split="test").images, test.images)
    # root and download are ignored: digits ship with scikit-learn
    assert len(load_dataset("digits", root="/nonexistent", split="test", download=True)) == 599


def test_digits_augment_shifts_within_bounds():
    aug = load_dataset("digits", split="train", augment=True)
    plain = load_dataset("digits", split="train")
    torch.manual_seed(0)
    xs = [aug[i][0] for i in range(20)]
    assert all(x.shape == (1, 16, 16) for x in xs)
    assert any(not torch.equal(x, plain[i][0]) for i, x in enumerate(xs))
    bg = -DATASETS["digits"].mean[0] / DATASETS["digits"].std[0]
    # a shifted image keeps the same pixel values, moved: its values are a subset of the original plus background
    for i, x in enumerate(xs):
        vals = set(torch.round(plain[i][0] * 1e4).flatten().tolist()) | {round(bg * 1e4)}
        assert set(torch.round(x * 1e4).flatten().tolist()) <= vals


# --------------------------------------------------------------------------- loader


def test_make_loader_is_seeded():
    ds = load_dataset("digits", split="test")

    def order(seed):
        return torch.cat([y for _, y in make_loader(ds, 64, shuffle=True, seed=seed)]).tolist()

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert sorted(order(1)) == sorted(ds.targets)
    unshuffled = torch.cat([y for _, y in make_loader(ds, 100, shuffle=False, seed=0)]).tolist()
    assert unshuffled == ds.targets
    batches = list(make_loader(ds, 100, shuffle=False, seed=0, drop_last=True))
    assert len(batches) == 5 and batches[0][0].shape == (100, 1, 16, 16)
    with pytest.raises(UserError, match="batch size must be >= 1"):
        make_loader(ds, 0, shuffle=True, seed=0)


def test_make_loader_does_not_touch_global_rng():
    ds = load_dataset("digits", split="test")
    torch.manual_seed(11)
    ref = torch.rand(3)
    torch.manual_seed(11)
    list(make_loader(ds, 128, shuffle=True, seed=5))
    assert torch.equal(torch.rand(3), ref)


# --------------------------------------------------------------------------- teacher -> data set


@pytest.mark.parametrize(
    "name,expected",
    [
        ("resnet20_cifar10", "cifar10"),
        ("resnet56_cifar100", "cifar100"),
        ("ResNet20_CIFAR100", "cifar100"),
        ("digits", "digits"),
        ("resnet18", "imagenet"),
        ("mobilenetv2_w1", "imagenet"),
        ("resnet50", "imagenet"),
    ],
)
def test_dataset_for_teacher(name, expected):
    assert dataset_for_teacher(name) == expected


@pytest.mark.parametrize("name", ["resnet20_svhn", "resnet18_cub", "pspnet_resnetd101b_voc"])
def test_dataset_for_teacher_rejects_other_data(name):
    with pytest.raises(UserError, match="does not support"):
        dataset_for_teacher(name)


def test_datasets_pickle_for_worker_processes(tmp_path):
    """spawn-based workers (macOS, Windows) pickle the data set: every kind must survive it."""
    make_cifar10(tmp_path / "c10")
    make_imagenet(tmp_path / "inet", per_class=1)
    sets = [
        load_quiet("cifar10", root=tmp_path / "c10", split="test"),
        load_quiet("imagenet", root=tmp_path / "inet", split="test"),
        load_dataset("digits", split="test"),
    ]
    for ds in sets:
        back = pickle.loads(pickle.dumps(ds))
        assert len(back) == len(ds)
        torch.testing.assert_close(back[0][0], ds[0][0])
        assert back[0][1] == ds[0][1]


def test_make_loader_with_workers_is_reproducible():
    aug = load_dataset("digits", split="test", augment=True)

    def first_batches(seed):
        loader = make_loader(aug, 150, shuffle=True, seed=seed, num_workers=1)
        return [x for x, _ in loader][:2]

    a, b = first_batches(4), first_batches(4)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(first_batches(5)[0], a[0])


def _cifar10(root: Path, labels=None, data_dtype=np.uint8, n: int = 4) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "labels": labels if labels is not None else rng.integers(0, 10, n).tolist(),
            "data": rng.integers(0, 256, (n, 3072)).astype(data_dtype),
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, protocol=2))


@pytest.mark.parametrize(
    "kind,mention",
    [("string labels", "label 'cat' (str)"), ("float64 images", "float64 images, expected uint8")],
)
def test_cifar_files_of_the_wrong_types_are_one_line_refusals(tmp_path, kind, mention):
    from zsq_probe.data.datasets import load_dataset

    if kind == "string labels":
        _cifar10(tmp_path, labels=["cat", "dog", "cat", "dog"])
    else:
        _cifar10(tmp_path, data_dtype=np.float64)
    before = snapshot(tmp_path)
    for split in ("train", "test"):
        with pytest.raises(UserError) as err:
            load_dataset("cifar10", root=tmp_path, split=split)
        assert mention in str(err.value) and "\n" not in str(err.value), err.value
    assert snapshot(tmp_path) == before


def test_genuine_cifar_types_still_load(tmp_path):
    from zsq_probe.data.datasets import load_dataset

    _cifar10(tmp_path)
    with pytest.warns(UserWarning, match="official"):
        ds = load_dataset("cifar10", root=tmp_path, split="test")
    assert ds.data.dtype == np.uint8 and len(ds) == 4 and all(isinstance(t, int) for t in ds.targets)


def test_loader_workers_give_the_same_validation_batches():
    from zsq_probe.data.datasets import load_dataset, make_loader

    val = load_dataset("digits", split="test")
    a = [x for x, _ in make_loader(val, 200, shuffle=False, seed=0)]
    b = [
        x
        for x, _ in make_loader(
            val, 200, shuffle=False, seed=0, num_workers=1, pin_memory=True, persistent_workers=True
        )
    ]
    assert len(a) == len(b) and all(torch.equal(x, z) for x, z in zip(a, b))


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _fabricate_cifar10(root: Path, n: int = 6, evil_marker: Path | None = None) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "batch_label": name,
            "labels": rng.integers(0, 10, n).tolist(),
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "filenames": [f"img{i}.png" for i in range(n)],
        }
        if evil_marker is not None and name == "data_batch_1":
            batch["labels"] = _Evil(evil_marker)
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"label_names": [f"c{i}" for i in range(10)], "num_cases_per_batch": n, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def _fabricate_cifar100(root: Path, n: int = 6) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in ("train", "test"):
        batch = {
            "batch_label": name,
            "fine_labels": rng.integers(0, 100, n).tolist(),
            "coarse_labels": rng.integers(0, 20, n).tolist(),
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "filenames": [b"x"] * n,
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": [f"k{i}" for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_genuine_cifar_folder_loads_what_torchvision_loads(name, tmp_path, monkeypatch):
    from torchvision import datasets as tvd

    from zsq_probe.data.datasets import load_dataset

    (_fabricate_cifar10 if name == "cifar10" else _fabricate_cifar100)(tmp_path)
    tv_cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cls, "_check_integrity", lambda self: True)  # fabricated files: no md5
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    with pytest.warns(UserWarning, match="official"):
        ours = load_dataset(name, root=tmp_path, split="train")
    theirs = tv_cls(root=str(tmp_path), train=True, download=False)
    assert np.array_equal(ours.data, theirs.data) and ours.data.dtype == theirs.data.dtype
    assert ours.targets == theirs.targets and ours.classes == theirs.classes
    x0, y0 = ours[0]
    assert x0.shape == (3, 32, 32) and y0 == theirs[0][1]


def test_malicious_cifar_batch_is_refused_and_runs_nothing(tmp_path):
    from zsq_probe.data.datasets import load_dataset

    marker = tmp_path / "pwned"
    _fabricate_cifar10(tmp_path / "data", evil_marker=marker)
    with pytest.raises(UserError) as err:
        load_dataset("cifar10", root=tmp_path / "data", split="train")
    assert "\n" not in str(err.value) and "refused to unpickle global" in str(err.value), err.value
    assert not marker.exists()


@pytest.mark.slow  # a fresh interpreter: the command line's own process is the point (slow tier, docs/development.md)
def test_malicious_cifar_batch_through_the_command_line_runs_nothing(tmp_path):
    """The same batch through `python -m zsq_probe train`: exit 2, one line, nothing run."""
    marker = tmp_path / "pwned"
    _fabricate_cifar10(tmp_path / "data", evil_marker=marker)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "zsq_probe",
            "train",
            "--teacher",
            "resnet20_cifar10",
            "--data-root",
            str(tmp_path / "data"),
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert not marker.exists()
    if "refused to unpickle" in r.stderr:  # this path loads real data (some teachers use synthetic data only)
        assert r.returncode == 2 and len([x for x in r.stderr.splitlines() if x.strip()]) == 1, r.stderr


REF_C10 = ((0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768))


REF_C100 = ((0.50705882, 0.48666667, 0.44078431), (0.26745098, 0.25568627, 0.27607843))


PYTORCHCV = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def test_cifar_constants_per_data_set_and_option():
    assert (get_spec("cifar10").mean, get_spec("cifar10").std) == REF_C10
    assert (get_spec("cifar100").mean, get_spec("cifar100").std) == REF_C100
    for name in ("cifar10", "cifar100"):
        spec = get_spec(name, "pytorchcv")
        assert (spec.mean, spec.std, spec.normalization) == (*PYTORCHCV, "pytorchcv")
        assert DATASETS[name].normalization == "reference" and get_spec(name) is DATASETS[name]
    for name in ("digits", "imagenet"):  # one normalisation either way
        a, b = get_spec(name), get_spec(name, "pytorchcv")
        assert (a.mean, a.std) == (b.mean, b.std)
    with pytest.raises(UserError, match="unknown normalisation 'imgclsmob'.*reference.*pytorchcv") as err:
        get_spec("cifar10", "imgclsmob")
    assert "\n" not in str(err.value)


def test_loaded_cifar_images_use_the_chosen_statistics(tmp_path):
    _, _, (test_x, _), _ = make_cifar10(tmp_path)
    _, out100, _ = make_cifar100(tmp_path)
    for norm in ("reference", "pytorchcv"):
        c10 = quiet(load_dataset, "cifar10", root=tmp_path, split="test", normalization=norm)
        c100 = quiet(load_dataset, "cifar100", root=tmp_path, split="test", normalization=norm)
        assert c10.spec.normalization == c100.spec.normalization == norm
        torch.testing.assert_close(
            c10[2][0], expected_cifar_tensor(test_x[2], get_spec("cifar10", norm)), atol=1e-5, rtol=0
        )
        torch.testing.assert_close(
            c100[1][0], expected_cifar_tensor(out100["test"][0][1], get_spec("cifar100", norm)), atol=1e-5, rtol=0
        )
    default = quiet(load_dataset, "cifar100", root=tmp_path, split="test")
    pixel = torch.from_numpy(out100["test"][0][0].astype("float32")).view(3, 32, 32)[:, 0, 0] / 255
    want = (pixel - torch.tensor(REF_C100[0])) / torch.tensor(REF_C100[1])
    torch.testing.assert_close(default[0][0][:, 0, 0], want, atol=1e-5, rtol=0)
