"""Building a run (zsq_probe.training.build): a CIFAR teacher validates under the configured normalisation, recorded
in config.json with the weight file's fingerprint (issue 12, items 4 and 5; the weights and data are fabricated)."""

import hashlib
import warnings

import pytest

from zsq_probe.data.datasets import get_spec
from zsq_probe.presets import resolve_config

R20_FILE = "resnet20_cifar10-0597-9b0024ac.pth"


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.mark.parametrize("norm", ["reference", "pytorchcv"])
def test_training_validates_and_records_under_the_configured_normalisation(r20_root, tmp_path, norm, no_network):
    from zsq_probe.rundir.store import RunDir
    from zsq_probe.runs import train
    from zsq_probe.training.build import build_run

    cfg = resolve_config(
        "gdfq",
        teacher="resnet20_cifar10",
        flags={
            "weights_root": str(r20_root),
            "data_root": str(r20_root / "data"),
            "epochs": 1,
            "iters_per_epoch": 1,
            "batch_size": 4,
            "warmup_epochs": 0,
            "val_batch_size": 6,
            "act_range_epochs": 1,
            "normalization": norm,
        },
    )
    parts = quiet(build_run, cfg, for_training=True)
    assert parts.val_loader.dataset.spec == get_spec("cifar10", norm) and parts.spec.normalization == norm
    quiet(train, cfg, tmp_path / "run", progress=False)
    doc = RunDir(tmp_path / "run").read_config_doc()
    assert doc["config"]["dataset"]["normalization"] == norm
    teacher = doc["teacher"]  # the weight file's fingerprint: name, sha256, release
    assert teacher["weights_file"] == R20_FILE and teacher["weights_release"] == "v0.0.163"
    assert teacher["weights_sha256"] == hashlib.sha256((r20_root / R20_FILE).read_bytes()).hexdigest()
    assert teacher["paper_weights_file"] == R20_FILE and teacher["weights_record_match"] is False
