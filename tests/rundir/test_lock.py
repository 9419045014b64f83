"""The run folder's writer lock (zsq_probe.rundir.lock): a lock name zsq-probe did not create (a symbolic link to
a user's file, foreign content, a fifo, a hard link, a folder, another user's file) is refused and never truncated,
as is a table folder linked into another run (issue 25); a refusal under the lock leaves its file byte for byte as it
was, any other failure releases it (issue 35)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from cli_checks import cli_err_lines, files, set_lock, tree_hashes_without_links
from tiny_runs import TINY_AIT as TINY

from zsq_probe.errors import ComputeError, UserError
from zsq_probe.rundir.lock import LOCK_NAME, RunLock, run_lock


@pytest.mark.parametrize(
    "command",
    [["cosine", "--run", "{run}", "--epochs", "1"], ["train", "--resume", "--out", "{run}", *TINY, "--epochs", "3"]],
)
def test_symlinked_lock_pointing_at_a_user_file_is_refused_and_the_file_unchanged(run_copy, tmp_path, capsys, command):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n" * 1000)
    (run_copy / LOCK_NAME).unlink(missing_ok=True)
    (run_copy / LOCK_NAME).symlink_to(notes)
    before = tree_hashes_without_links(run_copy)
    rc, err = cli_err_lines([a.replace("{run}", str(run_copy)) for a in command], capsys)
    assert rc == 2 and len(err) == 1 and "symbolic link" in err[0], err
    assert notes.read_text() == "my notes\n" * 1000
    assert tree_hashes_without_links(run_copy) == before


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
    rc, err = cli_err_lines(["cosine", "--run", run_copy, "--epochs", "1"], capsys)
    assert rc == 2 and len(err) == 1 and str(lock) in err[0], err
    if kind == "foreign content":
        assert lock.read_text() == "precious\n"
    assert not (run_copy / "probes" / "cosine").exists()


def test_a_lock_owned_by_another_user_is_refused(run_copy, monkeypatch, capsys):
    (run_copy / LOCK_NAME).write_text("")
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(run_copy / LOCK_NAME).st_uid + 1)
    rc, err = cli_err_lines(["cosine", "--run", run_copy, "--epochs", "1"], capsys)
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
    before_other, before_run = tree_hashes_without_links(other), tree_hashes_without_links(run)
    for argv in (
        ["train", "--resume", "--force", "--out", run, *TINY, "--epochs", "3", "--set", "lr=0.01"],
        ["cosine", "--run", run, "--epochs", "1"],
    ):
        rc, err = cli_err_lines(argv, capsys)
        assert rc == 2 and len(err) == 1 and "symbolic link" in err[0] and "metrics" in err[0], err
        assert tree_hashes_without_links(other) == before_other
        assert tree_hashes_without_links(run) == before_run


@pytest.mark.parametrize("state", ["absent", "empty", "dead writer"])
@pytest.mark.parametrize("use", ["class", "function"])
def test_a_refusal_under_the_lock_leaves_its_file_as_it_was(tmp_path, state, use):
    set_lock(tmp_path, state)
    before = files(tmp_path)
    with pytest.raises(UserError, match="refused"):
        with RunLock(tmp_path, what="test") if use == "class" else run_lock(tmp_path, what="test") as lock:
            assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()  # held: its record
            assert lock is not None
            raise UserError("refused")
    assert files(tmp_path) == before


@pytest.mark.parametrize("error", [ComputeError("failed"), RuntimeError("bug")], ids=["ComputeError", "RuntimeError"])
def test_a_failure_that_is_no_refusal_releases_the_lock_as_usual(tmp_path, error):
    set_lock(tmp_path, "dead writer")
    with pytest.raises(type(error)), RunLock(tmp_path):
        raise error
    assert (tmp_path / LOCK_NAME).read_bytes() == b""  # released: empty, as after a command that ran
    with RunLock(tmp_path):  # and free
        pass


def test_a_refused_writer_that_removed_the_lock_file_leaves_the_next_one_a_working_lock(tmp_path):
    first = RunLock(tmp_path).acquire()
    first.release(restore=True)  # it created the file: gone again
    assert not (tmp_path / LOCK_NAME).exists()
    with RunLock(tmp_path, what="second"):
        with pytest.raises(UserError, match="in use by PID"):
            RunLock(tmp_path).acquire()
    assert (tmp_path / LOCK_NAME).read_bytes() == b""
