"""The Python API as a notebook uses it: a config, training with the probes it names, tables as
DataFrames, a figure drawn into the caller's axes, a teacher module of one's own, and a probe of one's own
registered and run online and post hoc."""

import dataclasses
import importlib
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn

import zsq_probe as zp

FAST = {
    "epochs": 2,
    "iters_per_epoch": 3,
    "batch_size": 16,
    "warmup_epochs": 0,
    "act_range_epochs": 1,
    "val_max_batches": 1,
    "val_batch_size": 64,
    "hessian_batch_size": 32,
    "hessian_every_epochs": 1,
    "probe_every_steps": 1,
    "hessian_vectors": 2,
    "slq_runs": 1,
    "slq_steps": 4,
    "hessian_top_k": 1,
    "slice_points": 3,
}


def test_config_train_tables_and_a_figure_in_given_axes(tmp_path, digits_teacher):
    import matplotlib

    matplotlib.use("Agg")  # the notebook's choice; the library picks no backend
    import matplotlib.pyplot as plt

    cfg = zp.resolve_config("ait", teacher="digits", flags=dict(FAST, probes=["cosine", "hessian"]))
    assert (
        cfg.inundation.enabled and cfg.optim.lr == pytest.approx(1e-3) and cfg.probing.probes == ["cosine", "hessian"]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small probe batch
        summary = zp.train(cfg, tmp_path / "ait", progress=False)  # no observers passed: cfg's probes run
    assert summary.epochs_completed == 2
    cosine = zp.read_table(tmp_path / "ait", "cosine")
    trace = zp.read_table(tmp_path / "ait", "hessian_trace")
    assert isinstance(cosine, pd.DataFrame) and set(cosine.epoch) == {1, 2}
    assert set(trace.loss) == {"ce", "kl"} and (trace.origin == "online").all()

    from zsq_probe.plots import draw_cosine

    fig, (ax, other) = plt.subplots(1, 2)
    draw_cosine(ax, tmp_path / "ait")
    assert ax.lines and not other.lines  # drawn where it was asked, nowhere else
    x, y = ax.lines[0].get_data()
    epoch_means = cosine[(cosine.statistic == "epoch_mean") & (cosine.scope == "model")].sort_values("epoch")
    np.testing.assert_allclose(y, epoch_means.cosine)
    plt.close(fig)


class SmallNet(nn.Module):
    """A teacher of the user's own (not a pytorchcv model): conv-BN-ReLU twice, a linear head."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.output = nn.Linear(16, 10)

    def forward(self, x):
        return self.output(self.features(x))


@pytest.fixture(scope="module")
def small_teacher():
    """SmallNet trained for a few hundred steps on the digits training split."""
    from zsq_probe.data import load_dataset, make_loader

    torch.manual_seed(0)
    net = SmallNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    loader = make_loader(load_dataset("digits", None, split="train"), 64, shuffle=True, seed=0)
    for _ in range(12):
        for x, y in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
    return net.eval()


def test_a_teacher_module_of_ones_own(tmp_path, small_teacher):
    cfg = zp.resolve_config("gdfq", teacher="digits", flags=dict(FAST, probes=["crossings"]))
    cfg.teacher = "my-smallnet"  # the label of the run; the module is the teacher
    summary = zp.train(cfg, tmp_path / "own", progress=False, teacher=small_teacher)
    assert summary.teacher == "my-smallnet" and summary.teacher_top1 > 0.3  # chance: 0.1
    doc = zp.RunDir.open(tmp_path / "own").read_config_doc()
    assert doc["teacher"]["source"] == "module" and len(doc["teacher"]["weights_sha256"]) == 64
    layers = set(zp.read_table(tmp_path / "own", "crossings").layer)
    assert layers == {"features.0", "features.3", "output"}  # every Conv/Linear of the module is quantised
    assert all(p.requires_grad for p in small_teacher.parameters())  # the caller's module is not changed

    # resuming needs the same module
    cfg.epochs = 3
    with pytest.raises(zp.UserError, match="teacher module"):
        zp.train(cfg, tmp_path / "own", resume=True, force=True, progress=False, teacher=SmallNet())
    with pytest.raises(zp.UserError, match="pass the same module"):
        zp.train(cfg, tmp_path / "own", resume=True, force=True, progress=False)
    resumed = zp.train(cfg, tmp_path / "own", resume=True, force=True, progress=False, teacher=small_teacher)
    assert resumed.epochs_completed == 3


def test_a_module_teacher_needs_a_data_spec(tmp_path, small_teacher):
    cfg = zp.resolve_config("gdfq", teacher="digits", flags=dict(FAST))
    cfg.dataset.name = None
    with pytest.raises(zp.UserError, match="data spec"):
        zp.train(cfg, tmp_path / "x", progress=False, teacher=small_teacher)
    from zsq_probe.data import get_spec

    spec = get_spec("digits")
    custom = zp.DatasetSpec("my-digits", spec.num_classes, spec.image_shape, spec.mean, spec.std, "mine")
    summary = zp.train(cfg, tmp_path / "y", progress=False, teacher=small_teacher, data_spec=custom)
    assert summary.epochs_completed == 2 and summary.final_val_top1 is None  # no named data: no validation
    # the spec carries its validation images: validation top-1 as for a built-in data set (the same numbers)
    from zsq_probe.data import load_dataset

    with_val = dataclasses.replace(custom, val=load_dataset("digits", split="test"))
    summary = zp.train(cfg, tmp_path / "z", progress=False, teacher=small_teacher, data_spec=with_val)
    cfg.dataset.name = "digits"
    named = zp.train(cfg, tmp_path / "n", progress=False, teacher=small_teacher)
    assert summary.data == "my-digits" and summary.teacher_class == type(small_teacher).__name__
    assert summary.final_val_top1 == named.final_val_top1 and summary.teacher_top1 == named.teacher_top1


class WeightNorm(zp.Probe):
    """A user's probe: the student's parameter norm at each checkpoint (online at epoch ends, and post hoc)."""

    name = "weight_norm"
    tables = posthoc_tables = ("weight_norm",)
    needs_activation_ranges = False

    def on_epoch_end(self, ctx, epoch, metrics):
        self.measure_checkpoint(ctx, epoch)
        self.flush(ctx.run, epoch)

    def measure_checkpoint(self, ctx, epoch):
        norm = float(torch.sqrt(sum((p.detach().double() ** 2).sum() for p in ctx.params)))
        batch = ctx.probe_batch(epoch, 8)  # the run's own data source, the probe's own stream
        self.emit("weight_norm", epoch=epoch, origin=self.origin, norm=norm, batch_mean=float(batch.inputs.mean()))


def test_a_probe_of_ones_own_runs_online_and_post_hoc(tmp_path, digits_teacher):
    zp.register_probe(WeightNorm)
    try:
        cfg = zp.resolve_config("gdfq", teacher="digits", flags=dict(FAST, probes=["weight_norm"]))
        zp.train(cfg, tmp_path / "r", progress=False)
        online = zp.read_table(tmp_path / "r", "weight_norm")
        assert list(online.epoch) == [1, 2] and (online.origin == "online").all()
        post = zp.probe_run(tmp_path / "r", "weight_norm", epochs=[1, 2])
        assert list(post.origin) == ["posthoc", "posthoc"]
        np.testing.assert_allclose(post.norm, online.norm, rtol=1e-12)
        np.testing.assert_allclose(post.batch_mean, online.batch_mean, rtol=1e-6)
        assert len(zp.read_table(tmp_path / "r", "weight_norm")) == 4
    finally:
        from zsq_probe.probes import unregister_probe

        unregister_probe("weight_norm")
    with pytest.raises(zp.UserError, match="unknown probe"):
        zp.resolve_config("gdfq", teacher="digits", flags=dict(FAST, probes=["weight_norm"]))


def test_every_public_name_is_typed_and_listed():
    """`zp.<name>` resolves for mypy and editors: each lazy name of _EXPORTS is imported under TYPE_CHECKING from
    the module the lazy loader takes it from, and __all__ lists exactly those names."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(zp.__file__).read_text())
    typed = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom):
                    typed.update({alias.name: stmt.module for alias in stmt.names})
    for name, module in zp._EXPORTS.items():
        assert typed.get(name) == module, name
        assert getattr(zp, name) is getattr(importlib.import_module(module), name)
    assert sorted(zp.__all__) == sorted(["__version__", "read_table", *zp._EXPORTS])
