"""The trainer on the embedded digits default: every preset runs, resume is exact, schedules follow the paper."""

import json

import pandas as pd
import pytest
import torch

from zsq_probe.cli import main
from zsq_probe.config import parse_assignment
from zsq_probe.errors import UserError
from zsq_probe.events import Observer
from zsq_probe.presets import PRESETS, resolve_config
from zsq_probe.rundir.store import RunDir, load_checkpoint_file
from zsq_probe.runs import train
from zsq_probe.training import Trainer, build_run, scheduled

TINY = {
    "epochs": 2,
    "iters_per_epoch": 2,
    "batch_size": 16,
    "warmup_epochs": 0,
    "act_range_epochs": 1,
    "val_max_batches": 1,
    "val_batch_size": 64,
    "zeroq_images": 32,
    "zeroq_iterations": 5,
    "hessian_batch_size": 32,
}


def tiny(preset, **extra):
    flags = dict(TINY)
    flags.update(extra)
    return resolve_config(preset, teacher="digits", flags=flags)


def metrics_without_time(run):
    return RunDir(run).read_table("metrics").drop(columns=["wall_time_s"])


def student_weights(run):
    rd = RunDir(run)
    return load_checkpoint_file(rd.checkpoints()[max(rd.checkpoints())])["student"]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_runs_a_short_epoch(preset, tmp_path, digits_teacher):
    cfg = tiny(preset, epochs=0 if preset == "zeroq" else 1)  # ZeroQ: calibration only, no fine-tuning
    summary = train(cfg, tmp_path / "run", progress=False)
    m = RunDir(tmp_path / "run").read_table("metrics")
    assert list(m["epoch"]) == ([0] if preset == "zeroq" else [1])
    assert summary.final_val_top1 is not None and 0.0 <= summary.final_val_top1 <= 1.0
    if preset != "zeroq":
        assert bool(m["student_stepped"].iloc[0])
        assert m["loss_student"].notna().all()
    doc = json.loads((tmp_path / "run" / "config.json").read_text())
    assert doc["config"]["preset"] == preset and doc["seed"] == 0
    if not cfg.quant.full_precision:
        assert doc["quantization"]["w_bits"] == cfg.quant.w_bits  # the spec travels with every run


def test_training_changes_the_student_and_gi_moves_codes(tmp_path, digits_teacher):
    from zsq_probe.quantization.quantizer import integer_codes

    cfg = tiny("ait", epochs=1, iters_per_epoch=1)
    cfg.inundation.p = 0.05
    trainer = Trainer(build_run(cfg), RunDir(tmp_path / "r"), progress=False)
    before = {k: v.clone() for k, v in integer_codes(trainer.parts.student).items()}
    trainer.run_epoch(1)
    after = integer_codes(trainer.parts.student)
    for name, q in before.items():
        share = (after[name] != q).float().mean().item()
        assert share >= cfg.inundation.p or trainer.parts.optimizer.last_flags.get(name), (name, share)


class StopAt(Observer):
    """Simulates a crash: raises when epoch `at` starts (after epoch at-1 was checkpointed)."""

    def __init__(self, at):
        self.at = at

    def on_epoch_start(self, trainer, epoch):
        if epoch == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize("preset", ["ait", "gdfq", "kd"])
