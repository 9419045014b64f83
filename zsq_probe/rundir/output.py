"""The output policy of every command that writes a folder (`figures`, `compare --out`, `demo`, `recipe`,
`train`): nothing a user has is overwritten, and a command killed at any moment is finished by a plain rerun.

* A folder holding files the command did not write is refused (a `UserError`, nothing touched).
* Its own earlier output is resumed where the command resumes (`demo`, `recipe`, `train --resume`) or
  replaced only with `--overwrite` (`figures`, `compare --out`); `train` without `--resume` wants a new or
  empty folder (`RunDir.ensure_new`).  Unfinished output of `figures` / `compare --out` (the command was
  killed) is finished by a plain rerun, which replaces only its own files.

How a command knows what it wrote: the manifest `OUT/.zsq-probe-output.json` (`{"format":
"zsq-probe-output", "command": ..., "files": [top-level names], "finished": bool}`), and for the commands whose
layout is fixed, those names (`demo`: runs/, figures/, findings.json, FINDINGS.md; `recipe`: runs/, figures/,
tables/, logs/, slurm/; a run folder: config.json, checkpoints/, probes/, summary.json, tensorboard/).  Only
top-level names count: a folder the command owns is the command's, whatever is inside.  The writer lock
(`.zsq-probe.lock`) and the hidden temporary files of killed writers are nobody's.

Manifest first (`writing_output`): the manifest lists the files a command is about to write, marked unfinished,
before the first of them lands (and every further file before it lands: `claim_output`), so a file in the folder
is never ours without the manifest saying so.  A name listed counts as ours even if the command died before
writing it.  When the command ends, the manifest keeps the names that exist and is marked finished.  The next
run deletes the temporary files of its own names that a killed writer left (`remove_stale_temp_files`).

With `--overwrite` (`figures`, `compare --out`) the command writes beside the files it did not write and
never replaces one of them (`zsq_probe.plots.style.protect`: such a figure fails, the file stays untouched).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

from zsq_probe.errors import UserError
from zsq_probe.rundir.atomic import atomic_write_bytes, process_alive
from zsq_probe.rundir.lock import LOCK_NAME

# light on purpose (no torch, unlike rundir.store): zsq_probe.recipes checks its folder with it
PathArg = str | os.PathLike[str]

MANIFEST = ".zsq-probe-output.json"
MANIFEST_FORMAT = "zsq-probe-output"
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp$")  # rundir.store's temporary files
DEMO_NAMES = ("runs", "figures", "findings.json", "FINDINGS.md")
RECIPE_NAMES = ("runs", "figures", "tables", "logs", "slurm")
RUN_NAMES = ("config.json", "checkpoints", "probes", "summary.json", "tensorboard")


def _nobodys(name: str) -> bool:
    """The manifest, the writer lock and a killed writer's temporary file."""
    return name in (MANIFEST, LOCK_NAME) or bool(_TEMP.match(name))


def _read_manifest(folder: Path, command: str) -> dict[str, Any] | None:
    """`command`'s manifest in `folder` as a dict (None: none, damaged, or another command's)."""
    try:
        doc = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or doc.get("command") != command:
        return None
    return doc


def manifest_names(folder: PathArg, command: str) -> set[str]:
    """The top-level names `command`'s manifest in `folder` lists (empty: none, or another command's)."""
    doc = _read_manifest(Path(folder), command)
    files = doc.get("files", []) if doc else []
    return {str(n) for n in files if isinstance(n, str)} if isinstance(files, list) else set()


def unfinished_output(folder: PathArg, command: str) -> bool:
    """Whether `command`'s manifest in `folder` says the command did not finish (it was killed while writing);
    a manifest of an older zsq-probe, without the mark, is a finished one."""
    doc = _read_manifest(Path(folder), command)
    return doc is not None and doc.get("finished", True) is False


def _write_manifest(folder: Path, command: str, names: Iterable[str], finished: bool) -> None:
    """The manifest listing `names`, written atomically (fault site `write:.zsq-probe-output.json`)."""
    doc = {"format": MANIFEST_FORMAT, "command": command, "files": sorted(set(names)), "finished": finished}
    atomic_write_bytes(folder / MANIFEST, (json.dumps(doc, indent=2) + "\n").encode())


