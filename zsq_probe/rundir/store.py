"""The run directory: config, checkpoints and parquet parts, all written atomically.

    RUN/config.json                    resolved config, package versions, seed, quantisation spec
    RUN/checkpoints/epoch-0007.pt      everything needed to resume or probe post hoc (weights_only-safe)
    RUN/probes/<table>/part-e0007.parquet   one part per epoch (per flush); rewriting an epoch replaces
                                       its part, so a resumed run never duplicates rows

Every file is written to a temporary name in the same folder (`.NAME.PID-XXXX.tmp`) and renamed into place:
a reader (or a resumed run after kill -9) never sees a half-written file.  Readers never look at the
hidden temporary names (pandas/pyarrow skip names starting with '.'); a resumed run deletes leftovers.
Each part names its table, run, key, epochs and content hash (`zsq_probe.rundir.parts`): readers and resume
check them and refuse, never read or delete, a part that is not what its place says.

Test-only fault injection: with ZSQ_PROBE_FAULT=PATTERN in the environment, the process kills itself
with SIGKILL at the first site whose name matches the fnmatch PATTERN (`fault_point`).  Sites:
`checkpoint:<epoch>` and `part:<table>:<key>` (after the temporary file is written, before the rename),
`write:<file name>` (other files, e.g. config.json), `step:<epoch>:<step>` (the trainer, after an
iteration), `commit:<probe>:<key>` (a post-hoc commit marker, before its rename) and
`publish:<table>:<key>` (a committed post-hoc part, before it is renamed into place).
Example: ZSQ_PROBE_FAULT='part:cosine:e00002'.  Never set it outside tests.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import pickle
import platform
import re
import uuid
import warnings
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeAlias

import numpy
import pandas as pd
import pyarrow as pa
import torch

from zsq_probe.errors import UserError, one_line
from zsq_probe.rundir.atomic import FAULT_ENV as FAULT_ENV  # re-exported: tests and tools set it by this name
from zsq_probe.rundir.atomic import atomic_write_bytes, fault_point, fsync_dir, process_alive
from zsq_probe.rundir.parts import NOT_COMMITTED as NOT_COMMITTED
from zsq_probe.rundir.parts import TABLE_SCHEMA_VERSION as TABLE_SCHEMA_VERSION  # re-exported
from zsq_probe.rundir.parts import (
    check_part_version,
    encode_part,
    own_version,
    part_key,
    part_schema_version,
    read_part,
    unreadable,
    verify_part,
)
from zsq_probe.rundir.safe_pickle import sniff_file
from zsq_probe.version import __version__

PathArg: TypeAlias = str | os.PathLike[str]  # a file or folder, as a string or a path
JSONDict: TypeAlias = dict[str, Any]  # a parsed JSON object (config.json: nested values of any JSON type)
CheckpointState: TypeAlias = dict[str, Any]  # a checkpoint: state dicts, tensors, numbers (weights_only-safe values)
# the rows of one part: dicts (column -> value) or a DataFrame
TableRows: TypeAlias = Iterable[Mapping[str, object]] | pd.DataFrame

RUN_FORMAT = "zsq-probe-run"
RUN_SCHEMA_VERSION = 1
STAGED_PREFIX = "_staged-"  # a post-hoc part written but not yet committed (see RunDir.commit_parts)
_PART = re.compile(r"^part-(?P<key>[A-Za-z0-9_.-]+)\.parquet$")
# what atomic_write_bytes leaves behind when killed: .NAME.PID-RANDOM.tmp (PID: the writing process)
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[A-Za-z0-9_]+\.tmp$")
CHECKPOINT_KEYS = ("epoch", "global_step", "student", "optimizer", "rng")


def remove_dead_temp_files(path: PathArg) -> list[Path]:
    """Delete the temporary copies of `path` (`.NAME.PID-XXXX.tmp` beside it) whose writer is no longer
    running: what a writer killed before its rename left.  Returns what it deleted."""
    path = Path(path)
    gone = []
    for p in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        m = _TEMP.match(p.name)
        if m and m.group("name") == path.name and p.is_file() and not process_alive(int(m.group("pid"))):
            p.unlink(missing_ok=True)
            gone.append(p)
    return gone


def atomic_torch_save(obj: object, path: Path, site: str | None = None) -> None:
    """`torch.save(obj)` to `path`, atomically (`atomic_write_bytes`)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue(), site)


