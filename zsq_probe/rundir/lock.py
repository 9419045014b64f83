"""An advisory lock per run folder: one writer at a time (train, resume, post-hoc probes).

The lock is ``fcntl.flock`` on ``RUN/.zsq-probe.lock`` (a hidden name: parquet readers never see it).
The file records the holder's host and PID; a second writer fails at once with a one-line UserError
naming them.  The kernel drops a flock when its process dies, so a lock left by a SIGKILLed writer never
blocks (the stale file's contents are simply overwritten).  Under torchrun only rank 0 takes the lock
(the other ranks never write).  On platforms without fcntl (Windows) the lock is a no-op.

A run folder may come from someone else, so the lock file is never trusted: it is created with
``O_CREAT|O_EXCL|O_NOFOLLOW`` or opened with ``O_NOFOLLOW|O_NONBLOCK``, and a symlink, a non-regular file, a
file owned by another user, a file with other hard links or one holding anything but a lock record is refused
(one line) -- never truncated or written.  Once the lock is held, `refuse_links` refuses a run folder holding
a symlink anywhere inside it, before the command writes anything (a link could point into another run or
anywhere on the machine).

A command refused while it holds the lock (a `UserError` other than a `ComputeError`: exit status 2) leaves
no trace of it: a lock file it created is removed, an existing one gets its bytes and times back, so a refused
command leaves the run folder as it found it.  A writer that finds the lock file replaced or removed after its
flock succeeded (a refused command removed it meanwhile) opens it afresh.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from zsq_probe.errors import ComputeError, UserError

LOCK_NAME = ".zsq-probe.lock"

__all__ = ["LOCK_NAME", "RunLock", "refuse_links", "run_lock"]
_LOCK_KEYS = {"pid", "host", "what"}


def _rank(rank: int | None) -> int:
    if rank is not None:
        return int(rank)
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


class RunLock:
    """``with RunLock(run_folder, what="train"):`` -- hold the run folder's writer lock; a block that ends in a
    refusal (`refuses`) puts the lock file back as it was.

    Args:
        folder: The run folder.
        what: What the holder is doing, recorded in the lock file for the message a second writer gets.
        rank: This process's rank; None reads ``$RANK`` (0 when unset).  Only rank 0 takes the lock.
    """

    def __init__(self, folder: str | os.PathLike[str], what: str = "write", rank: int | None = None) -> None:
        self.path = Path(folder) / LOCK_NAME
        self.what = what
        self.rank = _rank(rank)
        self._fd: int | None = None
        self._found: _Found | None = None  # the lock file as this writer found it (None: it created it)

    def acquire(self) -> RunLock:
        """Take the lock (rank 0 only) or raise a UserError naming the holder; a refusal here leaves no trace."""
        if self.rank != 0:
            return self
        try:
            import fcntl  # POSIX only: no lock on Windows
        except ImportError:  # pragma: no cover - Windows
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(_OPEN_ATTEMPTS):
            fd, created = open_lock_file(self.path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = _holder(fd)
                os.close(fd)
                raise UserError(
                    f"run folder {self.path.parent} is in use by {holder}: wait for it to finish "
                    f"or stop it (a killed writer's lock is released by itself)"
                ) from None
            if _is_current(fd, self.path):
                break
            os.close(fd)  # a refused writer removed the file between our open and our flock: open it afresh
        else:
            raise UserError(f"run folder {self.path.parent}: its lock file keeps being replaced; try again")
        found = None if created else _Found.read(fd)
        try:
            refuse_links(self.path.parent)  # before the command writes anything into the folder
        except BaseException:
            _put_back(fd, self.path, found)
            raise
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "what": self.what}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, info, 0)
        self._fd, self._found = fd, found
        return self

    def release(self, restore: bool = False) -> None:
        """Let the lock go (the file is left empty); `restore`: put the lock file back as it was found instead
        (removed when this writer created it).  A second call does nothing."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            if restore:
                _put_back(fd, self.path, self._found)
                return
            import fcntl  # POSIX only: no lock on Windows

            try:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        self.release(restore=refuses(exc))


def refuses(exc: BaseException | None) -> bool:
    """Whether `exc` is a refusal (bad input, exit status 2): a UserError that is not a ComputeError."""
    return isinstance(exc, UserError) and not isinstance(exc, ComputeError)


_OPEN_ATTEMPTS = 10


