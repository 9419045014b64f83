"""Generate the pre-refactor parquet reference (run once with the code at commit 18d4de7)."""
import os, sys, tempfile, shutil, warnings
from pathlib import Path
import pandas as pd
os.environ["ZSQ_PROBE_CACHE"] = tempfile.mkdtemp()
from zsq_probe.config import resolve_config
from zsq_probe.probes import build_probes
from zsq_probe.store import RunDir
from zsq_probe.train import train

OUT = Path(sys.argv[1])
SMALL = dict(epochs=2, iters_per_epoch=3, batch_size=16, warmup_epochs=0, act_range_epochs=1, val_max_batches=1,
             val_batch_size=64, hessian_batch_size=48, hessian_every_epochs=1, probe_every_steps=1,
             hessian_vectors=4, slq_runs=1, slq_steps=6, hessian_top_k=2, slice_points=5,
             probes=["cosine", "inter_epoch", "crossings", "hessian", "slice"],
             slice_directions=["eigenvector", "random"], slice_scalings=["gradient", "unit"],
             probe_scopes=["model", "block"])
tmp = Path(tempfile.mkdtemp())
for preset in ["gdfq", "ait", "kd"]:
    cfg = resolve_config(preset, teacher="digits", flags=dict(SMALL))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(cfg, tmp / preset, observers=build_probes(cfg), progress=False, log=lambda *a: None)
    rd = RunDir(tmp / preset)
    (OUT / preset).mkdir(parents=True, exist_ok=True)
    for table in rd.tables():
        df = rd.read_table(table).drop(columns=["run", "wall_time_s"], errors="ignore")
        df.to_parquet(OUT / preset / f"{table}.parquet", index=False)
        print(preset, table, df.shape)