def package_versions() -> dict[str, str | None]:
    """The versions of zsq-probe, Python and the libraries a run's numbers depend on (None: unknown)."""
    import pytorchcv  # noqa: F401

    def ver(mod: str) -> str | None:
        try:
            return version(mod)
        except Exception:  # noqa: BLE001 - a version we cannot read is recorded as unknown
            return None

    return {
        "zsq_probe": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "pytorchcv": ver("pytorchcv"),
        "pandas": pd.__version__,
        "pyarrow": pa.__version__,
        "python": platform.python_version(),
    }


class RunDir:
    """A zsq-probe run folder on disk."""

    def __init__(self, path: PathArg) -> None:
        self.path = Path(path)

    # --- layout
    @property
    def config_path(self) -> Path:
        """RUN/config.json."""
        return self.path / "config.json"

    @property
    def checkpoint_dir(self) -> Path:
        """RUN/checkpoints."""
        return self.path / "checkpoints"

    def table_dir(self, table: str) -> Path:
        """RUN/probes/<table>, the folder of a table's parts."""
        return self.path / "probes" / table

    @property
    def name(self) -> str:
        """The run folder's name (every row records it)."""
        return self.path.resolve().name

    @property
    def run_id(self) -> str:
        """What identifies the run wherever its folder is and whatever it is called: the `run_id` written into
        config.json when the run was created (a copied folder keeps it); for runs written before run ids,
        'config-' and a hash of config.json (which holds the seed and package versions)."""
        doc = self.read_config_doc()
        rid = doc.get("run_id")
        if isinstance(rid, str) and rid:
            return rid

        return "config-" + hashlib.sha256(self.config_path.read_bytes()).hexdigest()[:16]

    # --- creation / opening
    @staticmethod
    def ensure_new(path: PathArg) -> None:
        """Refuse a folder that already holds anything (nothing a user has is overwritten)."""
        path = Path(path)
        if not path.exists():
            return
        if not path.is_dir():
            raise UserError(f"{path} is not a folder; choose another --out")
        # a run killed while it wrote its first file (config.json) left only that file's temporary copy
        # (and the writer lock file, see zsq_probe.rundir.lock)
        left = [
            p
            for p in path.iterdir()
            if not (p.name.startswith(".config.json.") and _TEMP.match(p.name)) and p.name != ".zsq-probe.lock"
        ]
        if left:
            raise UserError(f"{path} is not empty; pass --resume to continue that run, or choose another --out")

    def write_config(self, config: Mapping[str, object], extra: Mapping[str, object] | None = None) -> None:
        """Write config.json: the run config, the format and package versions, and `extra` keys; a new run id
        (`run_id`) unless `extra` carries the run's own."""
        doc: dict[str, object] = {
            "format": RUN_FORMAT,
            "run_schema_version": RUN_SCHEMA_VERSION,
            "run_id": uuid.uuid4().hex,
            "config": config,
            "versions": package_versions(),
        }
        doc.update(extra or {})
        atomic_write_bytes(self.config_path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())

    @classmethod
    def open(cls, path: PathArg) -> RunDir:
        """An existing run; a one-line error when the folder is not one (or one we cannot read)."""
        run = cls(path)
        if run.path.exists() and not run.path.is_dir():
            raise UserError(
                f"{run.path} is a file, not a run folder: pass the run's folder (the one holding config.json)"
            )
        if not run.path.is_dir():
            raise UserError(f"run folder {run.path} does not exist")
        doc = run.read_config_doc()
        if doc.get("format") != RUN_FORMAT:
            raise UserError(f"{run.path} is not a zsq-probe run (config.json has no format {RUN_FORMAT!r})")
        v = doc.get("run_schema_version")
        if v != RUN_SCHEMA_VERSION:
            wrote = (doc.get("versions") or {}).get("zsq_probe")
            by = f" (written by zsq-probe {wrote})" if wrote else ""
            raise UserError(
                f"{run.path} has run schema version {v}{by}; this zsq-probe ({own_version()}) reads "
                f"version {RUN_SCHEMA_VERSION}: open it with the zsq-probe release that wrote it"
            )
        if not isinstance(doc.get("config"), dict):
            raise UserError(f"{run.config_path} has no run config (key 'config'): the file is damaged")
        return run

    def remove_temp_files(self) -> list[Path]:
        """Delete the hidden temporary files killed writers left (harmless, but a checkpoint's takes space).
        A file whose writer is still running on this machine (e.g. a post-hoc probe) is left alone."""
        gone = []
        for folder in [self.path, self.checkpoint_dir, *((self.path / "probes").glob("*"))]:
            if folder.is_dir():
                for p in folder.iterdir():
                    m = _TEMP.match(p.name)
                    if m and p.is_file() and not process_alive(int(m.group("pid"))):
                        p.unlink(missing_ok=True)
                        gone.append(p)
        return gone

    def read_config_doc(self) -> JSONDict:
        """config.json as a dict; a one-line UserError when it is missing or unreadable."""
        if not self.config_path.is_file():
            if any(_TEMP.match(p.name) for p in self.path.glob(".config.json.*")):
                raise UserError(
                    f"{self.path} is not a zsq-probe run yet (it was stopped before it wrote config.json):"
                    f" start it again without --resume"
                )
            raise UserError(f"{self.path} is not a zsq-probe run (no config.json)")
        try:
            doc = json.loads(self.config_path.read_text())
        except PermissionError:
            raise UserError(unreadable(self.config_path, "run config")) from None
        except (OSError, ValueError) as e:
            raise UserError(f"{self.config_path} is not readable JSON ({e.__class__.__name__})") from None
        if not isinstance(doc, dict):
            raise UserError(f"{self.path} is not a zsq-probe run (config.json holds no object)")
        return doc

    # --- checkpoints
    def checkpoint_path(self, epoch: int) -> Path:
        """RUN/checkpoints/epoch-NNNN.pt of `epoch`."""
        return self.checkpoint_dir / f"epoch-{epoch:04d}.pt"

    def checkpoints(self) -> dict[int, Path]:
        """Epoch -> checkpoint file, for every complete checkpoint on disk."""
        out: dict[int, Path] = {}
        if self.checkpoint_dir.is_dir():
            for p in self.checkpoint_dir.glob("epoch-*.pt"):
                m = re.match(r"epoch-(\d+)\.pt$", p.name)
                if m:
                    out[int(m.group(1))] = p
        return dict(sorted(out.items()))

    def save_checkpoint(self, epoch: int, state: CheckpointState, keep: Callable[[int], bool] | None = None) -> Path:
        """Write the checkpoint of `epoch` atomically; then delete every other checkpoint whose epoch `keep`
        rejects (None: keep them all)."""
        path = self.checkpoint_path(epoch)
        atomic_torch_save(state, path, site=f"checkpoint:{epoch}")
        if keep is not None:
            for e, p in self.checkpoints().items():
                if e != epoch and not keep(e):
                    p.unlink(missing_ok=True)
        return path

    def load_checkpoint(
        self, epoch: int | None = None, map_location: str | torch.device = "cpu"
    ) -> tuple[int, CheckpointState]:
        """(epoch, state) of the checkpoint of `epoch` (None: the last); a UserError when there is none or it
        is not a zsq-probe checkpoint."""
        cps = self.checkpoints()
        if not cps:
            raise UserError(f"{self.path} has no checkpoints")
        if epoch is None:
            epoch = max(cps)
        if epoch not in cps:
            raise UserError(f"{self.path} has no checkpoint for epoch {epoch} (has {sorted(cps)})")
        state = load_checkpoint_file(cps[epoch], map_location)
        missing = [k for k in CHECKPOINT_KEYS if k not in state] if isinstance(state, dict) else list(CHECKPOINT_KEYS)
        if missing:
            raise UserError(f"{cps[epoch]} is not a zsq-probe checkpoint (no {', '.join(missing)})")
        return epoch, state

    # --- parquet tables
    def part_path(self, table: str, key: str) -> Path:
        """RUN/probes/<table>/part-<key>.parquet."""
        return self.table_dir(table) / f"part-{key}.parquet"

    def write_part(self, table: str, rows: TableRows, key: str, staged: bool = False) -> Path | None:
        """Write one part of `table` (rows: list of dicts or a DataFrame); same key replaces that part.
        `staged`: write it as `_staged-<key>.parquet` (invisible to parquet readers) for `commit_parts`.
        The part records its table, this run's id, its key, epochs and content hash (`zsq_probe.rundir.parts`)."""
        written = self._write_part(table, rows, key, staged)
        return written[0] if written else None

    def _write_part(self, table: str, rows: TableRows, key: str, staged: bool) -> tuple[Path, str] | None:
        """(path, content hash) of the part written, None when there are no rows."""
        df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        if df.empty:
            return None
        data, sha = encode_part(df, table, self.run_id, key)
        path = self.table_dir(table) / f"{STAGED_PREFIX if staged else 'part-'}{key}.parquet"
        atomic_write_bytes(path, data, site=f"part:{table}:{key}")
        return path, sha

    # --- all-or-nothing commits of several tables' parts (post-hoc probes)
    @property
    def commit_dir(self) -> Path:
        """RUN/probes/_commits, the post-hoc commit markers."""
        return self.path / "probes" / "_commits"

    def commit_marker(self, probe: str, key: str) -> Path:
        """The commit marker of one post-hoc probe's epoch `key`."""
        return self.commit_dir / f"{probe}.{key}.json"

    def commit_parts(self, probe: str, parts: Mapping[str, TableRows], key: str) -> None:
        """Write every table's part of one epoch all or nothing: each part is first staged under a hidden
        name (`_staged-<key>.parquet`), then the marker `probes/_commits/<probe>.<key>.json` (listing the
        tables and each part's content hash) is written last -- the commit point -- and only then are the
        staged parts renamed into place.  A kill before the marker leaves only staged files (deleted by
        `recover_commits`); a kill after it is rolled forward by `recover_commits`.  Readers never see a staged
        file or a marker."""
        hashes = {t: w[1] for t, rows in parts.items() if (w := self._write_part(t, rows, key, staged=True))}
        doc = {"probe": probe, "key": key, "tables": list(hashes), "sha256": hashes}
        atomic_write_bytes(self.commit_marker(probe, key), json.dumps(doc).encode(), site=f"commit:{probe}:{key}")
        self._publish(hashes, key)

    def _publish(self, tables: Iterable[str], key: str) -> None:
        for table in tables:
            staged = self.table_dir(table) / f"{STAGED_PREFIX}{key}.parquet"
            if staged.is_file():
                fault_point(f"publish:{table}:{key}")
                os.replace(staged, self.table_dir(table) / f"part-{key}.parquet")
                fsync_dir(staged.parent)

    def commits(self) -> dict[tuple[str, str], list[str]]:
        """(probe, key) -> tables, for every committed marker (unreadable markers count as absent)."""
        out: dict[tuple[str, str], list[str]] = {}
        if self.commit_dir.is_dir():
            for p in self.commit_dir.glob("*.json"):
                try:
                    doc = json.loads(p.read_text())
                    out[(str(doc["probe"]), str(doc["key"]))] = [str(t) for t in doc["tables"]]
                except (OSError, ValueError, KeyError, TypeError):
                    continue
        return out

    def committed_hashes(self) -> dict[tuple[str, str], str]:
        """(table, key) -> the content hash its commit marker names ("" for a marker that names none)."""
        out: dict[tuple[str, str], str] = {}
        if self.commit_dir.is_dir():
            for p in self.commit_dir.glob("*.json"):
                try:
                    doc = json.loads(p.read_text())
                    hashes = doc.get("sha256") if isinstance(doc.get("sha256"), dict) else {}
                    out.update({(str(t), str(doc["key"])): str(hashes.get(t, "")) for t in doc["tables"]})
                except (OSError, ValueError, KeyError, TypeError, AttributeError):
                    continue
        return out

    def recover_commits(self) -> dict[str, list[str]]:
        """Finish what a killed `commit_parts` left: staged parts of a committed epoch are renamed into place
        (roll forward), staged parts without a marker are deleted (roll back).  Returns what it did."""
        done: dict[str, list[str]] = {"published": [], "removed": []}
        committed = self.commits()
        for (_probe, key), tables in committed.items():
            pending = [t for t in tables if (self.table_dir(t) / f"{STAGED_PREFIX}{key}.parquet").is_file()]
            if pending:
                self._publish(pending, key)
                done["published"] += [f"{t}/{key}" for t in pending]
        live = {(t, k) for (_, k), ts in committed.items() for t in ts}
        root = self.path / "probes"
        for folder in root.iterdir() if root.is_dir() else []:
            if folder.is_dir():
                for p in folder.glob(f"{STAGED_PREFIX}*.parquet"):
                    key = p.name[len(STAGED_PREFIX) : -len(".parquet")]
                    if (folder.name, key) not in live:
                        p.unlink(missing_ok=True)
                        done["removed"].append(f"{folder.name}/{key}")
        return done

    def part_keys(self, table: str) -> list[str]:
        """The keys of a table's parts (`part-<key>.parquet`), sorted."""
        d = self.table_dir(table)
        if not d.is_dir():
            return []
        return sorted(m.group("key") for p in d.iterdir() if (m := _PART.match(p.name)))

    def remove_parts(self, table: str, keep: Callable[[str], bool]) -> None:
        """Delete parts whose key fails `keep(key)` (resume drops what a crash left past the checkpoint), and
        first the commit markers that list them: a marker never outlives a part it describes."""
        gone = [key for key in self.part_keys(table) if not keep(key)]
        for (probe, key), tables in self.commits().items():
            if key in gone and table in tables:
                self.commit_marker(probe, key).unlink(missing_ok=True)
        for key in gone:
            (self.table_dir(table) / f"part-{key}.parquet").unlink(missing_ok=True)

    def remove_markers(self, keep: Callable[[str], bool]) -> None:
        """Delete the commit markers whose key fails `keep(key)` (those of epochs with no part, too)."""
        for probe, key in self.commits():
            if not keep(key):
                self.commit_marker(probe, key).unlink(missing_ok=True)

    def discard_commit(self, probe: str, key: str, tables: Iterable[str]) -> None:
        """Forget one post-hoc epoch before it is measured again (`--overwrite`): its marker first, then its
        parts, so a kill in between leaves an epoch that is simply not done (and is recomputed)."""
        self.commit_marker(probe, key).unlink(missing_ok=True)
        for table in tables:
            (self.table_dir(table) / f"part-{key}.parquet").unlink(missing_ok=True)

    def tables(self) -> list[str]:
        """The tables that have at least one part, sorted."""
        root = self.path / "probes"
        return sorted(p.name for p in root.iterdir() if p.is_dir() and self.part_keys(p.name)) if root.is_dir() else []

    def read_table(self, table: str) -> pd.DataFrame:
        """Every part of `table` as one DataFrame, in file-name order, each checked first (`read_part`): a part
        of another table, key or run, or whose rows do not match its content hash or its commit marker's, is
        refused with one line naming it, as is one of a newer schema than this code reads."""
        folder = self.table_dir(table)
        paths = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
        if not paths:
            raise UserError(f"no parquet parts under {folder}")
        run_id, named = self.run_id, self.committed_hashes()
        frames = [read_part(p, table, run_id, named.get((table, part_key(p)), NOT_COMMITTED)) for p in paths]
        return pd.concat(frames, ignore_index=True)

    def read_part(self, table: str, key: str) -> pd.DataFrame:
        """One part of `table` (`part-<key>.parquet`), checked as `read_table` checks it."""
        return read_part(
            self.part_path(table, key), table, self.run_id, self.committed_hashes().get((table, key), NOT_COMMITTED)
        )

    def check_parts(self, action: str) -> None:
        """Check every part of every table as `read_table` does, without parsing its rows: what a resume runs
        before it writes anything.  Raises the first refusal (one line; `action` names what a newer schema
        version stops)."""
        run_id, named = self.run_id, self.committed_hashes()
        for table in self.tables():
            for p in sorted(self.table_dir(table).glob("part-*.parquet")):
                verify_part(p, table, run_id, named.get((table, part_key(p)), NOT_COMMITTED), action)

    def check_part_versions(self, action: str) -> None:
        """Refuse (one line) a run holding any part of a newer table schema than this code's (before a post-hoc
        probe adds parts of this version beside them).  Other problems are left to the readers' own message."""
        for table in self.tables():
            for key in self.part_keys(table):
                path = self.part_path(table, key)
                version = part_schema_version(path)
                if version is not None:
                    check_part_version(path, version, action)


