"""Activation-range rules that cannot blow up unnoticed, and the health checks (zsq_probe/training/health.py,
zsq_probe/quantization/range_rules.py; issue 32).

The collapse fixture is the digits reproduction of the CIFAR-10 collapse: the reference's bias-corrected range
rule frozen after 4 updates (2 epochs x 4 iterations, warm-up 1, act_range_epochs 1) leaves the student at
10.02 % (val CE 2.305, ln 10 = 2.303)."""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch
import torch.nn as nn
from forked_cli import main_in_process

from zsq_probe.events import ProbeBatch, ProbeContext
from zsq_probe.presets import default_range_ema, resolve_config
from zsq_probe.quantization.quantizer import ActivationQuantizer, quantize_model, quantized_layers
from zsq_probe.quantization.range_rules import (
    BIAS_CORRECTED_SETTLE_UPDATES,
    bias_corrected_range_factor,
)
from zsq_probe.teachers.accuracy import predictions_on
from zsq_probe.training.health import HealthCheck, teacher_real_ranges, unsettled_range_warning

COLLAPSE = [
    "train", "--preset", "gdfq", "--teacher", "digits", "--epochs", "2", "--iters-per-epoch", "4",
    "--set", "warmup_epochs=1", "--set", "act_range_epochs=1", "--set", "range_ema=bias-corrected",
]  # fmt: skip


# ------------------------------------------------------------------------------------------------ range rules


@pytest.mark.parametrize(
    ("updates", "factor"),
    [(1, 1.0), (2, 5.263), (10, 1103.2), (20, 3903.7), (40, 1283.4), (80, 22.63), (120, 1.320)],
)
def test_the_reference_rule_reads_a_steady_range_this_many_times_too_wide(updates, factor):
    # the recurrence r <- (m r + (1-m) v) / (1 - m^t) from r = 0 (issue 32's numbers, momentum 0.9)
    assert bias_corrected_range_factor(updates) == pytest.approx(factor, rel=1e-3)


def test_the_reference_rule_settles_after_153_updates():
    assert BIAS_CORRECTED_SETTLE_UPDATES == 153
    assert abs(bias_corrected_range_factor(152) - 1) > 0.01
    assert all(abs(bias_corrected_range_factor(t) - 1) <= 0.01 for t in (153, 154, 200, 400))


@pytest.mark.parametrize("updates", [2, 10, 40])
def test_the_quantiser_follows_the_recurrence_and_the_plain_rule_reads_the_batch(updates):
    # the module itself, fed batches whose range is [0, 2]: bias-corrected reads factor x 2, plain reads 2
    reference, plain = ActivationQuantizer(4, range_ema="bias-corrected"), ActivationQuantizer(4)
    x = torch.tensor([0.0, 0.5, 2.0])
    for _ in range(updates):
        reference(x)
        plain(x)
    assert float(reference.range_max) == pytest.approx(2 * bias_corrected_range_factor(updates), rel=1e-5)
    assert float(plain.range_max) == pytest.approx(2.0) and float(plain.range_min) == 0.0


def test_the_default_rule_is_the_reference_s_only_where_it_settles():
    assert default_range_ema("cifar", 4, 200) == "bias-corrected"  # the paper's 800 updates
    assert default_range_ema("imagenet", 4, 200) == "bias-corrected"
    assert default_range_ema("cifar", 2, 40) == "plain"  # issue 32's command: 80 updates, ranges x22.6
    assert default_range_ema("cifar", 1, 152) == "plain" and default_range_ema("cifar", 1, 153) == "bias-corrected"
    assert default_range_ema("digits", 100, 100) == "plain"
    short = {"iters_per_epoch": 40, "act_range_epochs": 2}
    assert resolve_config("gdfq", "resnet20_cifar10", flags=short).quant.range_ema == "plain"
    assert resolve_config("gdfq", "resnet20_cifar10").quant.range_ema == "bias-corrected"
    forced = resolve_config("gdfq", "resnet20_cifar10", flags=short, overrides=["range_ema=bias-corrected"])
    assert forced.quant.range_ema == "bias-corrected"  # what a user sets is kept (and warned about)