def test_resume_equals_uninterrupted_run(preset, tmp_path, digits_teacher):
    # epoch 1 is the warm-up (and calibrates the activation ranges), epoch 2 runs after the resume: the resumed
    # epoch crosses both boundaries
    cfg = tiny(preset, epochs=2, warmup_epochs=1)
    train(cfg, tmp_path / "full", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", observers=[StopAt(2)], progress=False)
    # a crash may leave a part past the checkpoint: resume must drop it, not duplicate it
    RunDir(tmp_path / "cut").write_part("metrics", [{"epoch": 2, "run": "junk"}], "e00002")
    train(cfg, tmp_path / "cut", resume=True, progress=False)
    a, b = metrics_without_time(tmp_path / "full"), metrics_without_time(tmp_path / "cut")
    assert list(b["epoch"]) == [1, 2]
    pd.testing.assert_frame_equal(a.drop(columns=["run"]), b.drop(columns=["run"]))
    wa, wb = student_weights(tmp_path / "full"), student_weights(tmp_path / "cut")
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_resume_with_changed_config_is_refused_unless_forced(tmp_path, digits_teacher):
    cfg = tiny("gdfq", epochs=1)
    train(cfg, tmp_path / "r", progress=False)
    cfg2 = tiny("gdfq", epochs=2, lr=0.5)
    with pytest.raises(UserError, match="changed config"):
        train(cfg2, tmp_path / "r", resume=True, progress=False)
    train(cfg2, tmp_path / "r", resume=True, force=True, progress=False)
    doc = json.loads((tmp_path / "r" / "config.json").read_text())
    assert doc["config"]["epochs"] == 2 and doc["config_changes"][0]["lr"][1] == 0.5


def test_non_empty_out_is_refused_and_left_alone(tmp_path, digits_teacher, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    rc = main(["train", "--preset", "gdfq", "--out", str(out), "--epochs", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "not empty" in err and len(err.strip().splitlines()) == 1
    assert (out / "notes.txt").read_text() == "mine" and sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_schedules_follow_milestones():
    # MultiStepLR semantics: the decay applies after `m` epochs, i.e. from epoch m+1 (epochs count from 1)
    assert scheduled(1e-4, [100, 200, 300], 0.1, 100) == 1e-4
    assert scheduled(1e-4, [100, 200, 300], 0.1, 101) == pytest.approx(1e-5)
    assert scheduled(1e-3, [100, 200, 300], 0.1, 400) == pytest.approx(1e-6)


def test_paper_settings_per_dataset():
    c = resolve_config("ait", teacher="resnet20_cifar10")
    assert (
        c.batch_size,
        c.warmup_epochs,
        c.optim.lr,
        c.inundation.p,
        c.optim.weight_decay,
        c.kd_weight,
        c.ce_weight,
        c.inundation.enabled,
    ) == (200, 4, 1e-4, 1e-3, 0.0, 1.0, 0.0, True)
    g = resolve_config("gdfq", teacher="resnet18")
    assert (g.batch_size, g.warmup_epochs, g.optim.lr, g.optim.weight_decay, g.inundation.enabled) == (
        16,
        50,
        1e-6,
        1e-4,
        False,
    )
    assert resolve_config("ait", teacher="resnet18").inundation.p == 1e-4
    assert resolve_config("kl-only-high-lr", teacher="resnet20_cifar10").optim.lr == pytest.approx(1e-2)
    assert resolve_config("ait-adam", teacher="resnet20_cifar10").optim.name == "adam"


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("nope=1", "unknown config key 'nope'"),
        ("lr=fast", "expects float"),
        ("w_bits=9", "bits must be 2..8"),
        ("gi=maybe", "expects bool"),
    ],
)
def test_set_errors_are_one_line(assignment, message, tmp_path, capsys):
    rc = main(["train", "--preset", "ait", "--out", str(tmp_path / "r"), "--set", assignment])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_kd_baseline_uses_a_random_full_precision_student(tmp_path, digits_teacher):
    cfg = tiny("kd", epochs=1)
    trainer = Trainer(build_run(cfg), RunDir(tmp_path / "r"), progress=False)
    assert not trainer.parts.quant_layers and trainer.parts.student_train_mode
    t = dict(trainer.parts.teacher.named_parameters())
    assert any(not torch.equal(p, t[n]) for n, p in trainer.parts.student.named_parameters())


def test_fig1_recipe_uses_paper_3_1_weights_and_the_generator_applies_them(tmp_path, digits_teacher):
    from zsq_probe.recipes import load_recipe, plan

    for scale in ("paper", "tiny"):
        configs = [j.config() for j in plan(load_recipe("fig1"), scale, tmp_path / scale, seeds=[0])]
        (zq,) = [c for c in configs if c.method == "gdfq"]
        weights = (zq.synthesis.ce_weight, zq.synthesis.bns_weight, zq.ce_weight, zq.kd_weight)
        assert weights == (0.5, 0.5, 0.5, 0.5), scale  # alpha = beta = 0.5 (paper §3.1, Eq. 5-6)
    gdfq = resolve_config("gdfq", teacher="resnet20_cifar10")  # the preset keeps the code's 1 : 0.1 and 1 : 1
    assert (gdfq.synthesis.ce_weight, gdfq.synthesis.bns_weight, gdfq.ce_weight, gdfq.kd_weight) == (1, 0.1, 1, 1)
    cfg = tiny("gdfq", epochs=1, warmup_epochs=1)
    cfg.set("gen_ce_weight", 0.5)
    cfg.set("bns_weight", 0.25)
    train(cfg, tmp_path / "run", progress=False)
    m = RunDir(tmp_path / "run").read_table("metrics").iloc[0]
    assert m.loss_generator == pytest.approx(0.5 * m.loss_generator_ce + 0.25 * m.loss_bns, rel=1e-5)


@pytest.mark.parametrize(("keep", "kept"), [("probed", [2, 3]), ("last", [3]), ("all", [0, 1, 2, 3])])
def test_keep_checkpoints_keeps_the_probed_epochs_and_the_last(keep, kept, tmp_path, digits_teacher):
    """keep_checkpoints=probed keeps the epochs the Hessian/slice cadence measured (every 2nd here) and the last,
    so a post-hoc probe of those epochs still runs.  Three epochs: one of each kind (0-1 dropped, 2 probed, 3
    the last).  The boolean of earlier versions gives these very configs (the test below)."""
    out = tmp_path / "run"
    cfg = tiny("gdfq", epochs=3, iters_per_epoch=1)
    for assignment in ("hessian_every_epochs=2", f"keep_checkpoints={keep}"):
        cfg.set(*parse_assignment(assignment))
    train(cfg, out, observers=[], progress=False)
    assert sorted(RunDir(out).checkpoints()) == kept
    assert json.loads((out / "config.json").read_text())["config"]["keep_checkpoints"] == keep
    if keep == "probed":
        from zsq_probe.runs.posthoc import probe_run

        rows = probe_run(out, "cosine", epochs=[2, 3])
        assert sorted(rows["epoch"].unique()) == [2, 3]


def test_keep_checkpoints_takes_one_of_its_words_only():
    from zsq_probe.config import KEEP_CHECKPOINTS, RunConfig

    for word in KEEP_CHECKPOINTS:
        cfg = tiny("gdfq", epochs=3)
        cfg.set(*parse_assignment(f"keep_checkpoints={word}"))
        cfg.validate()
        assert cfg.keep_checkpoints == word
    # the booleans of a pre-release version are not read: refused, naming the key and its words
    for bad in (True, False, "true", "false", "some"):
        with pytest.raises(UserError, match="keep_checkpoints.*all.*probed.*last"):
            RunConfig.from_flat({"keep_checkpoints": bad}).validate()