def read_table(folder: PathArg) -> pd.DataFrame:
    """Every part of the table folder `folder` (RUN/probes/<table>), checked against its run (`RunDir.read_table`)."""
    folder = Path(folder)
    run = RunDir(folder.parent.parent)
    if folder.parent.name != "probes" or not run.config_path.is_file():
        raise UserError(
            f"{folder} is not a table folder of a run (RUN/probes/<table>): parts are read with the run whose id "
            f"they record"
        )
    return run.read_table(folder.name)


def epoch_key(epoch: int, suffix: str = "") -> str:
    """The part key of an epoch: `e00007` (+ suffix, e.g. `-posthoc`)."""
    return f"e{epoch:05d}{suffix}"


def key_epoch(key: str) -> int | None:
    """The epoch of a part key (None for a key that names none)."""
    m = re.match(r"^e(\d+)", key)
    return int(m.group(1)) if m else None


def load_checkpoint_file(path: PathArg, map_location: str | torch.device = "cpu") -> CheckpointState:
    """Load a checkpoint with weights_only=True: no pickled code from a file someone sent you runs."""
    try:
        with warnings.catch_warnings():  # a plain pickle's protocol note would be a second stderr line
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state: CheckpointState = torch.load(path, map_location=map_location, weights_only=True)
            return state
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist") from None
    except PermissionError:
        raise UserError(unreadable(path, "checkpoint")) from None
    except Exception as e:  # noqa: BLE001 - every failure is one line naming what the file is
        if not os.access(path, os.R_OK):
            raise UserError(unreadable(path, "checkpoint")) from None

        kind = sniff_file(path)  # what the file is, found without unpickling it
        m = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f" ({m.group(1)})" if m else ""
        if kind == "pickle":  # pickle.dump of something: never a checkpoint zsq-probe wrote
            raise UserError(
                f"checkpoint {path} is a pickled (non-weights-only) file{what}, not a torch checkpoint: "
                f"zsq-probe refuses to load it for safety (unpickling can run code from the file); "
                f"delete it to resume from the one before"
            ) from None
        if (
            isinstance(e, pickle.UnpicklingError)
            and kind in ("zip", "torch-legacy")
            and (m or "weights only" in str(e).lower())
        ):  # weights_only refused a global that is not a tensor type
            raise UserError(
                f"checkpoint {path} holds pickled Python objects{what} besides tensors and was refused "
                f"(loaded with weights_only=True, which never runs code from a file)"
            ) from None
        if kind == "unknown":  # random bytes, text, ...
            raise UserError(
                f"checkpoint {path} is not a torch checkpoint (unreadable); delete it to resume from the one before"
            ) from None
        # RuntimeError for truncated zips, EOFError for an empty file
        raise UserError(
            f"checkpoint {path} is truncated or corrupt ({one_line(e, limit=160, with_type=False)}); "
            f"delete it to resume from the one before"
        ) from None
