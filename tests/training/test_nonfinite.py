"""Non-finite numbers in training (zsq_probe.training.loop and .checkpoint): a NaN/inf loss or gradient stops the run
naming epoch, step and term with the last good checkpoint kept, or is skipped and counted with on_nonfinite=skip
(issue 7); the parameters are checked after each step, no checkpoint holds inf/NaN, and the check changes no
number (issue 13)."""

import json
from pathlib import Path

import pytest
import torch
from cli_checks import cli, cli_err_lines, one_line_error, tiny_cfg
from tiny_runs import tiny_train

from zsq_probe.rundir.store import RunDir


def temp_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*.tmp"))


# --quiet: warnings and errors only, so the error is the one line on stderr
TINY_NAN = ["train", *tiny_train("gdfq", epochs=3, iters=3, extra=["--quiet"])]


def poison_kl(monkeypatch, at: dict):
    """Make the student's KL term NaN (`at[call] == 'loss'`) or its gradient NaN (`'grad'`) at given calls of
    kl_to_teacher (one call per student step in these runs, counted from 0)."""
    import zsq_probe.quantization.losses as train_module

    real = train_module.kl_to_teacher
    calls = {"n": 0}

    def kl(s_logits, t_logits, temperature):
        value = real(s_logits, t_logits, temperature)
        kind = at.get(calls["n"])
        calls["n"] += 1
        if kind == "loss":
            return value * float("nan")
        if kind == "grad":  # finite value, NaN gradient: d sqrt(u)/du = inf at u = 0, times 0
            return value + (s_logits * 0).sqrt().sum()
        return value

    monkeypatch.setattr(train_module, "kl_to_teacher", kl)


@pytest.mark.parametrize(
    "kind, what", [("loss", "non-finite KL term"), ("grad", "non-finite gradient of the student loss")]
)
def test_nonfinite_stops_naming_epoch_step_and_term(kind, what, digits_teacher, tmp_path, monkeypatch, capsys):
    poison_kl(monkeypatch, {4: kind})  # calls 0-2: epoch 1; call 4: epoch 2, step 1
    out = tmp_path / "nan"
    rc, _, err = cli([*TINY_NAN, "--out", out], capsys)
    assert rc == 1  # a run failed while computing
    line = one_line_error(err, what, "at epoch 2, step 1", "epoch-0001.pt", "on_nonfinite=skip")
    assert "Traceback" not in err and "global step 5" in line
    run = RunDir(out)
    assert sorted(run.checkpoints()) == [0, 1]  # the last good checkpoint, intact
    epoch, state = run.load_checkpoint()
    assert epoch == 1 and all(torch.isfinite(v).all() for v in state["student"].values() if v.is_floating_point())
    assert list(run.read_table("metrics")["epoch"]) == [1]  # nothing of the failed epoch was written
    assert temp_files(out) == []


def test_nonfinite_generator_loss_is_named(digits_teacher, tmp_path, monkeypatch, capsys):
    from zsq_probe.generators import BNStatisticsLoss

    real, calls = BNStatisticsLoss.loss, {"n": 0}

    def loss(self):
        calls["n"] += 1
        return real(self) * (float("inf") if calls["n"] == 3 else 1.0)  # epoch 1, step 2

    monkeypatch.setattr(BNStatisticsLoss, "loss", loss)
    rc, _, err = cli([*TINY_NAN, "--out", tmp_path / "gen"], capsys)
    assert rc == 1
    one_line_error(err, "non-finite generator BNS term at epoch 1, step 2", "epoch-0000.pt")


def test_skip_flag_skips_and_counts_nonfinite_steps(digits_teacher, tmp_path, monkeypatch, capsys):
    poison_kl(monkeypatch, {4: "loss", 7: "grad"})  # epoch 2 step 1, epoch 3 step 1
    out = tmp_path / "skip"
    rc, _, err = cli([*TINY_NAN, "--set", "on_nonfinite=skip", "--out", out], capsys)
    assert rc == 0, err
    m = RunDir(out).read_table("metrics")
    assert list(m["skipped_steps"]) == [0, 1, 1]
    assert m[["loss_kl", "loss_ce", "loss_student"]].notna().all().all()  # skipped steps left out of the means
    _, state = RunDir(out).load_checkpoint()
    assert all(torch.isfinite(v).all() for v in state["student"].values() if v.is_floating_point())


def test_poisoned_parameters_stop_the_run_without_a_poisoned_checkpoint(tmp_path, monkeypatch):
    from zsq_probe.runs import train
    from zsq_probe.training.loop import NonFiniteError, Trainer

    original = Trainer.student_step

    def poisoning_step(self, batch, want_terms):
        result = original(self, batch, want_terms)
        if self.epoch >= 1 or self.global_step >= 1:  # after a first good checkpoint
            with torch.no_grad():
                next(self.parts.student.parameters()).view(-1)[0] = float("inf")
        return result

    monkeypatch.setattr(Trainer, "student_step", poisoning_step)
    with pytest.raises(NonFiniteError, match="became non-finite") as e:
        train(tiny_cfg(), tmp_path / "run", progress=False)
    assert "last good checkpoint" not in str(e.value)
    for cp in (tmp_path / "run" / "checkpoints").glob("*.pt"):
        state = torch.load(cp, weights_only=True)
        assert all(torch.isfinite(v).all() for v in state["student"].values() if v.is_floating_point())


def test_checkpoint_guard_refuses_non_finite_state():
    from zsq_probe.training.checkpoint import check_finite_state
    from zsq_probe.training.loop import NonFiniteError

    check_finite_state({"student": {"w": torch.ones(3)}, "rng": {"torch": torch.zeros(2)}}, 1)
    with pytest.raises(NonFiniteError, match="student.w"):
        check_finite_state({"student": {"w": torch.tensor([1.0, float("nan")])}}, 1)
    with pytest.raises(NonFiniteError, match="generator"):
        check_finite_state({"student": {}, "generator": {"l.weight": torch.tensor([float("inf")])}}, 1)


def test_parameter_check_does_not_change_the_numbers(tmp_path):
    """The per-step check only reads: two identical runs give identical metrics (the reference parquet test
    pins the numbers bit for bit against the stored run)."""
    from zsq_probe.runs import train

    a = train(tiny_cfg(epochs=1), tmp_path / "a", progress=False)
    b = train(tiny_cfg(epochs=1), tmp_path / "b", progress=False)
    assert a.final_val_top1 == b.final_val_top1


def test_summary_records_skipped_steps_and_the_cli_ends_with_them(digits_teacher, tmp_path, monkeypatch, capsys):
    import zsq_probe.quantization.losses as losses

    real, calls = losses.kl_to_teacher, {"n": 0}

    def kl(s_logits, t_logits, temperature):  # a NaN KL term at the second student step
        calls["n"] += 1
        return real(s_logits, t_logits, temperature) * (float("nan") if calls["n"] == 2 else 1.0)

    monkeypatch.setattr(losses, "kl_to_teacher", kl)
    out = tmp_path / "skip"
    # 11 steps: one skipped is under the per-epoch warning share, so the final line is the only one on stderr
    # --quiet: warnings and errors only, so the closing warning is the one line
    flags = tiny_train("gdfq", epochs=1, iters=11, sets=["on_nonfinite=skip"], extra=["--quiet"])
    rc, err = cli_err_lines(["train", *flags, "--out", str(out)], capsys)
    assert rc == 0
    assert json.loads((out / "summary.json").read_text())["skipped_steps"] == 1
    assert len(err) == 1 and err[0].startswith("warning: 1 training step(s)") and "skipped" in err[0], err
