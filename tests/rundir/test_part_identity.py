"""Parts that are not what their place says (swapped, another table's, another run's, edited, empty) are refused
on read and on resume, before anything is written (zsq_probe/rundir/parts.py; docs/run-directory.md, "Part
identity")."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from cli_checks import cli_err_lines, tree_hashes_without_links
from tiny_runs import tiny_train

TINY = ["--teacher", "digits", *tiny_train("ait", extra=["--no-progress"])]  # --epochs: each test its own


# three_epoch_run and run_copy: tests/conftest.py


def _posthoc_cosine(run: Path):
    import pandas as pd

    df = pd.read_parquet(run / "probes" / "cosine")
    df = df[df.origin == "posthoc"].drop(columns=["run", "wall_time_s"], errors="ignore")
    return df.sort_values(list(df.columns)).reset_index(drop=True)


def _metrics_part(run: Path, epoch: int) -> Path:
    return run / "probes" / "metrics" / f"part-e{epoch:05d}.parquet"


def _swap(run: Path, tmp_path: Path) -> None:
    """The contents of epochs 2 and 3 swapped: each file name says one epoch, its rows another."""
    two, three = _metrics_part(run, 2), _metrics_part(run, 3)
    held = two.read_bytes()
    two.write_bytes(three.read_bytes())
    three.write_bytes(held)


def _wrong_table(run: Path, tmp_path: Path) -> None:
    """Epoch 2's metrics part replaced by a part of another table (this run's, same key)."""
    import pandas as pd

    from zsq_probe.rundir.store import RunDir

    written = RunDir(run).write_part("cosine", pd.read_parquet(_metrics_part(run, 2)), "e00002")
    os.replace(written, _metrics_part(run, 2))
    written.parent.rmdir()


def _other_run(run: Path, tmp_path: Path) -> None:
    """Epoch 2's metrics part replaced by the same part of another run (another run id)."""
    import json

    import pandas as pd

    from zsq_probe.rundir.store import RunDir

    other = tmp_path / "other"
    other.mkdir()
    doc = json.loads((run / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**doc, "run_id": "f" * 32}))
    written = RunDir(other).write_part("metrics", pd.read_parquet(_metrics_part(run, 2)), "e00002")
    shutil.copyfile(written, _metrics_part(run, 2))


def _edited(run: Path, tmp_path: Path) -> None:
    """Epoch 2's rows changed (one loss), its metadata -- content hash included -- kept."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = _metrics_part(run, 2)
    meta = {k: v for k, v in pq.read_metadata(path).metadata.items() if k != b"ARROW:schema"}
    df = pq.read_table(path).to_pandas()
    df["loss_kl"] = df["loss_kl"] * 2
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False).replace_schema_metadata(meta), path)


def _empty(run: Path, tmp_path: Path) -> None:
    _metrics_part(run, 2).write_bytes(b"")


TAMPERED = {  # how a received run's epoch-2 metrics part is not what its place says -> what the refusal says
    "swapped": (_swap, "renamed or swapped"),
    "wrong table": (_wrong_table, "not 'metrics'"),
    "another run": (_other_run, "another run"),
    "edited rows": (_edited, "does not match its content hash"),
    "empty": (_empty, "empty, 0 bytes"),
}


@pytest.fixture(params=list(TAMPERED))
def tampered(request, run_copy, tmp_path) -> tuple[Path, str]:
    """(a copy of the run whose checkpoint 3 and summary.json are gone -- a resume would train epoch 3 -- with
    one metrics part tampered, what the refusal says)."""
    (run_copy / "checkpoints" / "epoch-0003.pt").unlink()
    (run_copy / "summary.json").unlink()
    tamper, says = TAMPERED[request.param]
    tamper(run_copy, tmp_path)
    return run_copy, says


def _refused_naming_the_part(err: list[str], run: Path, says: str) -> None:
    assert len(err) == 1, err
    assert str(_metrics_part(run, 2)) in err[0] and says in err[0], err[0]
    assert "cannot be rebuilt" in err[0], err[0]  # a training part: no --overwrite to offer


def test_a_tampered_part_is_refused_on_read(tampered, tmp_path, capsys):
    import zsq_probe as zp
    from zsq_probe.errors import UserError

    run, says = tampered
    before = tree_hashes_without_links(run)
    with pytest.raises(UserError) as refused:
        zp.read_table(run, "metrics")
    _refused_naming_the_part(str(refused.value).splitlines(), run, says)
    rc, err = cli_err_lines(["figures", "--runs", run, "--out", tmp_path / "figs"], capsys)
    assert rc == 2, err
    _refused_naming_the_part(err, run, says)
    assert not (tmp_path / "figs").exists() and tree_hashes_without_links(run) == before


def test_a_tampered_part_is_refused_on_resume_before_anything_is_written(tampered, capsys):
    run, says = tampered
    before = tree_hashes_without_links(run)
    rc, err = cli_err_lines(["train", "--resume", "--out", run, *TINY, "--epochs", "3"], capsys)
    assert rc == 2, err
    _refused_naming_the_part(err, run, says)
    assert (
        tree_hashes_without_links(run) == before
    )  # byte for byte: no checkpoint, part or lock record written, nothing deleted


def _posthoc_part(run: Path) -> Path:
    return run / "probes" / "cosine" / "part-e00002-posthoc.parquet"


def _marker_names_another_hash(run: Path) -> None:
    import json

    marker = run / "probes" / "_commits" / "cosine.e00002-posthoc.json"
    doc = json.loads(marker.read_text())
    doc["sha256"]["cosine"] = "0" * 64
    marker.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "tamper,says",
    [
        (lambda run: _posthoc_part(run).write_bytes(b""), "empty, 0 bytes"),
        (_marker_names_another_hash, "commit marker"),
    ],
    ids=["empty part", "marker names another hash"],
)
def test_a_tampered_posthoc_part_is_refused_with_the_overwrite_hint_and_rebuilt_with_it(run_copy, capsys, tamper, says):
    import zsq_probe as zp
    from zsq_probe.errors import UserError

    assert cli_err_lines(["cosine", "--run", run_copy, "--epochs", "1-2"], capsys)[0] == 0
    want = _posthoc_cosine(run_copy)
    tamper(run_copy)
    with pytest.raises(UserError) as refused:
        zp.read_table(run_copy, "cosine")
    message = str(refused.value)
    assert "\n" not in message and str(_posthoc_part(run_copy)) in message and says in message, message
    assert "epoch 2 with --overwrite" in message, message
    before = tree_hashes_without_links(run_copy)
    rc, err = cli_err_lines(["train", "--resume", "--force", "--out", run_copy, *TINY, "--epochs", "4"], capsys)
    assert rc == 2 and len(err) == 1 and str(_posthoc_part(run_copy)) in err[0], err
    assert tree_hashes_without_links(run_copy) == before
    rc, err = cli_err_lines(["cosine", "--run", run_copy, "--epochs", "1-2"], capsys)  # epoch 2 counts as done: refused
    assert rc == 2 and len(err) == 1 and "--overwrite" in err[0], err
    assert cli_err_lines(["cosine", "--run", run_copy, "--epochs", "2", "--overwrite"], capsys)[0] == 0
    import pandas.testing as pdt

    pdt.assert_frame_equal(_posthoc_cosine(run_copy), want)
