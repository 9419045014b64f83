"""Live curves (zsq_probe.training.tensorboard): the observer logs the metrics and the probes' scalars (issue 15); a
--tensorboard path that is a file is refused before the run folder exists (issue 24)."""

from __future__ import annotations

import pytest
from cli_checks import one_error_line, snapshot
from tiny_runs import tiny_train

from zsq_probe.cli import main
from zsq_probe.rundir.store import RunDir


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_tensorboard_path_that_is_a_file_is_refused_before_the_run_folder_exists(tmp_path, capsys, where):
    pytest.importorskip("torch.utils.tensorboard")
    file = tmp_path / "curves"
    file.write_text("not a folder")
    logdir = file if where == "file" else file / "sub"
    before = snapshot(tmp_path)
    argv = ["train", "--teacher", "digits", "--epochs", "1", "--no-progress", "--tensorboard", logdir]
    line = one_error_line([*argv, "--out", tmp_path / "run"], capsys, "train")
    assert f"--tensorboard {logdir}" in line and "not a folder" in line, line
    assert snapshot(tmp_path) == before


# the smallest Hessian probe the checks need (Hutch++ needs top_k + 16 products): the torchrun comparison and the
# TensorBoard tags hold at any size, and a product's cost grows with the batch
SMALL_HESSIAN = ["hessian_batch_size=16", "trace_max_products=18", "slq_runs=2", "slq_steps=4", "hessian_top_k=2"]


def test_tensorboard_observer_logs_metrics_and_probe_scalars(tmp_path, digits_teacher):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    sets = [
        "act_range_epochs=1",
        "probe_every_steps=1",
        *SMALL_HESSIAN,
        "hessian_every_epochs=2",  # the curvature probes at the last epoch only: their tags are what counts
    ]
    flags = tiny_train("ait", epochs=2, sets=sets, extra=["--probes", "cosine,hessian", "--no-progress"])
    assert main(["train", *flags, "--out", str(out), "--tensorboard"]) == 0
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {
        "metrics/loss_kl_scaled",
        "metrics/val_top1",
        "cosine/model/all",
        "hessian_trace/ce/exact",  # trace_estimators auto: the exact trace on the digits student
        "hessian_eigenvalue/kl/top1",
    } <= tags
    assert [e.step for e in acc.Scalars("metrics/loss_kl_scaled")] == [1, 2]
    metrics = RunDir(out).read_table("metrics")
    assert [e.value for e in acc.Scalars("metrics/loss_kl_scaled")] == pytest.approx(list(metrics["loss_kl_scaled"]))
