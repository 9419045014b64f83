"""Atomic files: written under a hidden temporary name (`.NAME.PID-XXXX.tmp`) beside the target, fsynced, renamed
into place, so a reader never sees half a file; and the test-only fault sites (`fault_point`, described in
`zsq_probe.rundir.store`).  Light (the standard library only): the data cache writes through it too."""

from __future__ import annotations

import fnmatch
import os
import secrets
import signal
from pathlib import Path

FAULT_ENV = "ZSQ_PROBE_FAULT"
_TEMP_ATTEMPTS = 100


def fault_point(site: str) -> None:
    """Test-only fault injection (the sites: `zsq_probe.rundir.store`'s docstring): SIGKILL this process when
    $ZSQ_PROBE_FAULT matches `site`.  A no-op unless that variable is set."""
    pattern = os.environ.get(FAULT_ENV)
    if pattern and fnmatch.fnmatchcase(site, pattern):
        os.kill(os.getpid(), signal.SIGKILL)


def process_alive(pid: int) -> bool:
    """Whether process `pid` may still be running (this process, and on Windows any pid, counts as running: there
    `os.kill(pid, 0)` is no probe); a temporary file of a writer no longer running is debris."""
    if pid == os.getpid() or os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's process
        return True
    return True


def fsync_dir(folder: Path) -> None:
    """Make a rename durable across a power cut (best effort; not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _new_temp_file(path: Path) -> tuple[int, str]:
    """(fd, name) of a new hidden file `.NAME.PID-XXXX.tmp` beside `path`, created with mode 0o666 so the kernel
    applies the process umask (as for any file the user writes; mkstemp's 0600 would not), never an existing one."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(_TEMP_ATTEMPTS):
        tmp = str(path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def atomic_write_bytes(path: Path, data: bytes, site: str | None = None) -> None:
    """Write `data` to a hidden temporary file next to `path`, fsync it, rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _new_temp_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        fault_point(site or f"write:{path.name}")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
