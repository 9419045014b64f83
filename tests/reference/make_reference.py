"""Regenerate the reference parquet (tests/reference/README.md): `python tests/reference/make_reference.py`."""

import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("ZSQ_PROBE_CACHE", tempfile.mkdtemp())
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
import torch
from test_reference_parquet import MACHINE_FILE, REFERENCE, SMALL, THREADS, machine

from zsq_probe.presets import resolve_config
from zsq_probe.rundir.store import RunDir
from zsq_probe.runs import train

torch.set_num_threads(THREADS)
tmp = Path(tempfile.mkdtemp())
for preset in ["gdfq", "ait", "kd"]:
    cfg = resolve_config(preset, teacher="digits", flags=dict(SMALL))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(cfg, tmp / preset, progress=False)
    rd = RunDir(tmp / preset)
    (REFERENCE / preset).mkdir(parents=True, exist_ok=True)
    for old in (REFERENCE / preset).glob("*.parquet"):
        old.unlink()
    for table in rd.tables():
        rd.read_table(table).drop(columns=["run", "wall_time_s"], errors="ignore").to_parquet(
            REFERENCE / preset / f"{table}.parquet", index=False
        )
        print(preset, table)
MACHINE_FILE.write_text(json.dumps(machine(), indent=1) + "\n")
print(MACHINE_FILE.read_text())
