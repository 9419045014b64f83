"""One parquet part of a run's table: how it is written and what a reader checks before it trusts it.

A part names itself: its parquet key/value metadata holds its table (`zsq_probe.table`), table schema version
(`zsq_probe.schema_version`), the id of the run that wrote it (`zsq_probe.run_id`, config.json's `run_id`), its
key (`zsq_probe.key`, e.g. `e00003` or `e00003-posthoc`, which the file name repeats), the epochs its rows hold
(`zsq_probe.epochs`, a JSON list) and a content hash (`zsq_probe.content_sha256`): the sha256 of the file's bytes
before the parquet footer, i.e. every row of the part (a file cannot hold the hash of its own bytes; the footer
with this metadata is what the other checks read).  A post-hoc commit marker names the same hash for each part
it commits.  Readers hash the bytes they read anyway, so checking costs one sha256 pass.

A part in the wrong table's folder, under another key's name, from another run, whose rows do not match its
hash or its commit marker's, or without this metadata (written before it was recorded) is refused with one
line naming the file and what can be rebuilt; it is never read and never deleted.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from zsq_probe.errors import UserError, one_line
from zsq_probe.rundir.schema import text_in_numeric_columns
from zsq_probe.version import __version__

# 2: hessian_trace gained num_vjps and stopped_by; crossings' epoch totals gained changed_net and changed_weights.
# 3: every part records its run id, key, epochs and content hash (PART_IDENTITY); parts without them are refused
TABLE_SCHEMA_VERSION = 3
META_PREFIX = "zsq_probe."
CONTENT_HASH = "content_sha256"
# what a part's metadata must hold (each under META_PREFIX)
PART_IDENTITY = ("table", "schema_version", "run_id", "key", "epochs", CONTENT_HASH)
# what can be recovered of a refused part (resume rewrites only the epochs after its checkpoint)
TRAINING_PART_ADVICE = (
    "a training part cannot be rebuilt (resume rewrites only epochs after the last checkpoint): "
    "delete it to read the rest without that epoch"
)
POSTHOC_PART_ADVICE = "rebuild it by rerunning its probe on epoch {epoch} with --overwrite"
NOT_COMMITTED = None  # `verify_part(committed=)`: no commit marker lists the part (online parts, or a crash)
_PART_NAME = re.compile(r"^(part-|_staged-)(?P<key>.+)\.parquet$")


def rebuild_advice(key: str) -> str:
    """What can be done about a refused part of `key`: a post-hoc part is measured again, a training part not."""
    if key.endswith("-posthoc"):
        m = re.match(r"^e(\d+)", key)
        return POSTHOC_PART_ADVICE.format(epoch=int(m.group(1)) if m else key)
    return TRAINING_PART_ADVICE


def part_key(path: Path) -> str:
    """The key a part's file name gives it (`part-<key>.parquet`, `_staged-<key>.parquet`)."""
    m = _PART_NAME.match(path.name)
    return m.group("key") if m else path.stem


def encode_part(df: pd.DataFrame, table: str, run_id: str, key: str) -> tuple[bytes, str]:
    """The parquet bytes of one part of `table` (rows `df`, `schema_version` added) naming its run, key and
    epochs, and its content hash (the sha256 of the bytes before the footer, recorded in the footer too)."""
    df = df.copy()
    df["schema_version"] = TABLE_SCHEMA_VERSION
    if "epoch" in df.columns:
        epochs = sorted({int(e) for e in df["epoch"].dropna()})
    else:
        m = re.match(r"^e(\d+)", key)
        epochs = [int(m.group(1))] if m else []
    identity = {
        "table": table,
        "schema_version": str(TABLE_SCHEMA_VERSION),
        "run_id": run_id,
        "key": key,
        "epochs": json.dumps(epochs),
    }
    tbl = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(tbl.schema.metadata or {})
    meta.update({(META_PREFIX + k).encode(): v.encode() for k, v in identity.items()})
    tbl = tbl.replace_schema_metadata(meta)
    buf = io.BytesIO()
    with pq.ParquetWriter(buf, tbl.schema) as writer:
        writer.write_table(tbl)
        footer_at = buf.tell()  # every row group is written: what follows is the footer
        with buf.getbuffer() as written:  # released before the writer appends the footer
            sha = hashlib.sha256(written).hexdigest()
        writer.add_key_value_metadata({META_PREFIX + CONTENT_HASH: sha})
    data = buf.getvalue()
    if _footer_start(data) != footer_at:  # the hash must cover exactly what a reader hashes
        raise RuntimeError(f"parquet writer left {len(data)} bytes with its footer not at {footer_at}")
    return data, sha


def _footer_start(data: bytes) -> int | None:
    """Where a parquet file's footer starts (None: not a parquet file): `PAR1`, rows, footer, its length, `PAR1`."""
    if len(data) < 12 or data[:4] != b"PAR1" or data[-4:] != b"PAR1":
        return None
    start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    return start if start >= 4 else None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except PermissionError:
        raise UserError(unreadable(path, "parquet part")) from None
    except OSError as e:
        raise UserError(f"{path} cannot be read ({one_line(e, limit=160, with_type=False)})") from None


