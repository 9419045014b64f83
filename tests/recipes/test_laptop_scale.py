"""`--scale laptop`: the recipes' ResNet-20 / CIFAR-10 runs and the demo on real CIFAR-10 at
presets.LAPTOP_SCALE_SETTINGS (planning only: the runs themselves need a trained teacher and the data set;
docs/real-data.md has the measured runs)."""

from __future__ import annotations

import pytest

from zsq_probe.cli import main
from zsq_probe.errors import UserError
from zsq_probe.presets import LAPTOP_SCALE_SETTINGS
from zsq_probe.recipes import plan_recipe
from zsq_probe.runs.demo import demo_plan, laptop_scale

pytestmark = pytest.mark.teacher_free


def test_a_recipe_at_laptop_scale_keeps_its_resnet20_runs_with_the_laptop_settings(tmp_path):
    planned = plan_recipe("fig2", "laptop", tmp_path, data_root="/data", weights="/w/t.pt")
    assert [j.spec["preset"] for j in planned.jobs] == ["kd", "gdfq"]
    for job in planned.jobs:
        cfg = job.config()
        assert (cfg.teacher, cfg.dataset.name, cfg.weights, cfg.dataset.root) == (
            "resnet20_cifar10",
            "cifar10",
            "/w/t.pt",
            "/data",
        )
        assert (cfg.epochs, cfg.iters_per_epoch, cfg.batch_size) == (10, 40, 64)
        assert cfg.quant.range_ema == "plain"  # 2 x 40 range updates: the reference's rule would not settle
        assert job.sets[: len(LAPTOP_SCALE_SETTINGS)] == [
            f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}" for k, v in LAPTOP_SCALE_SETTINGS.items()
        ]
        assert "--weights /w/t.pt" in job.command() and "--data-root /data" in job.command()
    assert planned.out == tmp_path


def test_laptop_scale_refuses_what_it_cannot_run(tmp_path, capsys):
    with pytest.raises(UserError, match="has no resnet20_cifar10 run: --scale laptop covers ResNet-20"):
        plan_recipe("fig4", "laptop", tmp_path)  # ImageNet ResNet-18 only
    with pytest.raises(UserError, match="only --scale laptop has one teacher"):
        plan_recipe("fig2", "paper", tmp_path, weights="/w/t.pt")
    assert main(["demo", "--scale", "laptop", "--out", str(tmp_path / "d")]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("--scale laptop needs --data-root (the folder holding cifar-10-batches-py/)")
    )
    assert main(["demo", "--weights", "t.pt", "--out", str(tmp_path / "d")]) == 2
    assert "are for --scale laptop" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_the_laptop_demo_plans_the_four_methods_on_cifar10(tmp_path):
    plan = demo_plan("cpu", 0, scale=laptop_scale("/data", "/w/t.pt"))
    assert sorted(plan) == sorted(
        f"{m}-s{s}" for m in ("kd", "gdfq", "kl-only", "ait", "kl-only-high-lr") for s in (0, 1)
    )
    gdfq, kd = plan["gdfq-s0"], plan["kd-s0"]
    assert gdfq.teacher == kd.teacher == "resnet20_cifar10" and gdfq.weights == "/w/t.pt"
    assert (gdfq.epochs, gdfq.iters_per_epoch, kd.iters_per_epoch) == (10, 40, 40)
    assert gdfq.probing.trace_max_products == 60 and gdfq.keep_checkpoints == "probed"
