"""Building a run (zsq_probe.training.build): a CIFAR teacher validates under the configured normalisation, recorded
in config.json with the weight file's fingerprint (issue 12, items 4 and 5; the weights and data are fabricated)."""

import hashlib
import warnings

import pytest
import torch
from fabricated_data import make_cifar10
from pytorchcv.models.common import model_store

from zsq_probe.data.datasets import get_spec
from zsq_probe.presets import resolve_config
from zsq_probe.teachers import loader as models

R20_FILE = "resnet20_cifar10-0597-9b0024ac.pth"


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if anything reaches pytorchcv's download machinery."""

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(model_store, "_download", refuse)
    monkeypatch.setattr(model_store, "get_model_file", refuse)
    monkeypatch.setattr(models, "_fetch", refuse)  # our own downloader (release files pytorchcv no longer lists)


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def r20_root(tmp_path_factory):
    """pytorchcv's cache with a (random) resnet20_cifar10 file and a fabricated CIFAR-10 folder."""
    root = tmp_path_factory.mktemp("r20")
    torch.manual_seed(0)
    torch.save(models.build_architecture("resnet20_cifar10").state_dict(), root / R20_FILE)
    make_cifar10(root / "data", per_batch=4, n_test=6)
    return root


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