def test_unsettled_reference_ranges_are_announced_with_the_numbers():
    cfg = resolve_config("gdfq", "resnet20_cifar10", flags={"iters_per_epoch": 40, "act_range_epochs": 1})
    assert unsettled_range_warning(cfg, 40) is None  # the plain rule settles at once
    cfg.quant.range_ema = "bias-corrected"
    line = unsettled_range_warning(cfg, 40)
    assert line is not None and "after 40 updates" in line and "153" in line and "1.28e+03x too wide" in line
    cfg.quant.act_range_epochs = 4
    assert unsettled_range_warning(cfg, 40) is None  # 160 updates: settled


# ------------------------------------------------------------------------------------------------ the checks


class ConstantLogits(nn.Module):
    """A collapsed student: the same logits whatever the input."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = nn.Parameter(logits.clone())
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1) + 0 * self.relu(x).sum(1, keepdim=True)


def _context(student: nn.Module, teacher: nn.Module, cfg, real=None, probe=None) -> ProbeContext:
    def draw(seed: int, size: int) -> ProbeBatch:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(size, 4, generator=g) if probe is None else probe[:size]
        return ProbeBatch(x, torch.zeros(size, dtype=torch.long), teacher(x), "real", seed)

    return ProbeContext(
        cfg=cfg, run=None, student=student, teacher=teacher, param_names=[], params=[],  # type: ignore[arg-type]
        quant_layers=quantized_layers(student), device=torch.device("cpu"), iterations_per_epoch=1,
        draw_probe_batch=draw, real_loader=real,
    )  # fmt: skip


def _labelled(n: int = 200, classes: int = 10):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(n, 4, generator=g), torch.arange(n) % classes)]


def _judge(student, cfg, caplog, metrics_from_val=True):
    health = HealthCheck(cfg)
    health.classes = 10
    ctx = _context(student, student, cfg)
    row: dict[str, object] = {"epoch": 1, "loss_bns": float("nan")}
    if metrics_from_val:
        p = predictions_on(student, _labelled())
        row.update(
            val_top1=p.top1, val_ce=p.ce, val_top_class_share=p.top_class_share, val_entropy_ratio=p.entropy_ratio
        )
    with caplog.at_level(logging.WARNING, logger="zsq_probe.training.health"):
        health.on_epoch_end(ctx, 1, row)
    return row, [r.getMessage() for r in caplog.records]


def test_a_student_with_constant_logits_trips_the_collapse_checks(caplog):
    cfg = resolve_config("gdfq", "digits")
    row, lines = _judge(ConstantLogits(torch.zeros(10)), cfg, caplog)
    assert row["val_top_class_share"] == 1.0 and row["val_entropy_ratio"] == pytest.approx(1.0)
    assert row["health"] == "one_class,max_entropy,chance_top1"
    assert lines[0].startswith("health check one_class at epoch 1: the student predicts one class for 100.0% of")
    assert "mean output entropy on the validation images is 100.0% of ln C" in lines[1]
    assert "validation top-1 10.00% is within 2 points of chance (10.0%)" in lines[2]
    assert all("; check the activation ranges" in line for line in lines) and len(lines) == 3


def test_without_validation_the_probe_batch_is_judged(caplog):
    cfg = resolve_config("gdfq", "digits")
    peaked = torch.zeros(10)
    peaked[3] = 8.0  # one class, confident: not uniform, not validated
    row, lines = _judge(ConstantLogits(peaked), cfg, caplog, metrics_from_val=False)
    assert row["health"] == "one_class"
    assert "for 100.0% of the probe batch" in lines[0] and len(lines) == 1


def test_a_student_that_separates_the_classes_trips_nothing(caplog):
    cfg = resolve_config("gdfq", "digits")
    ((x, y),) = _labelled()
    memorised = {"x": x, "y": y}

    class Lookup(nn.Module):  # the labels themselves as logits: top-1 100 %
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(()))

        def forward(self, inp: torch.Tensor) -> torch.Tensor:
            idx = torch.cdist(inp, memorised["x"]).argmin(1)
            return torch.nn.functional.one_hot(memorised["y"][idx], 10).float() * 10 + self.w

    row, lines = _judge(Lookup(), cfg, caplog)
    assert row["val_top1"] == 1.0 and row["health"] == "" and lines == []
    assert math.isnan(row["health_range_ratio"])  # no real-image ranges without a quantised student


def test_wide_ranges_name_the_layer_and_the_ratio(caplog):
    cfg = resolve_config("gdfq", "digits")
    teacher = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 10), nn.ReLU())
    student = quantize_model(teacher, 4, 4)
    ((x, y),) = _labelled()
    real = [(x, y)]
    ctx = _context(student, teacher, cfg, real=real)
    widths = teacher_real_ranges(ctx, 1)
    with torch.no_grad():
        assert widths["1"] == pytest.approx(float(teacher[1](teacher[0](x)).amax()), rel=1e-6)
    health = HealthCheck(cfg)
    health.on_train_start(ctx)
    q = student[1].quantizer
    q.range_min.fill_(0.0)
    q.range_max.fill_(10 * widths["1"])
    q.initialized.fill_(True)
    q._initialized = True
    student[3].quantizer.range_max.fill_(widths["3"])
    student[3].quantizer.range_min.fill_(0.0)
    student[3].quantizer.initialized.fill_(True)
    student[3].quantizer._initialized = True
    row: dict[str, object] = {"epoch": 2, "val_top_class_share": 0.2, "val_entropy_ratio": 0.3, "val_top1": 0.8}
    with caplog.at_level(logging.WARNING, logger="zsq_probe.training.health"):
        health.on_epoch_end(ctx, 2, row)
    assert row["health"] == "wide_ranges" and row["health_range_ratio"] == pytest.approx(10.0, rel=1e-5)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("health check wide_ranges at epoch 2: the activation range of 1 is 10x the teacher's")
    assert "range_ema=plain" in line


def test_ranges_that_freeze_before_the_generator_settles_are_named(caplog):
    cfg = resolve_config("gdfq", "digits", overrides=["act_range_epochs=2"])
    health = HealthCheck(cfg)
    health.first_bns = 0.9
    ctx = _context(ConstantLogits(torch.zeros(10)), ConstantLogits(torch.zeros(10)), cfg)
    healthy = {"val_top_class_share": 0.2, "val_entropy_ratio": 0.3}
    for epoch, bns, expected in ((1, 0.8, ""), (2, 0.2, ""), (2, 0.6, "unsettled_ranges"), (3, 0.8, "")):
        row: dict[str, object] = {"epoch": epoch, "loss_bns": bns, **healthy}
        health.on_epoch_end(ctx, epoch, row)
        assert row["health"] == expected, (epoch, bns)
    assert "BNS loss (0.6, the epoch's mean) is 67% of its highest value in the first epoch (0.9; > 50%)" in caplog.text


def test_the_checks_leave_the_student_as_they_found_it():
    teacher = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 10))
    student = quantize_model(teacher, 4, 4).train()
    student(torch.randn(32, 4))  # ranges set, BN statistics moved
    cfg = resolve_config("gdfq", "digits")
    before = {k: v.clone() for k, v in student.state_dict().items()}
    rng = torch.get_rng_state()
    health = HealthCheck(cfg)
    ctx = _context(student, teacher, cfg, real=_labelled())
    health.on_train_start(ctx)
    health.on_epoch_end(ctx, 1, {"epoch": 1})  # the probe-batch path: a student forward in eval mode
    assert student.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())


# ------------------------------------------------------------------------------------------------ end to end


def test_the_collapse_fixture_warns_up_front_and_names_the_collapse(tmp_path, digits_teacher):
    done = main_in_process([*COLLAPSE, "--out", tmp_path / "r"])
    assert done.returncode == 0
    err = done.stderr.splitlines()
    first = next(i for i, line in enumerate(err) if "epoch    1" in line)
    assert any("range_ema=bias-corrected freezes the activation ranges after 4 updates" in e for e in err[:first])
    epoch1 = [e for e in err[:first] if e.startswith("health check")]
    assert [e.split()[2] for e in epoch1] == ["one_class", "max_entropy", "chance_top1", "wide_ranges"]
    assert "validation top-1 10.02%" in epoch1[2] and "features." in epoch1[3]
    assert err[-1].startswith("warning: health checks tripped: one_class (epochs 1, 2), max_entropy (epochs 1, 2)")
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["health"]["ok"] is False and summary["health"]["tripped"]["wide_ranges"] == [1, 2]


def test_on_collapse_stop_exits_1_after_the_epoch_with_its_summary_and_resumes(tmp_path, digits_teacher):
    out = tmp_path / "r"
    done = main_in_process([*COLLAPSE, "--set", "on_collapse=stop", "--out", out])
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].startswith(
        "zsq-probe train: error: stopped after epoch 1: health check(s) one_class, max_entropy, chance_top1, "
        "wide_ranges tripped (on_collapse=stop)"
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_completed"] == 1 and summary["health"]["tripped"]["chance_top1"] == [1]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["epoch-0000.pt", "epoch-0001.pt"]
    resumed = main_in_process(
        [*COLLAPSE, "--set", "on_collapse=warn", "--out", out, "--resume", "--force"]
    )  # the run continues where it stopped
    assert resumed.returncode == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_completed"] == 2 and summary["health"]["tripped"]["chance_top1"] == [1, 2]


def test_a_healthy_tiny_run_trips_no_check(tmp_path, digits_teacher):
    flags = ["train", "--preset", "gdfq", "--epochs", "3", "--iters-per-epoch", "6", "--set", "warmup_epochs=1"]
    done = main_in_process([*flags, "--set", "act_range_epochs=2", "--out", tmp_path / "r"])
    assert done.returncode == 0 and "health check" not in done.stderr and "warning" not in done.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["health"] == {"ok": True, "tripped": {}} and summary["final_val_top1"] > 0.5


def test_captions_name_the_range_rule_and_the_runs_that_tripped(tmp_path, digits_teacher):
    from zsq_probe.plots import write_figures

    collapsed, healthy = tmp_path / "collapsed", tmp_path / "healthy"
    assert main_in_process([*COLLAPSE, "--out", collapsed]).returncode == 0
    flags = ["train", "--preset", "gdfq", "--epochs", "2", "--iters-per-epoch", "4", "--set", "warmup_epochs=1"]
    assert main_in_process([*flags, "--seed", "1", "--out", healthy]).returncode == 0
    written, failed = write_figures([collapsed, healthy], tmp_path / "figs", only=["fig5"])
    assert failed == 0 and written
    caption = next((tmp_path / "figs").glob("fig5*.txt")).read_text()
    assert "Activation ranges: range_ema=bias-corrected, 4 updates before freezing (collapsed); " in caption
    assert "range_ema=plain, 8 updates before freezing (healthy)" in caption
    assert "Health checks tripped (the student may have collapsed; see each run's summary.json): collapsed: " in caption
    assert "chance_top1 (epochs 1, 2)" in caption and "healthy:" not in caption


def test_reference_ranges_that_will_settle_are_not_judged_while_they_settle(caplog):
    cfg = resolve_config("gdfq", "resnet20_cifar10", flags={"iters_per_epoch": 40, "act_range_epochs": 4})
    assert cfg.quant.range_ema == "bias-corrected"  # 160 updates >= 153: the reference's rule by default
    health = HealthCheck(cfg)
    health.classes = 10
    ctx = _context(ConstantLogits(torch.zeros(10)), ConstantLogits(torch.zeros(10)), cfg)
    ctx.iterations_per_epoch = 40
    collapsed = {"val_top_class_share": 1.0, "val_entropy_ratio": 1.0, "val_top1": 0.1, "loss_bns": float("nan")}
    judged = []
    for epoch in (1, 2, 3, 4, 5):
        row: dict[str, object] = {"epoch": epoch, **collapsed}
        with caplog.at_level(logging.INFO, logger="zsq_probe.training.health"):
            health.on_epoch_end(ctx, epoch, row)
        judged.append(row["health"] != "")
    assert judged == [False, False, False, True, True]  # 40, 80, 120 updates: settling; 160 >= 153 from epoch 4
    assert "have had 40 of the 153 updates they need to settle (a steady range reads 1.28e+03x too wide now)" in (
        caplog.text
    )
