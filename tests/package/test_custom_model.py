"""A model and data of your own, first class: the complete example of docs/python-api.md (torchvision's ResNet-18 on
a small ImageFolder of PNG files the example writes, offline) runs as printed, and its runs report validation top-1, the
KD baseline trains on the spec's own training images, and the run goes by the name the user gave."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
CLASSES = ("bars", "dots", "plain")


def write_shapes(root: Path, per_split=(("train", 24), ("val", 8)), size=32, seed=0) -> None:
    """shapes/{train,val}/<class>/*.png: dark noise with red bars, green dots or a blue cast."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, n in per_split:
        for k, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
                if k == 0:
                    img[:, ::4, 0] = 230
                elif k == 1:
                    img[::5, ::5, 1] = 250
                else:
                    img[..., 2] += 120
                Image.fromarray(img).save(folder / f"{i}.png")


EXAMPLE_PAGE = ROOT / "docs" / "python-api.md"


def docs_example() -> str:
    """The custom-model code block of docs/python-api.md (the one that builds a DatasetSpec from ImageFolders)."""
    blocks = re.findall(r"```python\n(.*?)```", EXAMPLE_PAGE.read_text(), flags=re.S)
    found = [b for b in blocks if "ImageFolder" in b and "zp.train" in b]
    assert len(found) == 1, "docs/python-api.md holds one custom-model example"
    return found[0]


def as_dict(summary) -> dict:
    """A run summary as a dict, whether `zp.train` returned a dict or an object with `to_dict()`."""
    return summary.to_dict() if hasattr(summary, "to_dict") else summary


@pytest.mark.slow  # two runs of a quantised ResNet-18 on CPU: ~2.5 min on 2 cores
def test_docs_torchvision_imagefolder_example(tmp_path, monkeypatch):
    from zsq_probe.plots import write_figures
    from zsq_probe.rundir.store import RunDir
    from zsq_probe.teachers.accuracy import top1_and_ce

    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    namespace: dict = {}
    exec(compile(docs_example(), str(EXAMPLE_PAGE), "exec"), namespace)  # it writes shapes/ as write_shapes does
    ait, kd = as_dict(namespace["ait"]), as_dict(namespace["kd"])
    teacher, val_set = namespace["teacher"], namespace["val_set"]
    write_shapes(tmp_path / "expected")  # the example's stand-in data is this module's, image for image
    written = sorted(p.relative_to("shapes") for p in Path("shapes").rglob("*.png"))
    assert written == sorted(p.relative_to(tmp_path / "expected") for p in (tmp_path / "expected").rglob("*.png"))
    assert len(written) == 96 and all(
        (Path("shapes") / p).read_bytes() == (tmp_path / "expected" / p).read_bytes() for p in written
    )

    # validation top-1 like a built-in run: the teacher's measured here on the val folder, the student's per epoch
    loader = torch.utils.data.DataLoader(val_set, batch_size=50)
    assert ait["teacher_top1"] == pytest.approx(top1_and_ce(teacher, loader)[0]) and ait["teacher_top1"] > 0.9
    metrics = RunDir("runs/mine-ait").read_table("metrics").sort_values("epoch")
    assert ait["final_val_top1"] == pytest.approx(metrics["val_top1"].iloc[-1])
    assert 0.0 <= ait["final_val_top1"] <= 1.0 and len(metrics) == 2
    # KD: the random student trained one pass over the spec's 72 training images (16 a batch, last dropped)
    kd_metrics = RunDir("runs/mine-kd").read_table("metrics")
    assert kd["final_val_top1"] is not None and kd["full_precision_student"] is True
    assert json.loads(Path("runs/mine-kd/config.json").read_text())["config"]["dataset"]["source"] == "real"
    assert len(kd_metrics) == 1 and kd_metrics["loss_ce"].notna().all()

    # the user's name, the module's class and the data spec's name
    assert (ait["teacher"], ait["teacher_class"], ait["data"]) == ("my_resnet18", "ResNet", "shapes")
    recorded = json.loads(Path("runs/mine-ait/config.json").read_text())["teacher"]
    assert recorded["module_class"] == "ResNet" and recorded["name"] == "my_resnet18" and recorded["source"] == "module"
    written, failed = write_figures(["runs/mine-kd", "runs/mine-ait"], "figs", only="fig5,fig6")
    assert failed == 0 and [p.name for p in written] == ["fig5_training.png"]  # fig6 skipped: no stored data spec
    assert "my_resnet18/shapes" in Path("figs/fig5_training.txt").read_text()


def test_kd_student_of_a_module_is_a_fresh_copy_of_its_architecture():
    """preset kd with a teacher module: the student is the module re-initialised (same architecture, new weights
    drawn from the run's seed, BatchNorm statistics reset)."""
    from zsq_probe.training.build import reinitialized

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(2, 2))
    with torch.no_grad():
        model[1].running_mean.fill_(3.0)
    torch.manual_seed(1)
    a = reinitialized(model)
    torch.manual_seed(1)
    b = reinitialized(model)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a[0].weight, model[0].weight) and torch.equal(a[1].running_mean, torch.zeros(4))
    assert model[1].running_mean[0] == 3.0  # the teacher itself untouched


def test_a_spec_without_training_images_cannot_feed_kd(tmp_path):
    import torchvision

    import zsq_probe as zp
    from zsq_probe.errors import UserError

    spec = zp.DatasetSpec("mine", 3, (3, 32, 32), (0.5,) * 3, (0.25,) * 3, "no images")
    cfg = zp.resolve_config("kd", teacher="mine", flags={"epochs": 1, "batch_size": 4})
    with pytest.raises(UserError, match="DatasetSpec"):
        zp.build_run(cfg, teacher=torchvision.models.resnet18(num_classes=3), data_spec=spec)


def test_calibration_and_top1_of_a_module_on_its_spec(tmp_path):
    """`evaluate_quantized` (the `eval` job) of a module of your own: FP top-1 on spec.val, the quantised model's
    activation ranges calibrated on spec.train, the name given and the module's class recorded."""
    import torchvision
    from torchvision import transforms

    import zsq_probe as zp
    from zsq_probe.errors import UserError
    from zsq_probe.teachers.accuracy import evaluate_quantized, top1_and_ce

    write_shapes(tmp_path / "shapes", per_split=(("train", 4), ("val", 3)))
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.25,) * 3)])
    train_set, val_set = (
        torchvision.datasets.ImageFolder(tmp_path / "shapes" / s, transform=tf) for s in ("train", "val")
    )
    spec = zp.DatasetSpec("shapes", 3, (3, 32, 32), (0.5,) * 3, (0.25,) * 3, "mine", train=train_set, val=val_set)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.LazyLinear(3)
    )
    model(torch.zeros(1, 3, 32, 32))
    model.eval()
    result = evaluate_quantized(model, w_bits=4, a_bits=4, calib_batches=1, batch_size=4, data_spec=spec, name="tiny")
    fp = top1_and_ce(model, torch.utils.data.DataLoader(val_set, batch_size=4))[0]
    assert result["fp_top1"] == pytest.approx(fp) and 0.0 <= result["quant_top1"] <= 1.0
    assert (result["teacher"], result["data"], result["weights_source"]) == ("tiny", "shapes", "module")
    assert result["quantization"]  # the quantised layers, ranges calibrated on spec.train
    with pytest.raises(UserError, match="train=...,"):
        evaluate_quantized(model, data_spec=zp.DatasetSpec("s", 3, (3, 32, 32), (0.5,) * 3, (0.25,) * 3, "no data"))