@dataclass(frozen=True)
class _Found:
    """An existing lock file's bytes and access/modification times, to put back after a refusal."""

    data: bytes
    times_ns: tuple[int, int]

    @classmethod
    def read(cls, fd: int) -> _Found:
        st = os.fstat(fd)
        return cls(os.pread(fd, max(st.st_size, 1), 0), (st.st_atime_ns, st.st_mtime_ns))


def _holder(fd: int) -> str:
    """Who holds the lock, from its record (the file `fd`)."""
    try:
        doc = json.loads(os.read(fd, 4096).decode() or "{}")
        return f"PID {doc.get('pid')} on host {doc.get('host')} ({doc.get('what')})"
    except (OSError, ValueError, AttributeError):
        return "another process"


def _is_current(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd` (not removed or replaced since it was opened)."""
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    st = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino)


def _put_back(fd: int, path: Path, found: _Found | None) -> None:
    """Leave the locked file `fd` as it was found and let it go: removed when it was created (`found` None),
    else its bytes and times restored.  Done while the flock is still held."""
    import fcntl  # POSIX only: no lock on Windows

    try:
        if found is None:
            if _is_current(fd, path):
                os.unlink(path)
        else:
            os.ftruncate(fd, 0)
            os.pwrite(fd, found.data, 0)
            if os.utime in os.supports_fd:
                os.utime(fd, ns=found.times_ns)
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def open_lock_file(path: Path) -> tuple[int, bool]:
    """(a read-write descriptor of the lock file `path`, whether it was created): created new (``O_EXCL``), or
    an existing one opened without following a link and checked (`_check_lock_file`).  Raises a one-line
    UserError otherwise."""
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | nofollow, 0o644), True
    except FileExistsError:
        pass
    try:
        fd = os.open(path, os.O_RDWR | nofollow | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        if e.errno == errno.ELOOP or path.is_symlink():
            raise UserError(_refusal(path, "is a symbolic link")) from None
        if e.errno == errno.EISDIR:
            raise UserError(_refusal(path, "is not a regular file")) from None
        raise UserError(_refusal(path, f"cannot be opened ({e.strerror})")) from None
    try:
        _check_lock_file(fd, path)
    except BaseException:
        os.close(fd)
        raise
    return fd, False


def _check_lock_file(fd: int, path: Path) -> None:
    """Refuse an existing lock file that zsq-probe cannot have written: not a regular file, another owner,
    other hard links, or contents other than an (empty or) lock record."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise UserError(_refusal(path, "is not a regular file"))
    if hasattr(os, "geteuid") and st.st_uid != os.geteuid():
        raise UserError(_refusal(path, f"is owned by another user (uid {st.st_uid})"))
    if st.st_nlink != 1:
        raise UserError(_refusal(path, f"has {st.st_nlink} hard links"))
    if st.st_size == 0:
        return
    try:
        doc = json.loads(os.pread(fd, 4097, 0).decode()) if st.st_size <= 4096 else None
    except (OSError, ValueError):
        doc = None
    if not isinstance(doc, dict) or set(doc) != _LOCK_KEYS:
        raise UserError(_refusal(path, "holds something other than a zsq-probe lock record"))


def _refusal(path: Path, what: str) -> str:
    return (
        f"{path} {what}: zsq-probe locks only a file it created; if the run came from someone else, "
        f"delete that entry and check the folder"
    )


def refuse_links(folder: str | os.PathLike[str]) -> None:
    """Refuse a run folder holding a symbolic link: zsq-probe writes into a run folder only without following links.

    Args:
        folder: The run folder (it may itself be a link).

    Raises:
        UserError: One line naming the first symbolic link inside `folder`.
    """
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in sorted(dirs + files):
            path = Path(root) / name
            if path.is_symlink():
                raise UserError(
                    f"{path} is a symbolic link (to {os.readlink(path)}): zsq-probe writes into no run folder "
                    f"holding links; replace it with a copy"
                )


@contextmanager
def run_lock(folder: str | os.PathLike[str], what: str = "write", rank: int | None = None) -> Iterator[RunLock]:
    """Context manager holding the run folder's writer lock for `what`.

    Args:
        folder: The run folder.
        what: What the holder is doing (recorded in the lock file).
        rank: This process's rank; None reads ``$RANK``.  Only rank 0 takes the lock.

    Yields:
        The held lock.

    Raises:
        UserError: Another process holds the lock, or the lock file or the folder is refused.
    """
    lock = RunLock(folder, what, rank).acquire()
    try:
        yield lock
    except BaseException as e:
        lock.release(restore=refuses(e))
        raise
    finally:
        lock.release()
