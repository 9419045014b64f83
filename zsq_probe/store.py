"""The run directory: config, checkpoints and parquet parts, all written atomically.

    RUN/config.json                    resolved config, package versions, seed, quantisation spec
    RUN/checkpoints/epoch-0007.pt      everything needed to resume or probe post hoc (weights_only-safe)
    RUN/probes/<table>/part-e0007.parquet   one part per epoch (per flush); rewriting an epoch replaces
                                       its part, so a resumed run never duplicates rows

Every file is written to a temporary name in the same folder and renamed into place: a reader (or a
resumed run after kill -9) never sees a half-written file.
"""

from __future__ import annotations

import json
import os
import platform
import re
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from zsq_probe.errors import UserError

RUN_FORMAT = "zsq-probe-run"
RUN_SCHEMA_VERSION = 1
TABLE_SCHEMA_VERSION = 1
_PART = re.compile(r"^part-(?P<key>[A-Za-z0-9_.-]+)\.parquet$")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_torch_save(obj, path: Path) -> None:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def package_versions() -> dict:
    import numpy
    import pytorchcv  # noqa: F401

    import zsq_probe

    def ver(mod):
        try:
            from importlib.metadata import version

            return version(mod)
        except Exception:
            return None

    return {"zsq_probe": zsq_probe.__version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "pytorchcv": ver("pytorchcv"), "pandas": pd.__version__, "pyarrow": pa.__version__,
            "python": platform.python_version()}


