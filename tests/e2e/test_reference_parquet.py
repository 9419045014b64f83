"""Same seed, same parquet: today's code reproduces, bit for bit, the tables the pre-refactor code wrote
(tests/reference/README.md); and the same runs, trained again with every probe off, end with the same weights
(probes observe, they do not change training)."""

import contextlib
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from zsq_probe.presets import resolve_config
from zsq_probe.rundir.store import RunDir, load_checkpoint_file
from zsq_probe.runs import train

# Three end-to-end runs with every probe (~15 s each on one core): the slow tier, which CI's full suite runs; after a
# refactor, run this file (docs/development.md, "Tests") before the quick tier is trusted
pytestmark = pytest.mark.slow

REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "prerefactor"
MACHINE_FILE = REFERENCE / "machine.json"  # the arithmetic the reference was written with (make_reference.py)


def machine() -> dict:
    """What decides float results bit for bit besides the code and the thread count: torch's build and the CPU
    kernels it dispatches to (an AVX2 host and an AVX-512 host round differently; so did two CPU models)."""
    import platform

    model = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), platform.processor()
    )
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu": model}


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


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


@contextlib.contextmanager
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def small_run(preset, out, **flags):
    """`SMALL` (with `flags` changed) trained into `out` with the reference's thread count; its RunDir."""
    cfg = resolve_config(preset, teacher="digits", flags=dict(SMALL, **flags))
    with one_thread(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the small probe batch warns
        train(cfg, out, progress=False)
    return RunDir(out)


@pytest.fixture(scope="module", params=["gdfq", "ait", "kd"])
def probed(request, tmp_path_factory, digits_teacher):
    """(preset, the RunDir of its SMALL run with every probe on), trained once for the tests below."""
    preset = request.param
    return preset, small_run(preset, tmp_path_factory.mktemp("reference") / preset)


def canonical(df: pd.DataFrame) -> pd.DataFrame:
    df = df.drop(columns=["run", "wall_time_s"], errors="ignore")
    df = df[sorted(df.columns)]
    return df.sort_values(list(df.columns), ignore_index=True, na_position="first")


def test_same_seed_gives_the_reference_parquet(probed):
    """Bit for bit on the arithmetic the reference was written with (MACHINE_FILE); on another CPU or torch build
    the same tables, columns, dtypes, rows and row keys (the values follow other roundings: said in a warning)."""
    import json

    preset, run = probed
    expected = sorted(p.stem for p in (REFERENCE / preset).glob("*.parquet"))
    assert sorted(run.tables()) == expected
    recorded = json.loads(MACHINE_FILE.read_text())
    same_machine = recorded == machine()
    if not same_machine:
        warnings.warn(f"reference written on {recorded}, this is {machine()}: values not compared", stacklevel=1)
    for table in expected:
        got = canonical(run.read_table(table))
        want = canonical(pd.read_parquet(REFERENCE / preset / f"{table}.parquet"))
        if same_machine:
            pd.testing.assert_frame_equal(got, want, check_exact=True, check_dtype=True, obj=f"{preset}/{table}")
            continue
        assert list(got.columns) == list(want.columns) and (got.dtypes == want.dtypes).all(), f"{preset}/{table}"
        keys = [c for c in ("epoch", "step", "statistic", "scope", "group", "loss", "estimator") if c in got.columns]
        pd.testing.assert_frame_equal(
            got[keys].sort_values(keys, ignore_index=True),
            want[keys].sort_values(keys, ignore_index=True),
            obj=f"{preset}/{table} keys",
        )


def final_weights(run: RunDir) -> dict:
    return load_checkpoint_file(run.checkpoints()[max(run.checkpoints())])["student"]


def test_probes_on_or_off_give_the_same_weights(probed, tmp_path):
    """Every probe on (measuring at each epoch, the curvature probes too) or off: the same student at the end."""
    preset, on = probed
    off = small_run(preset, tmp_path / "off", probes=[])
    assert not off.tables() or set(off.tables()) == {"metrics"}
    a, b = final_weights(off), final_weights(on)
    assert a.keys() == b.keys()
    for k in a:
        # per-term gradients summed vs one backward: equal to float round-off, not bit for bit
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6, msg=k)
    np.testing.assert_allclose(off.read_table("metrics")["val_top1"], on.read_table("metrics")["val_top1"], atol=1e-2)