def record_output(folder: PathArg, command: str, names: Iterable[str]) -> None:
    """Add top-level `names` to `command`'s manifest in `folder` (created, finished; an unfinished one stays so;
    written atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    listed = manifest_names(folder, command)
    remove_stale_temp_files(folder, ())
    _write_manifest(folder, command, listed | {Path(n).name for n in names}, not unfinished_output(folder, command))


def remove_stale_temp_files(folder: PathArg, names: Collection[str]) -> list[Path]:
    """Delete the temporary files (`.NAME.PID-XXXX.tmp`) in `folder` of `names` and of the manifest whose writer
    is no longer running: what a writer killed before its rename left.  Returns what it deleted."""
    folder = Path(folder)
    ours = {*names, MANIFEST, MANIFEST.lstrip(".")}  # the second: an older zsq-probe's temporary manifest
    gone = []
    for p in folder.iterdir() if folder.is_dir() else ():
        m = _TEMP.match(p.name)
        if m and m.group("name") in ours and p.is_file() and not process_alive(int(m.group("pid"))):
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def plan_output(folder: PathArg, command: str, names: Iterable[str] = ()) -> set[str]:
    """Before a command writes into `folder`: its manifest lists `names` (top-level) besides what it listed,
    marked unfinished, and the temporary files a killed writer of those names left are gone.  A name that exists
    and is not `command`'s is left out (a file a user has never becomes ours).  Returns the names listed."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    listed = manifest_names(folder, command)
    planned = {Path(n).name for n in names}
    planned = {n for n in planned if n in listed or not os.path.lexists(folder / n)}
    remove_stale_temp_files(folder, listed | planned)
    _write_manifest(folder, command, listed | planned, finished=False)
    return listed | planned


def claim_output(folder: PathArg, command: str, names: Iterable[str]) -> None:
    """List `names` in `command`'s unfinished manifest in `folder` before they are written (a no-op for names
    already listed): the files a command could not name in advance (one figure per run, a continuation page)."""
    folder = Path(folder)
    listed = manifest_names(folder, command)
    new = {Path(n).name for n in names} - listed
    if new:
        _write_manifest(folder, command, listed | new, finished=False)


def finish_output(folder: PathArg, command: str) -> list[str]:
    """After a command's last file: its manifest keeps the names that exist, marked finished (removed when none
    does).  Returns those names."""
    folder = Path(folder)
    kept = sorted(n for n in manifest_names(folder, command) if os.path.lexists(folder / n))
    if kept:
        _write_manifest(folder, command, kept, finished=True)
    else:
        (folder / MANIFEST).unlink(missing_ok=True)
    return kept


@contextlib.contextmanager
def writing_output(folder: PathArg, command: str, planned: Iterable[str] = ()) -> Iterator[Callable[..., None]]:
    """Around a command's writes into `folder` (after `check_output`): `plan_output(planned)` before, and
    `finish_output` when the block ends, with an error too (the command ended and said why); killed, or stopped by
    a signal (KeyboardInterrupt), the manifest stays unfinished: a plain rerun finishes the output.  Yields
    `claim(paths)`, to call before writing a file not planned.  A folder this created is removed again when
    nothing was written into it."""
    folder = Path(folder)
    created = not folder.exists()
    plan_output(folder, command, planned)
    try:
        yield lambda paths: claim_output(folder, command, paths)
    except Exception:
        _finish(folder, command, created)
        raise
    _finish(folder, command, created)


def _finish(folder: Path, command: str, created: bool) -> None:
    if not finish_output(folder, command) and created:
        with contextlib.suppress(OSError):
            folder.rmdir()  # only when empty


def foreign_entries(folder: PathArg, command: str, own: Collection[str] = ()) -> list[str]:
    """Top-level names in `folder` that `command` did not write (not in its manifest nor in `own`)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    mine = manifest_names(folder, command) | set(own)
    return sorted(p.name for p in folder.iterdir() if not _nobodys(p.name) and p.name not in mine)


def check_output(
    folder: PathArg, command: str, *, own: Collection[str] = (), resume: bool = False, overwrite: bool = False
) -> None:
    """Refuse `folder` (a one-line UserError, nothing touched) when it is a file, holds files `command` did not
    write (unless `overwrite`: they are then left alone), or holds `command`'s earlier, finished output and the
    command neither resumes it (`resume`) nor replaces it (`overwrite`); unfinished output is resumed."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder} is an existing file, not a folder")
    foreign = foreign_entries(folder, command, own)
    if foreign and not overwrite:
        listed = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        hint = "; pass --overwrite to write beside them" if not resume else ""
        raise UserError(
            f"--out {folder} holds files zsq-probe {command} did not write ({listed}): choose a new or empty "
            f"folder{hint}"
        )
    if resume or overwrite or not folder.is_dir() or unfinished_output(folder, command):
        return
    earlier = sorted(n for n in manifest_names(folder, command) | set(own) if (folder / n).exists())
    if earlier:
        raise UserError(
            f"--out {folder} holds an earlier zsq-probe {command} output ({', '.join(earlier[:3])}"
            f"{' ...' if len(earlier) > 3 else ''}): pass --overwrite to replace it, or choose another folder"
        )
