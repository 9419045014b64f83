"""Post-hoc probes on a run's checkpoints (zsq_probe.runs.posthoc): a damaged or malicious checkpoint is refused
before anything is written, a damaged post-hoc part is refused without --overwrite and rebuilt with it (issue 24);
commit markers and parts stay consistent -- an epoch with a marker but no part, or a part but no marker, is
measured again, and so is the epoch of a checkpoint deleted and trained again (issue 25)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pandas as pd
import pytest
from cli_checks import cli_err_lines, one_error_line, snapshot
from tiny_runs import TINY_AIT as TINY

from zsq_probe.cli import main


@pytest.fixture(scope="module")
def three_checkpoints(tmp_path_factory, digits_teacher) -> Path:
    """A short GDFQ run, no probes, checkpoints at epochs 0, 1 and 2 (each test copies it before changing it)."""
    from zsq_probe.presets import resolve_config
    from zsq_probe.runs.training_run import train

    out = tmp_path_factory.mktemp("edges") / "run"
    flags = {"epochs": 2, "iters_per_epoch": 2, "batch_size": 16, "warmup_epochs": 0, "val_max_batches": 1}
    train(resolve_config("gdfq", teacher="digits", flags=flags), out, progress=False)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"epoch-000{i}.pt" for i in range(3)]
    return out


def _copy(run: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(run, to)
    return to


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize(
    "command,damage", [("crossings", "truncated"), ("crossings", "pickle"), ("cosine", "truncated")]
)
def test_posthoc_refuses_a_damaged_or_malicious_checkpoint_before_writing(
    three_checkpoints, tmp_path, capsys, command, damage
):
    run = _copy(three_checkpoints, tmp_path / "run")
    last = run / "checkpoints" / "epoch-0002.pt"  # epochs 0 and 1 are fine: before, crossings committed them
    marker = tmp_path / "pwned"
    last.write_bytes(last.read_bytes()[:1000] if damage == "truncated" else pickle.dumps(_Evil(marker)))
    before = snapshot(tmp_path)
    line = one_error_line([command, "--run", run], capsys, command)
    assert "epoch-0002.pt" in line, line
    assert snapshot(tmp_path) == before and not marker.exists()


def test_a_damaged_posthoc_part_is_refused_without_overwrite_and_rebuilt_with_it(three_checkpoints, tmp_path, capsys):
    from zsq_probe.rundir.store import read_table

    run = _copy(three_checkpoints, tmp_path / "run")
    assert main(["crossings", "--run", str(run)]) == 0
    table = run / "probes" / "crossings"
    want = read_table(table).drop(columns=["wall_time_s"], errors="ignore")
    part = table / "part-e00001-posthoc.parquet"
    part.write_bytes(part.read_bytes()[:200])
    capsys.readouterr()
    before = snapshot(tmp_path)
    line = one_error_line(["crossings", "--run", run], capsys, "crossings")
    assert str(part) in line and "--overwrite" in line, line
    assert snapshot(tmp_path) == before
    assert main(["crossings", "--run", str(run), "--overwrite"]) == 0
    got = read_table(table).drop(columns=["wall_time_s"], errors="ignore")
    pd.testing.assert_frame_equal(got, want)


def _posthoc_cosine(run: Path):
    import pandas as pd

    df = pd.read_parquet(run / "probes" / "cosine")
    df = df[df.origin == "posthoc"].drop(columns=["run", "wall_time_s"], errors="ignore")
    return df.sort_values(list(df.columns)).reset_index(drop=True)


def test_deleted_checkpoint_resume_then_posthoc_gives_every_row_of_the_uninterrupted_run(run_copy, capsys, caplog):
    assert cli_err_lines(["cosine", "--run", run_copy], capsys)[0] == 0
    reference = _posthoc_cosine(run_copy)
    assert sorted(reference.epoch.unique()) == [1, 2, 3]  # checkpoint 0: activation ranges not set yet
    (run_copy / "checkpoints" / "epoch-0003.pt").unlink()  # what the corrupt-checkpoint error advises
    assert cli_err_lines(["train", "--resume", "--out", run_copy, *TINY, "--epochs", "3"], capsys)[0] == 0
    markers = sorted(p.name for p in (run_copy / "probes" / "_commits").iterdir())
    assert markers == [f"cosine.e0000{e}-posthoc.json" for e in (1, 2)]  # epoch 3's went with its part
    assert cli_err_lines(["cosine", "--run", run_copy], capsys)[0] == 0
    import pandas.testing as pdt

    pdt.assert_frame_equal(_posthoc_cosine(run_copy), reference)


@pytest.mark.parametrize("damage", ["part deleted", "marker deleted"])
def test_a_marker_without_its_part_or_a_part_without_its_marker_is_measured_again_with_one_warning(
    run_copy, capsys, damage
):
    assert cli_err_lines(["cosine", "--run", run_copy, "--epochs", "1-2"], capsys)[0] == 0
    reference = _posthoc_cosine(run_copy)
    if damage == "part deleted":
        (run_copy / "probes" / "cosine" / "part-e00002-posthoc.parquet").unlink()
    else:
        (run_copy / "probes" / "_commits" / "cosine.e00002-posthoc.json").unlink()
    rc, err = cli_err_lines(["cosine", "--run", run_copy, "--epochs", "1-2", "--quiet"], capsys)  # the warning alone
    assert rc == 0 and len(err) == 1 and "epoch(s) 2" in err[0] and "measuring them again" in err[0], err
    import pandas.testing as pdt

    pdt.assert_frame_equal(_posthoc_cosine(run_copy), reference)
    assert (run_copy / "probes" / "_commits" / "cosine.e00002-posthoc.json").is_file()
