"""A `zsq-probe train` process SIGKILLed at several points (issue 7; the test-only hook ZSQ_PROBE_FAULT, see
zsq_probe.rundir.atomic), resumed each time, must end with every probe table holding each key exactly once, no
epoch missing, and weights equal bit for bit to an uninterrupted run.  The first kill hits a real
`python -m zsq_probe train` subprocess; the others hit processes forked from the test process that run the same
command line (tests/forked_cli.py), without a fresh interpreter's imports."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from cli_checks import cli, one_line_error
from forked_cli import forked_main
from tiny_runs import TINY_PROBED

from zsq_probe.rundir.atomic import FAULT_ENV
from zsq_probe.rundir.store import RunDir, load_checkpoint_file

# what makes a row unique in each table
KEYS = {
    "metrics": ["epoch"],
    "cosine": ["epoch", "step", "statistic", "scope", "group"],
    "crossings": ["epoch", "step", "statistic", "layer"],
    "inter_epoch": ["epoch"],
}


EPOCHS = {"metrics": [1, 2, 3], "cosine": [1, 2, 3], "crossings": [1, 2, 3], "inter_epoch": [2, 3]}


VOLATILE = ["run", "wall_time_s"]  # the folder name and the clock differ between two runs


def train_process(out: Path, *extra: str, fault: str | None = None, fresh_interpreter: bool = False):
    """`zsq-probe train` in a process of its own that `fault` may SIGKILL: forked from this one (forked_cli: no
    ~3 s of imports), or with `fresh_interpreter` a `python -m zsq_probe` subprocess.  Both share the session's
    teacher cache ($ZSQ_PROBE_CACHE) and run one intra-op thread."""
    argv = ["train", *TINY_PROBED, "--out", str(out), *extra]
    if not fresh_interpreter:
        return forked_main(argv, fault=fault, timeout=240)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run(
        [sys.executable, "-m", "zsq_probe", *argv], env=env, capture_output=True, text=True, timeout=240
    )


def temp_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*.tmp"))


def check_tables_readable_and_unique(run: Path) -> None:
    """What a reader sees at any moment: every table reads (ours and pandas' folder reader alike), with each
    key at most once; the hidden temporary files of a killed writer are invisible."""
    rd = RunDir(run)
    for table in rd.tables():
        df = rd.read_table(table)
        assert len(pd.read_parquet(rd.table_dir(table))) == len(df), table
        if table in KEYS:
            dup = df[df.duplicated(KEYS[table], keep=False)]
            assert dup.empty, (table, dup[KEYS[table]])


@pytest.mark.slow
def test_kill_9_at_any_point_then_resume_equals_an_uninterrupted_run(reference, tmp_path, capsys):
    out = tmp_path / "killed"
    # (fault site, files that must exist when it fires, files that must not): one run, killed six times
    chain = [
        ("write:config.json", [], ["config.json"]),  # its very first file: not a run yet
        ("checkpoint:0", ["config.json"], ["checkpoints/epoch-0000.pt"]),  # before the first epoch
        ("step:1:1", ["checkpoints/epoch-0000.pt"], ["probes/metrics/part-e00001.parquet"]),  # inside an epoch
        # during a parquet flush: cosine and inter_epoch of epoch 2 are written, crossings is not
        (
            "part:crossings:e00002",
            ["probes/cosine/part-e00002.parquet", "checkpoints/epoch-0001.pt"],
            ["probes/crossings/part-e00002.parquet", "probes/metrics/part-e00002.parquet"],
        ),
        # during a checkpoint write: every part of epoch 2 is there, the checkpoint is not
        (
            "checkpoint:2",
            ["probes/metrics/part-e00002.parquet", "probes/crossings/part-e00002.parquet"],
            ["checkpoints/epoch-0002.pt"],
        ),
        # the metrics flush of the last epoch: the probes' epoch-3 parts are already written
        (
            "part:metrics:e00003",
            ["probes/cosine/part-e00003.parquet", "checkpoints/epoch-0002.pt"],
            ["probes/metrics/part-e00003.parquet", "summary.json"],
        ),
    ]
    config = None
    for i, (site, present, absent) in enumerate(chain):
        # the first link through the real command line; the rest forked (the same main, the same SIGKILL)
        r = train_process(out, *(["--resume"] if i > 1 else []), fault=site, fresh_interpreter=i == 0)
        assert r.returncode == -signal.SIGKILL, (site, r.returncode, r.stderr[-2000:])
        for name in present:
            assert (out / name).is_file(), (site, name)
        for name in absent:
            assert not (out / name).exists(), (site, name)
        if site.startswith(("checkpoint:", "part:")):  # killed between writing the temporary file and the rename
            assert temp_files(out), site
        if site == "write:config.json":
            # --resume has nothing to resume: one line saying so; the same command without --resume starts it
            rc, _, err = cli(["train", *TINY_PROBED, "--out", out, "--resume"], capsys)
            assert rc == 2
            one_line_error(err, "stopped before it wrote config.json", "without --resume")
            continue
        check_tables_readable_and_unique(out)
        assert RunDir.open(out).checkpoints() or site == "checkpoint:0"
        now = (out / "config.json").read_bytes()
        assert config is None or now == config, "a plain --resume must not rewrite config.json"
        config = now

    r = train_process(out, "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    assert temp_files(out) == [], "resume removes what killed writers left"

    ref, got = RunDir(reference), RunDir(out)
    assert got.tables() == ref.tables() == sorted(KEYS)
    for table, keys in KEYS.items():
        a, b = ref.read_table(table), got.read_table(table)
        assert not b.duplicated(keys).any(), table
        assert sorted(b["epoch"].unique()) == EPOCHS[table], table
        # the rows themselves: same values as the uninterrupted run (the probes are deterministic)
        a = a.drop(columns=VOLATILE, errors="ignore").sort_values(keys).reset_index(drop=True)
        b = b.drop(columns=VOLATILE, errors="ignore").sort_values(keys).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=table)
    assert sorted(got.checkpoints()) == sorted(ref.checkpoints()) == [0, 1, 2, 3]
    for epoch in (2, 3):
        wa = load_checkpoint_file(ref.checkpoints()[epoch])
        wb = load_checkpoint_file(got.checkpoints()[epoch])
        for part in ("student", "generator"):
            assert wa[part].keys() == wb[part].keys()
            for k in wa[part]:
                assert torch.equal(wa[part][k], wb[part][k]), (epoch, part, k)
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (reference, out))
    assert {k: v for k, v in sa.items() if k != "run"} == {k: v for k, v in sb.items() if k != "run"}
