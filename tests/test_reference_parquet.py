"""Same seed, same parquet: today's code reproduces, bit for bit, the tables the pre-refactor code wrote
(tests/reference/README.md)."""

import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from zsq_probe.presets import resolve_config
from zsq_probe.rundir.store import RunDir
from zsq_probe.training import train

REFERENCE = Path(__file__).parent / "reference" / "prerefactor"
SMALL = {
    "epochs": 2,
    "iters_per_epoch": 3,
    "batch_size": 16,
    "warmup_epochs": 0,
    "act_range_epochs": 1,
    "val_max_batches": 1,
    "val_batch_size": 64,
    "hessian_batch_size": 48,
    "hessian_every_epochs": 1,
    "probe_every_steps": 1,
    "hessian_vectors": 4,
    "slq_runs": 2,
    "trace_max_products": 24,
    "slq_steps": 6,
    "hessian_top_k": 2,
    "slice_points": 5,
    "probes": ["cosine", "inter_epoch", "crossings", "hessian", "slice"],
    "slice_directions": ["eigenvector", "random"],
    "slice_scalings": ["gradient", "unit"],
    "probe_scopes": ["model", "block"],
}


THREADS = 1  # float reductions depend on the intra-op thread count: the reference is made with one thread


@pytest.fixture
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(old)


def canonical(df: pd.DataFrame) -> pd.DataFrame:
    df = df.drop(columns=["run", "wall_time_s"], errors="ignore")
    df = df[sorted(df.columns)]
    return df.sort_values(list(df.columns), ignore_index=True, na_position="first")


@pytest.mark.parametrize("preset", ["gdfq", "ait", "kd"])
def test_same_seed_gives_the_reference_parquet(preset, tmp_path, digits_teacher, one_thread):
    cfg = resolve_config(preset, teacher="digits", flags=dict(SMALL))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the small probe batch warns
        train(cfg, tmp_path / preset, progress=False)
    run = RunDir(tmp_path / preset)
    expected = sorted(p.stem for p in (REFERENCE / preset).glob("*.parquet"))
    assert sorted(run.tables()) == expected
    for table in expected:
        got = canonical(run.read_table(table))
        want = canonical(pd.read_parquet(REFERENCE / preset / f"{table}.parquet"))
        pd.testing.assert_frame_equal(got, want, check_exact=True, check_dtype=True, obj=f"{preset}/{table}")
