"""Post-hoc commits are all or nothing under kill -9 (issue 13): each post-hoc command SIGKILLed at a staged part, its
commit marker or a rename, then rerun, ends equal to an uninterrupted run; a second writer is refused naming the
holder's PID, and a killed holder blocks nothing."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from forked_cli import Finished, forked_main, main_in_process
from tiny_runs import tiny_train

from zsq_probe.rundir.store import RunDir

# ------------------------------------------------------------------ post-hoc probes under kill -9

TINY = tiny_train(
    "ait",
    epochs=1,
    sets=[
        "hessian_batch_size=16",
        "hessian_top_k=2",
        "slq_runs=1",
        "slq_steps=4",
        "hessian_vectors=2",
        "trace_max_products=18",  # the least Hutch++ takes with top_k 2
        "slice_points=5",
    ],
    extra=["--no-progress"],
)


def zsq(*args, fault: str | None = None) -> Finished:
    """`zsq-probe <args>` in a forked process (the fault hook kills it with SIGKILL); fresh interpreters would add
    ~3 s of imports each and test nothing more here."""
    return forked_main(args, fault=fault, timeout=180)


def in_process(*args) -> None:
    """`zsq-probe <args>` in this process: what needs no process of its own (the runs the killed ones start from
    or are compared with)."""
    r = main_in_process(args)
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="module")
def two_epoch_run(digits_teacher, tmp_path_factory) -> Path:
    """Two epochs with a checkpoint each: every post-hoc command has two epochs to commit.  The one trained run
    of this module: each test copies it before it changes it."""
    out = tmp_path_factory.mktemp("crash2") / "run"
    in_process("train", *TINY, "--epochs", "2", "--out", out)  # the later --epochs wins
    return out


HESSIAN_TABLES = ("hessian_trace", "hessian_eigenvalues", "hessian_density")


def _posthoc_rows(run: Path) -> dict:
    """table -> {epoch: rows}, read with pandas' folder reader (staged parts and markers must be invisible)."""
    rd = RunDir(run)
    out = {}
    for t in HESSIAN_TABLES:
        if rd.table_dir(t).is_dir() and rd.part_keys(t):
            df = pd.read_parquet(rd.table_dir(t))
            assert len(df) == len(rd.read_table(t))
            cols = [
                c
                for c in df.columns
                if c not in ("run", "wall_time_s", "value", "lo", "hi", "ci_low", "ci_high")
                and df[c].map(lambda v: isinstance(v, (str, int, float, np.integer, np.floating))).all()
            ]
            assert not df.duplicated(cols).any(), t
            out[t] = df[df.origin == "posthoc"].groupby("epoch").size().to_dict()
    return out


@pytest.mark.slow
def test_kill_9_during_posthoc_hessian_then_rerun_loses_and_doubles_nothing(two_epoch_run, tmp_path):
    run = tmp_path / "killed"
    shutil.copytree(two_epoch_run, run)
    key = "e00001-posthoc"
    # killed between two tables' staged writes: nothing of the epoch is visible, not even hessian_trace
    r = zsq("hessian", "--run", run, "--epochs", "1", fault=f"part:hessian_eigenvalues:{key}")
    assert r.returncode == -signal.SIGKILL, r.stderr[-500:]
    assert _posthoc_rows(run) == {}
    assert list(run.rglob(f"_staged-{key}.parquet")) and list(run.rglob(".*.tmp"))
    # the rerun cleans up, recomputes, and is killed after the commit marker, between the renames
    r = zsq("hessian", "--run", run, "--epochs", "1", fault=f"publish:hessian_density:{key}")
    assert r.returncode == -signal.SIGKILL, r.stderr[-500:]
    assert not list(run.rglob(".*.tmp")) and not list(run.rglob("_staged-*eigenvalues*"))
    partial = _posthoc_rows(run)
    assert set(partial) == {"hessian_trace", "hessian_eigenvalues"}, partial
    # the next rerun rolls the committed epoch forward (no recomputation) and says it is done
    r = zsq("hessian", "--run", run, "--epochs", "1")
    assert r.returncode == 0, r.stderr
    final = _posthoc_rows(run)
    assert set(final) == set(HESSIAN_TABLES) and all(set(c) == {1} for c in final.values()), final
    assert {t: final[t] for t in partial} == partial  # nothing doubled by the roll-forward
    assert not [p.name for p in run.rglob("*") if p.name.startswith("_staged-") or p.name.endswith(".tmp")]
    assert (run / "probes" / "_commits" / f"hessian.{key}.json").is_file()


# ------------------------------------------------------------------ one writer per run folder

HOLD = (
    "import sys, time; from zsq_probe.rundir.lock import RunLock; l = RunLock(sys.argv[1], what='test').acquire(); "
    "print('locked', flush=True); time.sleep(120)"
)


