"""The output policy of every command that writes a folder (`figures`, `compare --out`, `demo`, `recipe`,
`train`): nothing a user has is overwritten.

* A folder holding files the command did not write is refused (a `UserError`, nothing touched).
* Its own earlier output is resumed where the command resumes (`demo`, `recipe`, `train --resume`) or
  replaced only with `--overwrite` (`figures`, `compare --out`); `train` without `--resume` wants a new or
  empty folder (`RunDir.ensure_new`).

How a command knows what it wrote: the manifest `OUT/.zsq-probe-output.json` (`{"format":
"zsq-probe-output", "command": ..., "files": [top-level names]}`), written next to its output, and for the
commands whose layout is fixed, those names (`demo`: runs/, figures/, findings.json, FINDINGS.md; `recipe`:
runs/, figures/, tables/, logs/, slurm/; a run folder: config.json, checkpoints/, probes/, summary.json,
tensorboard/).  Only top-level names count: a folder the command owns is the command's, whatever is inside.
The writer lock (`.zsq-probe.lock`) and the hidden temporary files of killed writers are nobody's.

With `--overwrite` (`figures`, `compare --out`) the command writes beside the files it did not write and
never replaces one of them (`zsq_probe.plots.style.protect`: such a figure fails, the file stays untouched).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Collection, Iterable
from pathlib import Path

from zsq_probe.errors import UserError
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


def manifest_names(folder: PathArg, command: str) -> set[str]:
    """The top-level names `command`'s manifest in `folder` lists (empty: none, or another command's)."""
    path = Path(folder) / MANIFEST
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return set()
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or doc.get("command") != command:
        return set()
    return {str(n) for n in doc.get("files", []) if isinstance(n, str)}


def record_output(folder: PathArg, command: str, names: Iterable[str]) -> None:
    """Add top-level `names` to `command`'s manifest in `folder` (created; written atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = sorted(manifest_names(folder, command) | {Path(n).name for n in names})
    doc = {"format": MANIFEST_FORMAT, "command": command, "files": files}
    fd, tmp = tempfile.mkstemp(prefix=f"{MANIFEST}.{os.getpid()}-", suffix=".tmp", dir=folder)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, folder / MANIFEST)


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
    write (unless `overwrite`: they are then left alone), or holds `command`'s earlier output and the command
    neither resumes it (`resume`) nor replaces it (`overwrite`)."""
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
    if resume or overwrite or not folder.is_dir():
        return
    earlier = sorted(n for n in manifest_names(folder, command) | set(own) if (folder / n).exists())
    if earlier:
        raise UserError(
            f"--out {folder} holds an earlier zsq-probe {command} output ({', '.join(earlier[:3])}"
            f"{' ...' if len(earlier) > 3 else ''}): pass --overwrite to replace it, or choose another folder"
        )
