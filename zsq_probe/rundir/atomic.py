"""Atomic files: written under a hidden temporary name (`.NAME.PID-XXXX.tmp`) beside the target, fsynced, renamed
into place, so a reader never sees half a file; and the test-only fault sites (`fault_point`, described in
`zsq_probe.rundir.store`).  Light (the standard library only): the data cache writes through it too."""

from __future__ import annotations

import fnmatch
import os
import signal
import tempfile
from pathlib import Path

FAULT_ENV = "ZSQ_PROBE_FAULT"
_UMASK = os.umask(0o022)  # read the process umask once (at import) ...
os.umask(_UMASK)  # ... and put it back


def fault_point(site: str) -> None:
    """Test-only fault injection (the sites: `zsq_probe.rundir.store`'s docstring): SIGKILL this process when
    $ZSQ_PROBE_FAULT matches `site`.  A no-op unless that variable is set."""
    pattern = os.environ.get(FAULT_ENV)
    if pattern and fnmatch.fnmatchcase(site, pattern):
        os.kill(os.getpid(), signal.SIGKILL)


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


def atomic_write_bytes(path: Path, data: bytes, site: str | None = None) -> None:
    """Write `data` to a hidden temporary file next to `path`, fsync it, rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):  # mkstemp makes 0600 files: give the usual umask-based mode instead
                os.fchmod(f.fileno(), 0o666 & ~_UMASK)
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