@pytest.mark.slow
def test_second_writer_is_refused_naming_the_pid_and_a_killed_holder_blocks_nothing(two_epoch_run, tmp_path):
    import socket

    run = tmp_path / "run"
    shutil.copytree(two_epoch_run, run)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        for args in (["train", "--resume", *TINY, "--epochs", "2", "--out", run], ["cosine", "--run", run]):
            r = zsq(*args)
            lines = [x for x in r.stderr.splitlines() if x.strip()]
            assert r.returncode == 2 and len(lines) == 1, r.stderr
            assert f"PID {holder.pid}" in lines[0] and socket.gethostname() in lines[0], lines[0]
        assert (run / ".zsq-probe.lock").is_file()
        assert not (run / "probes" / "cosine").exists()  # the refused writer wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()
    from zsq_probe.rundir.lock import RunLock

    with RunLock(run, what="after kill"):  # the kernel dropped the dead holder's flock
        pass
    with RunLock(run, rank=1), RunLock(run, rank=0):  # under torchrun only rank 0 locks
        pass


# ------------------------------------------------------------------ cosine, slice, crossings under kill -9


def _table(run: Path, table: str) -> pd.DataFrame:
    """The committed rows of `table`, without wall-clock columns, in a fixed order (for equality)."""
    rd = RunDir(run)
    if not rd.part_keys(table):
        return pd.DataFrame()
    df = pd.read_parquet(rd.table_dir(table))
    df = df.drop(columns=[c for c in df.columns if c in ("wall_time_s", "run")])
    keys = [
        c for c in df.columns if df[c].map(lambda v: isinstance(v, (str, int, float, np.integer, np.floating))).all()
    ]
    return df.sort_values(keys).reset_index(drop=True)


@pytest.fixture(scope="module")
def uninterrupted(two_epoch_run, tmp_path_factory) -> dict[str, tuple[pd.DataFrame, list[str]]]:
    """command -> (its table, its part keys) from one uninterrupted run of each post-hoc command on a copy of
    two_epoch_run (a copy each): the reference every killed-and-rerun copy must end equal to."""
    folder = tmp_path_factory.mktemp("uninterrupted")
    tables = {}
    for command in ("cosine", "slice", "crossings"):  # each command writes the table of its name
        ref = folder / command
        shutil.copytree(two_epoch_run, ref)
        in_process(command, "--run", ref)
        tables[command] = (_table(ref, command), RunDir(ref).part_keys(command))
    return tables


# one kill site per command (hessian above covers part and publish): the last epoch's staged part, its
# commit marker, and the rename after the marker
@pytest.mark.slow
@pytest.mark.parametrize(
    "command,table,site",
    [("cosine", "cosine", "part"), ("slice", "slice", "commit"), ("crossings", "crossings", "publish")],
)
def test_kill_9_during_each_posthoc_command_then_rerun_matches_an_uninterrupted_run(
    two_epoch_run, uninterrupted, tmp_path, command, table, site
):
    run = tmp_path / "killed"
    shutil.copytree(two_epoch_run, run)
    want, keys = uninterrupted[command]
    assert len(keys) >= 2 and not want.empty, keys  # two epochs committed, the kill hits the last
    last = keys[-1]
    where = f"{site}:{command if site == 'commit' else table}:{last}"
    r = zsq(command, "--run", run, fault=where)
    assert r.returncode == -signal.SIGKILL, (where, r.stderr[-500:])
    # the earlier epochs are committed and whole, the killed one invisible (or committed but not yet renamed)
    seen = RunDir(run).part_keys(table)
    assert seen == keys[:-1], seen
    r = zsq(command, "--run", run)
    assert r.returncode == 0, r.stderr
    assert RunDir(run).part_keys(table) == keys
    pd.testing.assert_frame_equal(_table(run, table), want)  # nothing lost, nothing doubled, same values
    assert not [p.name for p in run.rglob("*") if p.name.startswith("_staged-") or p.name.endswith(".tmp")]


@pytest.mark.slow
def test_kill_9_after_crossings_commits_a_rowless_first_epoch_then_a_plain_rerun_finishes(
    two_epoch_run, uninterrupted, tmp_path
):
    """Issue 24 item 1: crossings has no rows for the first checkpoint, so that epoch commits `tables: []`; a kill
    before the next epoch's marker must not leave a run whose every rerun reads a table that has no parts."""
    import json

    run = tmp_path / "killed"
    shutil.copytree(two_epoch_run, run)
    want, _ = uninterrupted["crossings"]
    assert not want.empty
    r = zsq("crossings", "--run", run, fault="part:crossings:*")  # the first staged part: after epoch 0's marker
    assert r.returncode == -signal.SIGKILL, r.stderr[-500:]
    markers = [json.loads(p.read_text()) for p in (run / "probes" / "_commits").glob("crossings.*.json")]
    assert [m["tables"] for m in markers] == [[]], markers  # one epoch committed, with no rows
    assert not RunDir(run).part_keys("crossings")
    r = zsq("crossings", "--run", run)
    assert r.returncode == 0, r.stderr
    pd.testing.assert_frame_equal(_table(run, "crossings"), want)
    assert not [p.name for p in run.rglob("*") if p.name.startswith("_staged-") or p.name.endswith(".tmp")]
