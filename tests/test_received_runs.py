"""Issue 25 (and issue 24's item 5): run folders received from someone else, resumed with other flags or
drawn together.  The tool never writes outside a run folder (the lock and every file it writes follow no
link), markers and parts stay consistent, resume refuses what would change past results, runs are told
apart by their run id, numeric flags are checked up front and figures are written atomically.  Issue 35: a
part that is not what its place says (swapped, another table's, another run's, edited, empty) is refused
on read and on resume, before anything is written."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from forked_cli import forked_main
from tiny_runs import tiny_train

from zsq_probe.cli import main
from zsq_probe.rundir.lock import LOCK_NAME

TINY = ["--teacher", "digits", *tiny_train("ait", extra=["--no-progress"])]  # --epochs: each test its own


def _run(argv, capsys):
    rc = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return rc, [line for line in captured.err.splitlines() if line.strip()]


def _tree(path: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `path` (links not followed)."""
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = Path(root) / f
            if not p.is_symlink():
                out[str(p.relative_to(path))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def three_epoch_run(digits_teacher, tmp_path_factory) -> Path:
    """Three epochs, a checkpoint each (0-3): the one trained run of this module; tests copy it."""
    out = tmp_path_factory.mktemp("received") / "run"
    assert main(["train", *TINY, "--epochs", "3", "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_copy(three_epoch_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(three_epoch_run, run)
    return run


# ------------------------------------------------------------------------------- 1. links and the lock


@pytest.mark.parametrize(
    "command",
    [["cosine", "--run", "{run}", "--epochs", "1"], ["train", "--resume", "--out", "{run}", *TINY, "--epochs", "3"]],
)
def test_symlinked_lock_pointing_at_a_user_file_is_refused_and_the_file_unchanged(run_copy, tmp_path, capsys, command):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n" * 1000)
    (run_copy / LOCK_NAME).unlink(missing_ok=True)
    (run_copy / LOCK_NAME).symlink_to(notes)
    before = _tree(run_copy)
    rc, err = _run([a.replace("{run}", str(run_copy)) for a in command], capsys)
    assert rc == 2 and len(err) == 1 and "symbolic link" in err[0], err
    assert notes.read_text() == "my notes\n" * 1000
    assert _tree(run_copy) == before


@pytest.mark.parametrize("kind", ["foreign content", "fifo", "hard link", "folder"])
def test_a_lock_name_zsq_probe_did_not_create_is_refused_never_truncated(run_copy, tmp_path, capsys, kind):
    lock = run_copy / LOCK_NAME
    lock.unlink(missing_ok=True)
    if kind == "foreign content":
        lock.write_text("precious\n")
    elif kind == "fifo":
        os.mkfifo(lock)
    elif kind == "hard link":
        other = tmp_path / "other.txt"
        other.write_text("")
        os.link(other, lock)
    else:
        lock.mkdir()
    rc, err = _run(["cosine", "--run", run_copy, "--epochs", "1"], capsys)
    assert rc == 2 and len(err) == 1 and str(lock) in err[0], err
    if kind == "foreign content":
        assert lock.read_text() == "precious\n"
    assert not (run_copy / "probes" / "cosine").exists()


def test_a_lock_owned_by_another_user_is_refused(run_copy, monkeypatch, capsys):
    (run_copy / LOCK_NAME).write_text("")
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(run_copy / LOCK_NAME).st_uid + 1)
    rc, err = _run(["cosine", "--run", run_copy, "--epochs", "1"], capsys)
    assert rc == 2 and len(err) == 1 and "owned by another user" in err[0], err


def test_symlinked_table_folder_into_another_run_is_refused_before_anything_is_written(
    three_epoch_run, tmp_path, capsys
):
    """Issue 24 item 5: `probes/<table>` linked into another run; --resume --force would rewrite it."""
    other, run = tmp_path / "other", tmp_path / "run"
    shutil.copytree(three_epoch_run, other)
    shutil.copytree(three_epoch_run, run)
    shutil.rmtree(run / "probes" / "metrics")
    (run / "probes" / "metrics").symlink_to(other / "probes" / "metrics", target_is_directory=True)
    (run / "checkpoints" / "epoch-0003.pt").unlink()  # resume redoes epoch 3: it would rewrite metrics/e00003
    before_other, before_run = _tree(other), _tree(run)
    for argv in (
        ["train", "--resume", "--force", "--out", run, *TINY, "--epochs", "3", "--set", "lr=0.01"],
        ["cosine", "--run", run, "--epochs", "1"],
    ):
        rc, err = _run(argv, capsys)
        assert rc == 2 and len(err) == 1 and "symbolic link" in err[0] and "metrics" in err[0], err
        assert _tree(other) == before_other
        assert _tree(run) == before_run


# ------------------------------------------------------------------------------- 2. markers and parts


def _posthoc_cosine(run: Path):
    import pandas as pd

    df = pd.read_parquet(run / "probes" / "cosine")
    df = df[df.origin == "posthoc"].drop(columns=["run", "wall_time_s"], errors="ignore")
    return df.sort_values(list(df.columns)).reset_index(drop=True)


def test_deleted_checkpoint_resume_then_posthoc_gives_every_row_of_the_uninterrupted_run(run_copy, capsys, caplog):
    assert _run(["cosine", "--run", run_copy], capsys)[0] == 0
    reference = _posthoc_cosine(run_copy)
    assert sorted(reference.epoch.unique()) == [1, 2, 3]  # checkpoint 0: activation ranges not set yet
    (run_copy / "checkpoints" / "epoch-0003.pt").unlink()  # what the corrupt-checkpoint error advises
    assert _run(["train", "--resume", "--out", run_copy, *TINY, "--epochs", "3"], capsys)[0] == 0
    markers = sorted(p.name for p in (run_copy / "probes" / "_commits").iterdir())
    assert markers == [f"cosine.e0000{e}-posthoc.json" for e in (1, 2)]  # epoch 3's went with its part
    assert _run(["cosine", "--run", run_copy], capsys)[0] == 0
    import pandas.testing as pdt

    pdt.assert_frame_equal(_posthoc_cosine(run_copy), reference)


@pytest.mark.parametrize("damage", ["part deleted", "marker deleted"])
def test_a_marker_without_its_part_or_a_part_without_its_marker_is_measured_again_with_one_warning(
    run_copy, capsys, damage
):
    assert _run(["cosine", "--run", run_copy, "--epochs", "1-2"], capsys)[0] == 0
    reference = _posthoc_cosine(run_copy)
    if damage == "part deleted":
        (run_copy / "probes" / "cosine" / "part-e00002-posthoc.parquet").unlink()
    else:
        (run_copy / "probes" / "_commits" / "cosine.e00002-posthoc.json").unlink()
    rc, err = _run(["cosine", "--run", run_copy, "--epochs", "1-2", "--quiet"], capsys)  # the warning alone
    assert rc == 0 and len(err) == 1 and "epoch(s) 2" in err[0] and "measuring them again" in err[0], err
    import pandas.testing as pdt

    pdt.assert_frame_equal(_posthoc_cosine(run_copy), reference)
    assert (run_copy / "probes" / "_commits" / "cosine.e00002-posthoc.json").is_file()


# ------------------------------------------------------------------------------- 3. what a resume may change


@pytest.mark.parametrize(
    "extra,setting",
    [
        (["--seed", "7"], "seed"),
        (["--set", "seed=7"], "seed"),
        (["--preset", "gdfq"], "preset"),
        (["--set", "data=cifar10"], "data"),
    ],
    ids=["--seed", "--set seed", "--preset", "--set data"],
)
def test_resume_with_another_seed_preset_or_data_is_refused_even_forced(run_copy, capsys, extra, setting):
    before = _tree(run_copy)
    rc, err = _run(["train", "--resume", "--force", "--out", run_copy, *TINY, "--epochs", "4", *extra], capsys)
    assert rc == 2 and len(err) == 1 and f"cannot change {setting}" in err[0], err
    assert len(err[0]) <= 200 + len("zsq-probe train: error: ") + len(str(run_copy))
    assert _tree(run_copy) == before


def test_naming_the_teachers_own_data_set_on_resume_is_no_change_of_data(run_copy, capsys):
    import json

    doc = json.loads((run_copy / "config.json").read_text())
    doc["config"]["dataset"]["name"] = None  # a config leaving the data set to the teacher's (train(cfg) can)
    (run_copy / "config.json").write_text(json.dumps(doc))
    argv = ["train", "--resume", "--force", "--out", run_copy, *TINY, "--epochs", "3", "--set", "data=digits"]
    rc, err = _run(argv, capsys)
    assert rc == 0, err


def test_a_retention_change_that_would_delete_measured_checkpoints_is_refused(run_copy, capsys):
    assert _run(["cosine", "--run", run_copy, "--epochs", "1-2"], capsys)[0] == 0
    before = _tree(run_copy)
    argv = ["train", "--resume", "--force", "--out", run_copy, *TINY, "--epochs", "4"]
    rc, err = _run([*argv, "--set", "keep_checkpoints=last"], capsys)
    assert rc == 2 and len(err) == 1 and "keep_checkpoints" in err[0] and "1, 2" in err[0], err
    assert _tree(run_copy) == before
    # the checkpoints no table measured may go: a run without post-hoc rows accepts the change
    shutil.rmtree(run_copy / "probes" / "cosine")
    shutil.rmtree(run_copy / "probes" / "_commits")
    assert _run([*argv, "--set", "keep_checkpoints=last"], capsys)[0] == 0
    assert sorted(p.name for p in (run_copy / "checkpoints").iterdir()) == ["epoch-0004.pt"]


# ------------------------------------------------------------------------------- 4. numeric flags, unreadable


@pytest.mark.parametrize(
    "argv,mention",
    [
        (["eval", "--teacher", "digits", "--w-bits", "4", "--a-bits", "4", "--max-batches", "-1"], "--max-batches"),
        (["eval", "--teacher", "digits", "--batch-size", "0"], "--batch-size"),
        (["recipe", "fig1", "--threads", "0", "--dry-run"], "--threads"),
        (["recipe", "fig1", "--max-retries", "-1", "--dry-run"], "--max-retries"),
        (["recipe", "fig1", "--cpus-per-job", "-1", "--dry-run"], "--cpus-per-job"),
        (["recipe", "fig1", "--workers", "0", "--dry-run"], "--workers"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_numeric_flags_out_of_range_are_one_line_exit_2(argv, mention, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, err = _run(argv, capsys)
    assert rc == 2 and len(err) == 1 and mention in err[0] and err[0].startswith("zsq-probe "), err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("epochs", ["0-2000000", "0-2000000000000", "5", "-1"])
def test_epoch_ranges_past_the_run_are_refused_in_one_short_line(run_copy, capsys, epochs):
    before = _tree(run_copy)
    rc, err = _run(["cosine", "--run", run_copy, "--epochs", epochs], capsys)
    assert rc == 2 and len(err) == 1, err
    message = err[0].removeprefix("zsq-probe cosine: error: ")
    assert len(message) <= 200 and "0..3" in message, message
    assert _tree(run_copy) == before


def test_figures_epochs_are_bounded_by_the_runs_epochs(three_epoch_run, tmp_path, capsys):
    rc, err = _run(["figures", "--runs", three_epoch_run, "--out", tmp_path / "f", "--epochs", "0-9999999"], capsys)
    assert rc == 2 and len(err) == 1 and "0..3" in err[0] and len(err[0]) <= 250, err
    assert not (tmp_path / "f").exists()


def test_an_unreadable_checkpoint_is_called_unreadable_with_its_mode_not_damaged(run_copy, monkeypatch, capsys):
    """Tests run as root, who reads a mode-000 file anyway: the permission check is what root lacks, so it is
    made to answer as it does for any other user."""
    cp = run_copy / "checkpoints" / "epoch-0002.pt"
    cp.chmod(0)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == cp else real_access(p, mode, **kw))
    import torch

    real_load = torch.load

    def load(f, *a, **kw):
        if Path(f) == cp:
            raise PermissionError(13, "Permission denied", str(f))
        return real_load(f, *a, **kw)

    monkeypatch.setattr(torch, "load", load)
    try:
        rc, err = _run(["cosine", "--run", run_copy, "--epochs", "2"], capsys)
    finally:
        cp.chmod(0o644)
    assert rc == 2 and len(err) == 1, err
    assert "unreadable (mode 000" in err[0] and "not damaged" in err[0] and "delete" not in err[0], err


# ------------------------------------------------------------------------------- 5. run ids


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


def test_every_run_gets_a_run_id_that_a_forced_resume_keeps(run_copy, capsys):
    import json

    rid = json.loads((run_copy / "config.json").read_text())["run_id"]
    assert len(rid) == 32 and int(rid, 16) >= 0
    argv = ["train", "--resume", "--force", "--out", run_copy, *TINY, "--epochs", "4", "--set", "lr=0.01"]
    assert _run(argv, capsys)[0] == 0
    assert json.loads((run_copy / "config.json").read_text())["run_id"] == rid


def test_two_runs_in_folders_named_run_draw_two_fig6_files(three_epoch_run, tmp_path, capsys):
    other = _other_run_named_run(three_epoch_run, tmp_path / "b")
    rc, err = _run(["figures", "--runs", three_epoch_run, other, "--out", tmp_path / "f", "--only", "fig6"], capsys)
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


# ------------------------------------------------------------------------------- 6. figures written atomically


@pytest.mark.slow
def test_a_kill_inside_a_figure_write_leaves_no_partial_png_and_the_rerun_cleans_up(three_epoch_run, tmp_path):
    # both in processes forked from this one: the kill is a real SIGKILL, without a fresh interpreter's imports
    out = tmp_path / "figs"
    argv = ["figures", "--runs", three_epoch_run, "--out", out, "--only", "fig6"]
    killed = forked_main(argv, fault="write:fig6_samples_*.png", timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert list(out.glob("*.png")) == []  # no 0-byte (or partial) figure under its name
    left = [p.name for p in out.iterdir() if p.name.startswith(".fig6_samples_run.png.")]
    assert len(left) == 1 and (out / left[0]).stat().st_size > 0
    rerun = forked_main(argv, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    png = out / "fig6_samples_run.png"
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 1000
    hidden = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert hidden == [".zsq-probe-output.json"], hidden  # the killed writer's copy is gone; the manifest stays


def test_a_figure_that_fails_while_drawing_leaves_no_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from zsq_probe.plots.style import save

    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])

    def fail(self, fname, **kw):
        fname.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", fail)
    with pytest.raises(OSError, match="disk full"):
        save(fig, tmp_path, "fig_x")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------- 7. parts not what their place says


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
    before = _tree(run)
    with pytest.raises(UserError) as refused:
        zp.read_table(run, "metrics")
    _refused_naming_the_part(str(refused.value).splitlines(), run, says)
    rc, err = _run(["figures", "--runs", run, "--out", tmp_path / "figs"], capsys)
    assert rc == 2, err
    _refused_naming_the_part(err, run, says)
    assert not (tmp_path / "figs").exists() and _tree(run) == before


def test_a_tampered_part_is_refused_on_resume_before_anything_is_written(tampered, capsys):
    run, says = tampered
    before = _tree(run)
    rc, err = _run(["train", "--resume", "--out", run, *TINY, "--epochs", "3"], capsys)
    assert rc == 2, err
    _refused_naming_the_part(err, run, says)
    assert _tree(run) == before  # byte for byte: no checkpoint, part or lock record written, nothing deleted


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

    assert _run(["cosine", "--run", run_copy, "--epochs", "1-2"], capsys)[0] == 0
    want = _posthoc_cosine(run_copy)
    tamper(run_copy)
    with pytest.raises(UserError) as refused:
        zp.read_table(run_copy, "cosine")
    message = str(refused.value)
    assert "\n" not in message and str(_posthoc_part(run_copy)) in message and says in message, message
    assert "epoch 2 with --overwrite" in message, message
    before = _tree(run_copy)
    rc, err = _run(["train", "--resume", "--force", "--out", run_copy, *TINY, "--epochs", "4"], capsys)
    assert rc == 2 and len(err) == 1 and str(_posthoc_part(run_copy)) in err[0], err
    assert _tree(run_copy) == before
    rc, err = _run(["cosine", "--run", run_copy, "--epochs", "1-2"], capsys)  # epoch 2 counts as done: refused
    assert rc == 2 and len(err) == 1 and "--overwrite" in err[0], err
    assert _run(["cosine", "--run", run_copy, "--epochs", "2", "--overwrite"], capsys)[0] == 0
    import pandas.testing as pdt

    pdt.assert_frame_equal(_posthoc_cosine(run_copy), want)
