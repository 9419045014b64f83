"""A teacher that expects another input size than its data set's default (pytorchcv's InceptionV3: 299 x 299)
gets it everywhere: generated batches, validation images, the Fig. 6 samples.  The GDFQ-style generators
upsample x4 (ARC x8), so they draw 300 x 300 and the samples are centre-cropped to 299."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from torch import nn

from zsq_probe.generators import build_generator, crop_to, generator_image_shape
from zsq_probe.teachers import loader as models


class SizeRecorder(nn.Module):
    """A stand-in ImageNet teacher (1000 classes) that records the sizes of the images it is shown."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=4)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 1000)
        self.seen: list[tuple[int, int]] = []

    def forward(self, x):
        self.seen.append(tuple(x.shape[-2:]))
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def test_generator_shape_rounds_up_to_the_upsampling_and_crop_takes_the_centre():
    assert generator_image_shape("gdfq", (3, 299, 299)) == (3, 300, 300)
    assert generator_image_shape("arc", (3, 299, 299)) == (3, 304, 304)
    assert generator_image_shape("gdfq", (3, 224, 224)) == (3, 224, 224)  # every other teacher unchanged
    assert generator_image_shape("qimera", (3, 32, 32)) == (3, 32, 32)
    x = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    assert crop_to(x, (3, 6, 6)) is x
    torch.testing.assert_close(crop_to(x, (3, 4, 4)), x[..., 1:5, 1:5])
    torch.testing.assert_close(crop_to(x, (3, 5, 5)), x[..., 0:5, 0:5])  # 300 -> 299 drops the last row/column
    gen = build_generator("gdfq", 10, generator_image_shape("gdfq", (3, 30, 30)))
    z, labels = gen.sample(2, generator=torch.Generator().manual_seed(0))
    assert crop_to(gen(z, labels), (3, 30, 30)).shape == (2, 3, 30, 30)


@pytest.mark.slow  # builds a real-size quantised InceptionV3 student (~7 s on one core): slow tier
def test_an_inceptionv3_run_feeds_its_teacher_299_px_generated_and_validation_images(tmp_path, monkeypatch):
    from zsq_probe.presets import resolve_config
    from zsq_probe.training.build import build_run

    wnid = "n01440764"
    (tmp_path / "val" / wnid).mkdir(parents=True)
    Image.new("RGB", (400, 360), (10, 120, 200)).save(tmp_path / "val" / wnid / f"{wnid}_0.JPEG")
    teacher = SizeRecorder().eval()
    info = models.TeacherInfo("inceptionv3", "imagenet", 1000, None, None, None, "explicit")
    import zsq_probe.training.build as build

    monkeypatch.setattr(build, "load_teacher", lambda name, **kw: (teacher, info))  # where build_run calls it
    cfg = resolve_config(
        "gdfq",
        teacher="inceptionv3",
        flags={"data_root": str(tmp_path), "device": "cpu", "probes": []},
        overrides=["batch_size=1", "val_batch_size=1"],  # one image a batch: 300 px generator passes are slow
    )
    with pytest.warns(UserWarning, match="1 class folders"):  # a one-class stand-in for ImageNet's val folder
        parts = build_run(cfg)
    assert tuple(parts.spec.image_shape) == (3, 299, 299)
    assert tuple(parts.source.generator.image_shape) == (3, 300, 300)
    parts.source.start_epoch(1)
    teacher.seen.clear()
    batch = parts.source.next_batch()
    assert batch.inputs.shape == (1, 3, 299, 299) and set(teacher.seen) == {(299, 299)}
    probe = parts.source.draw(seed=1, size=1)
    assert probe.inputs.shape == (1, 3, 299, 299)
    x, _ = next(iter(parts.val_loader))
    assert x.shape == (1, 3, 299, 299)  # imgclsmob's Resize 342 / CenterCrop 299
