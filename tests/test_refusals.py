"""Issue 35: a refused command leaves the run folder byte for byte as it was, its writer lock included; post-hoc
probes and resumes refuse checkpoints that are not of the run config.json describes (preset, method, seed,
teacher fingerprint); `--set` cannot relabel a run."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from zsq_probe.errors import ComputeError, UserError
from zsq_probe.rundir.lock import LOCK_NAME, RunLock, run_lock

DEAD_WRITER = b'{"pid": 999999, "host": "elsewhere", "what": "zsq-probe train"}'


def files(folder: Path) -> dict[str, tuple[str, int]]:
    """{relative path: (sha256, mtime_ns)} of every file under `folder`, hidden ones (the lock) included."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root, name)
            out[str(path.relative_to(folder))] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                path.stat().st_mtime_ns,
            )
    return out


def set_lock(run: Path, state: str) -> None:
    """The run's lock file as training leaves it ("empty"), missing ("absent", a copy without hidden files) or
    holding the record of a writer that was killed ("dead writer")."""
    lock = run / LOCK_NAME
    lock.unlink(missing_ok=True)
    if state == "empty":
        lock.write_bytes(b"")
    elif state == "dead writer":
        lock.write_bytes(DEAD_WRITER)
    if lock.exists():
        os.utime(lock, ns=(1_000_000_000, 1_000_000_000))  # a time no rewrite would give it back by chance


# ------------------------------------------------------------------ the lock alone


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