class RunDir:
    """A zsq-probe run folder on disk."""

    def __init__(self, path):
        self.path = Path(path)

    # --- layout
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    def table_dir(self, table: str) -> Path:
        return self.path / "probes" / table

    @property
    def name(self) -> str:
        return self.path.resolve().name

    # --- creation / opening
    @staticmethod
    def ensure_new(path) -> None:
        """Refuse a folder that already holds anything (nothing a user has is overwritten)."""
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise UserError(f"{path} is not empty; pass --resume to continue that run, or choose another --out")

    def write_config(self, config: dict, extra: dict | None = None) -> None:
        doc = {"format": RUN_FORMAT, "run_schema_version": RUN_SCHEMA_VERSION,
               "config": config, "versions": package_versions()}
        doc.update(extra or {})
        atomic_write_bytes(self.config_path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())

    @classmethod
    def open(cls, path) -> "RunDir":
        """An existing run; a one-line error when the folder is not one (or one we cannot read)."""
        run = cls(path)
        if not run.path.is_dir():
            raise UserError(f"run folder {run.path} does not exist")
        doc = run.read_config_doc()
        if doc.get("format") != RUN_FORMAT:
            raise UserError(f"{run.path} is not a zsq-probe run (config.json has no format {RUN_FORMAT!r})")
        v = doc.get("run_schema_version")
        if v != RUN_SCHEMA_VERSION:
            raise UserError(f"{run.path} has run schema version {v}; this zsq-probe reads version "
                            f"{RUN_SCHEMA_VERSION} (use the zsq-probe release that wrote it)")
        return run

    def read_config_doc(self) -> dict:
        if not self.config_path.is_file():
            raise UserError(f"{self.path} is not a zsq-probe run (no config.json)")
        try:
            return json.loads(self.config_path.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{self.config_path} is not readable JSON ({e.__class__.__name__})") from None

    # --- checkpoints
    def checkpoint_path(self, epoch: int) -> Path:
        return self.checkpoint_dir / f"epoch-{epoch:04d}.pt"

    def checkpoints(self) -> dict[int, Path]:
        """Epoch -> checkpoint file, for every complete checkpoint on disk."""
        out = {}
        if self.checkpoint_dir.is_dir():
            for p in self.checkpoint_dir.glob("epoch-*.pt"):
                m = re.match(r"epoch-(\d+)\.pt$", p.name)
                if m:
                    out[int(m.group(1))] = p
        return dict(sorted(out.items()))

    def save_checkpoint(self, epoch: int, state: dict, keep_all: bool = True) -> Path:
        path = self.checkpoint_path(epoch)
        atomic_torch_save(state, path)
        if not keep_all:
            for e, p in self.checkpoints().items():
                if e != epoch:
                    p.unlink(missing_ok=True)
        return path

    def load_checkpoint(self, epoch: int | None = None, map_location="cpu") -> tuple[int, dict]:
        cps = self.checkpoints()
        if not cps:
            raise UserError(f"{self.path} has no checkpoints")
        if epoch is None:
            epoch = max(cps)
        if epoch not in cps:
            raise UserError(f"{self.path} has no checkpoint for epoch {epoch} (has {sorted(cps)})")
        return epoch, load_checkpoint_file(cps[epoch], map_location)

    # --- parquet tables
    def write_part(self, table: str, rows, key: str) -> Path | None:
        """Write one part of `table` (rows: list of dicts or a DataFrame); same key replaces that part."""
        df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        if df.empty:
            return None
        df = df.copy()
        df["schema_version"] = TABLE_SCHEMA_VERSION
        tbl = pa.Table.from_pandas(df, preserve_index=False)
        meta = dict(tbl.schema.metadata or {})
        meta[b"zsq_probe.table"] = table.encode()
        meta[b"zsq_probe.schema_version"] = str(TABLE_SCHEMA_VERSION).encode()
        tbl = tbl.replace_schema_metadata(meta)
        sink = pa.BufferOutputStream()
        pq.write_table(tbl, sink)
        path = self.table_dir(table) / f"part-{key}.parquet"
        atomic_write_bytes(path, sink.getvalue().to_pybytes())
        return path

    def part_keys(self, table: str) -> list[str]:
        d = self.table_dir(table)
        if not d.is_dir():
            return []
        return sorted(m.group("key") for p in d.iterdir() if (m := _PART.match(p.name)))

    def remove_parts(self, table: str, keep) -> None:
        """Delete parts whose key fails `keep(key)` (resume drops what a crash left past the checkpoint)."""
        for key in self.part_keys(table):
            if not keep(key):
                (self.table_dir(table) / f"part-{key}.parquet").unlink(missing_ok=True)

    def tables(self) -> list[str]:
        root = self.path / "probes"
        return sorted(p.name for p in root.iterdir() if p.is_dir() and self.part_keys(p.name)) if root.is_dir() else []

    def read_table(self, table: str) -> pd.DataFrame:
        return read_table(self.table_dir(table))


def read_table(folder) -> pd.DataFrame:
    """Every part of a table, in key order; refuses parts of a newer schema than this code reads."""
    folder = Path(folder)
    parts = sorted(p for p in folder.glob("part-*.parquet")) if folder.is_dir() else []
    if not parts:
        raise UserError(f"no parquet parts under {folder}")
    frames = []
    for p in parts:
        df = pd.read_parquet(p)
        v = int(df["schema_version"].iloc[0]) if "schema_version" in df and len(df) else TABLE_SCHEMA_VERSION
        if v > TABLE_SCHEMA_VERSION:
            raise UserError(f"{p} has table schema version {v}; this zsq-probe reads up to {TABLE_SCHEMA_VERSION}")
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def epoch_key(epoch: int, suffix: str = "") -> str:
    return f"e{epoch:05d}{suffix}"


def key_epoch(key: str) -> int | None:
    m = re.match(r"^e(\d+)", key)
    return int(m.group(1)) if m else None


def load_checkpoint_file(path, map_location="cpu") -> dict:
    """Load a checkpoint with weights_only=True: no pickled code from a file someone sent you runs."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist") from None
    except Exception as e:  # pickle.UnpicklingError for callables, RuntimeError for truncated zips
        first = str(e).strip().splitlines()[0] if str(e).strip() else e.__class__.__name__
        raise UserError(f"cannot load checkpoint {path} safely (weights_only): {first[:160]}") from None
