"""Runs drawn together (zsq_probe.plots.runs): runs in folders of the same name are told apart by their run id (two
Fig. 6 files), and a copied run counts once, with a warning (issue 25)."""

from __future__ import annotations

import shutil
from pathlib import Path

from cli_checks import cli_err_lines


def _other_run_named_run(three_epoch_run: Path, where: Path) -> Path:
    """A second, different run in a folder also named `run`: a copy given its own run id and learning rate."""
    import json

    other = where / "run"
    shutil.copytree(three_epoch_run, other)
    doc = json.loads((other / "config.json").read_text())
    doc["run_id"] = "f" * 32
    doc["config"]["optim"]["lr"] = doc["config"]["optim"]["lr"] * 2
    (other / "config.json").write_text(json.dumps(doc))
    import pandas as pd
    import torch

    from zsq_probe.rundir.store import RunDir

    run = RunDir(other)
    for table in run.tables():  # its parts record its own run id
        for key in run.part_keys(table):
            run.write_part(table, pd.read_parquet(run.part_path(table, key)), key)
    # another run has another generator: Fig. 6 draws one grid per distinct generator (state-dict fingerprint)

    for path in RunDir(other).checkpoints().values():
        state = torch.load(path, weights_only=True)
        state["generator"] = {k: v + 1 if v.is_floating_point() else v for k, v in state["generator"].items()}
        torch.save(state, path)
    return other


def test_two_runs_in_folders_named_run_draw_two_fig6_files(three_epoch_run, tmp_path, capsys):
    other = _other_run_named_run(three_epoch_run, tmp_path / "b")
    rc, err = cli_err_lines(
        ["figures", "--runs", three_epoch_run, other, "--out", tmp_path / "f", "--only", "fig6"], capsys
    )
    assert rc == 0, err
    pngs = sorted(p.name for p in (tmp_path / "f").glob("fig6_samples_*.png"))
    from zsq_probe.rundir.store import RunDir

    ids = sorted(RunDir(r).run_id[:8] for r in (three_epoch_run, other))
    assert pngs == sorted(f"fig6_samples_run-{i}.png" for i in ids), pngs


def test_a_copied_run_counts_once_with_a_warning(three_epoch_run, tmp_path, caplog):
    from zsq_probe.plots import runs as R

    copy = tmp_path / "copy-of-run"
    shutil.copytree(three_epoch_run, copy)
    with caplog.at_level("WARNING"):
        runs = R.open_runs([three_epoch_run, copy])
    assert [r.path for r in runs] == [three_epoch_run]
    assert [len(g) for g in R.seed_groups(runs)] == [1]
    warned = [r.message for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "copy" in warned[0] and str(copy) in warned[0]
    other = _other_run_named_run(three_epoch_run, tmp_path / "b")  # a run of its own is never merged
    assert len(R.open_runs([three_epoch_run, copy, other])) == 2