def _metadata(path: Path, data: bytes) -> dict[str, str]:
    """The part's key/value metadata (`zsq_probe.` keys, prefix removed); a one-line UserError when the bytes are
    not a parquet file."""
    try:
        if not data:
            raise ValueError("the file is empty, 0 bytes")
        raw = pq.read_metadata(pa.BufferReader(data)).metadata or {}
    except (ValueError, OSError, pa.ArrowException) as e:
        if not os.access(path, os.R_OK):
            raise UserError(unreadable(path, "parquet part")) from None
        raise UserError(
            f"{path} is not a readable parquet file ({one_line(e, limit=160, with_type=False)}); "
            f"{rebuild_advice(part_key(path))}"
        ) from None
    prefix = META_PREFIX.encode()
    return {
        k[len(prefix) :].decode(errors="replace"): v.decode(errors="replace")
        for k, v in raw.items()
        if k.startswith(prefix)
    }


def verify_part(
    path: Path, table: str, run_id: str, committed: str | None = NOT_COMMITTED, action: str = "read"
) -> bytes:
    """The bytes of the part at `path` once they are checked: a part of `table` (this code's schema version),
    written by run `run_id` under the key its file name gives, whose rows match its content hash and the hash its
    commit marker names (`committed`: "" for a marker that names none; NOT_COMMITTED: no marker lists it).
    Raises a one-line UserError naming the file and what can be rebuilt, or (a newer schema version) saying to
    upgrade zsq-probe to `action` the run."""
    data = _read_bytes(path)
    meta = _metadata(path, data)
    key = part_key(path)
    try:
        version: int | None = int(meta["schema_version"])
    except (KeyError, ValueError):
        version = None
    if version is not None:
        check_part_version(path, version, action)
    missing = [META_PREFIX + k for k in PART_IDENTITY if k not in meta]
    if missing:
        raise UserError(
            f"{path} has no {', '.join(missing)} in its parquet metadata: written before parts recorded their run "
            f"and content hash (table schema version {version or '1 or 2'}; this zsq-probe reads "
            f"{TABLE_SCHEMA_VERSION}); {rebuild_advice(key)}"
        )
    problem = _identity_problem(meta, table, run_id, key, version, data)
    if problem is None and committed is not NOT_COMMITTED and committed != meta[CONTENT_HASH]:
        problem = "is not the part its post-hoc commit marker names (another content hash)"
    if problem:
        raise UserError(f"{path} {problem}; {rebuild_advice(key)}")
    return data


def _identity_problem(
    meta: dict[str, str], table: str, run_id: str, key: str, version: int | None, data: bytes
) -> str | None:
    """What is wrong with a part's metadata or rows, for a message after its path (None: nothing)."""
    if version != TABLE_SCHEMA_VERSION:
        return f"has table schema version {meta['schema_version']!r}; this zsq-probe reads {TABLE_SCHEMA_VERSION}"
    if meta["table"] != table:
        return f"is a part of table {meta['table']!r}, not {table!r} (copied into the wrong folder)"
    if meta["key"] != key:
        return f"holds the {table} part {meta['key']} (epochs {meta['epochs']}), not {key} (renamed or swapped)"
    if meta["run_id"] != run_id:
        return f"was written by another run (run id {meta['run_id'][:12]}, this run's is {run_id[:12]})"
    start = _footer_start(data)
    if start is None or hashlib.sha256(memoryview(data)[:start]).hexdigest() != meta[CONTENT_HASH]:
        return "does not match its content hash (its rows were changed or damaged after it was written)"
    return None


def read_part(
    path: Path, table: str, run_id: str, committed: str | None = NOT_COMMITTED, action: str = "read"
) -> pd.DataFrame:
    """One part of `table` as a DataFrame, once `verify_part` accepts it; a UserError (one line, saying what can
    be rebuilt) also when it holds text where the schema has numbers."""
    data = verify_part(path, table, run_id, committed, action)
    try:
        df = pd.read_parquet(io.BytesIO(data))
    except (OSError, pa.ArrowException) as e:
        raise UserError(
            f"{path} is not a readable parquet file ({one_line(e, limit=160, with_type=False)}); "
            f"{rebuild_advice(part_key(path))}"
        ) from None
    text = text_in_numeric_columns(df, table)
    if text:
        raise UserError(f"{path} holds text in numeric column(s) {', '.join(text)}; {rebuild_advice(part_key(path))}")
    return df


def part_schema_version(path: Path) -> int | None:
    """The table schema version a part's metadata records (None: none recorded, or not a readable parquet file;
    `verify_part` says which)."""
    try:
        raw = pq.read_schema(path).metadata or {}
        return int(raw[(META_PREFIX + "schema_version").encode()])
    except (KeyError, ValueError, OSError, pa.ArrowException):
        return None


def check_part_version(path: Path, version: int, action: str) -> None:
    """Refuse (one line) a part of a newer table schema than this code's: the run was written by a newer
    zsq-probe, and reading or extending it here could misread or mix its rows."""
    if version > TABLE_SCHEMA_VERSION:
        raise UserError(
            f"{path} was written by a newer zsq-probe (table schema version {version}); this zsq-probe "
            f"({own_version()}) reads versions up to {TABLE_SCHEMA_VERSION}: upgrade zsq-probe to "
            f"{action} this run"
        )


def unreadable(path: str | os.PathLike[str], what: str = "file") -> str:
    """The message for a file this user may not read: unreadable, with its mode -- not damaged."""
    try:
        mode = f"mode {stat.S_IMODE(os.stat(path).st_mode):03o}"
    except OSError:
        mode = "mode unknown"
    return (
        f"{what} {path} is unreadable ({mode}: permission denied for this user); it is not damaged: give "
        f"yourself read permission (chmod u+r) and run again"
    )


def own_version() -> str:
    """`version X` of this zsq-probe, for messages naming what reads what."""
    return f"version {__version__}"
