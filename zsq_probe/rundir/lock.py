"""An advisory lock per run folder: one writer at a time (train, resume, post-hoc probes).

The lock is ``fcntl.flock`` on ``RUN/.zsq-probe.lock`` (a hidden name: parquet readers never see it).
The file records the holder's host and PID; a second writer fails at once with a one-line UserError
naming them.  The kernel drops a flock when its process dies, so a lock left by a SIGKILLed writer never
blocks (the stale file's contents are simply overwritten).  Under torchrun only rank 0 takes the lock
(the other ranks never write).  On platforms without fcntl (Windows) the lock is a no-op.
"""

from __future__ import annotations

import json
import os
import socket
from contextlib import contextmanager
from pathlib import Path

from zsq_probe.errors import UserError

LOCK_NAME = ".zsq-probe.lock"

__all__ = ["LOCK_NAME", "RunLock", "run_lock"]


def _rank(rank) -> int:
    if rank is not None:
        return int(rank)
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


class RunLock:
    """``with RunLock(run_folder, what="train"):`` -- hold the run folder's writer lock."""

    def __init__(self, folder, what: str = "write", rank: int | None = None):
        self.path = Path(folder) / LOCK_NAME
        self.what = what
        self.rank = _rank(rank)
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock (rank 0 only) or raise a UserError naming the holder."""
        if self.rank != 0:
            return self
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = ""
            try:
                doc = json.loads(os.read(fd, 4096).decode() or "{}")
                holder = f"PID {doc.get('pid')} on host {doc.get('host')} ({doc.get('what')})"
            except (OSError, ValueError):
                holder = "another process"
            os.close(fd)
            raise UserError(
                f"run folder {self.path.parent} is in use by {holder}: wait for it to finish "
                f"or stop it (a killed writer's lock is released by itself)"
            ) from None
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": self.what}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Let the lock go; a second call does nothing."""
        if self._fd is not None:
            import fcntl

            fd, self._fd = self._fd, None
            try:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextmanager
def run_lock(folder, what: str = "write", rank: int | None = None):
    """Context manager holding the run folder's writer lock for `what`."""
    lock = RunLock(folder, what, rank).acquire()
    try:
        yield lock
    finally:
        lock.release()
