"""Issue 35: `train`, `train --resume` and a post-hoc probe (`cosine --run`) SIGKILLed at their first write and at a
random moment; a plain rerun (resumed where there is a run to resume) ends with every table equal to an
uninterrupted run's: the same rows, the same numbers, bit for bit.

What other tests already cover is not repeated: tests/e2e/test_train_kills.py kills a fresh `train` at its first
write (config.json) and a chain of resumes at fixed sites (a checkpoint, a step, a parquet part);
tests/e2e/test_posthoc_kills.py kills each post-hoc command at its last epoch's part, commit marker or publish.
Here: the first write of a resume and of a post-hoc probe, and random moments of all three. The kills are real
(tests/forked_cli.py): the fault hook ($ZSQ_PROBE_FAULT) or a SIGKILL after a random delay, whose seed each
assertion names."""

from __future__ import annotations

import random
import shutil
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from forked_cli import Forked, forked_main, main_in_process
from tiny_runs import tiny_train

from zsq_probe.rundir.atomic import FAULT_ENV
from zsq_probe.rundir.store import RunDir, load_checkpoint_file

pytestmark = pytest.mark.slow

# 3 tiny epochs with the probes that write a part per epoch (tests/e2e/test_train_kills.py's run)
TINY = tiny_train(
    "ait",
    epochs=3,
    iters=3,
    sets=["hessian_batch_size=16", "probe_every_steps=1"],
    extra=["--probes", "cosine,crossings,inter_epoch", "--no-progress"],
)
FIRST_WRITE = "[cpw]*"  # the first write site (checkpoint:, commit:, part:, publish:, write:), never step:
PARTIAL = "step:2:2"  # where the run a resume starts from was killed: inside epoch 2
VOLATILE = ["run", "wall_time_s"]  # the folder name and the clock differ between two runs


def _train(out: Path, resume: bool) -> list[str]:
    return ["train", *TINY, "--out", str(out), *(["--resume"] if resume else [])]


def _cosine(run: Path) -> list[str]:
    return ["cosine", "--run", str(run), "--no-progress"]


@pytest.fixture(scope="module")
def reference(digits_teacher, tmp_path_factory) -> dict:
    """Uninterrupted: the trained run, the same run with `cosine --run` done, and each command's seconds."""
    folder = tmp_path_factory.mktemp("kill-recovery")
    trained, probed = folder / "trained", folder / "probed"
    started = time.monotonic()
    r = main_in_process(_train(trained, resume=False))
    assert r.returncode == 0, r.stderr
    train_s = time.monotonic() - started
    shutil.copytree(trained, probed)
    started = time.monotonic()
    r = main_in_process(_cosine(probed))
    assert r.returncode == 0, r.stderr
    return {"trained": trained, "probed": probed, "train_s": train_s, "cosine_s": time.monotonic() - started}


@pytest.fixture(scope="module")
def partial(reference, tmp_path_factory) -> Path:
    """A run killed inside its second epoch: what the resumes start from (each test resumes a copy)."""
    out = tmp_path_factory.mktemp("partial") / "run"
    r = forked_main(_train(out, resume=False), fault=PARTIAL)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    return out


def _table(run: RunDir, table: str) -> pd.DataFrame:
    """The rows of `table` without the volatile columns, in a fixed order."""
    df = run.read_table(table).drop(columns=VOLATILE, errors="ignore")
    keys = [c for c in df.columns if df[c].map(lambda v: isinstance(v, (str, int, float, bool))).all()]
    return df.sort_values(keys).reset_index(drop=True)


def _assert_like(got: Path, want: Path, why: str) -> None:
    """Every table of `got` has `want`'s rows with equal numbers; the same checkpoints, with equal weights; no
    temporary file of a killed writer left."""
    a, b = RunDir(want), RunDir(got)
    assert b.tables() == a.tables(), why
    for table in a.tables():
        pd.testing.assert_frame_equal(_table(b, table), _table(a, table), check_exact=True, obj=f"{table} ({why})")
    assert sorted(b.checkpoints()) == sorted(a.checkpoints()), why
    for epoch, path in a.checkpoints().items():
        wa, wb = load_checkpoint_file(path), load_checkpoint_file(b.checkpoints()[epoch])
        for part in ("student", "generator"):
            assert wa[part].keys() == wb[part].keys(), why
            assert all(torch.equal(wa[part][k], wb[part][k]) for k in wa[part]), (why, epoch, part)
    assert not [p.name for p in got.rglob("*") if p.name.endswith(".tmp") or p.name.startswith("_staged-")], why


def _kill_after(argv: list[str], seconds: float) -> int:
    """`zsq-probe argv` in a forked process, SIGKILLed after `seconds` (unless it ended first): its exit status."""
    from zsq_probe.cli import main

    child = Forked(lambda: main(argv), env={FAULT_ENV: None}, args=argv)
    time.sleep(seconds)
    child.kill()
    return child.result().returncode


def _rerun_train(out: Path, why: str) -> None:
    """The plain rerun: --resume when the killed run got as far as its config.json, else the same fresh command."""
    r = forked_main(_train(out, resume=(out / "config.json").is_file()))
    assert r.returncode == 0, (why, r.stderr[-2000:])


def _random_delay(upper: float, what: str) -> tuple[float, str]:
    seed = time.time_ns() % 2**32
    delay = random.Random(seed).uniform(0.0, upper)
    return delay, f"{what} killed after {delay:.3f} s (seed {seed})"


@pytest.mark.parametrize("draw", [0, 1])
def test_train_killed_at_a_random_moment_then_rerun_equals_an_uninterrupted_run(reference, tmp_path, draw):
    out = tmp_path / "run"
    delay, why = _random_delay(reference["train_s"], "train")
    _kill_after(_train(out, resume=False), delay)
    _rerun_train(out, why)
    _assert_like(out, reference["trained"], why)


def test_resume_killed_at_its_first_write_then_resumed_equals_an_uninterrupted_run(reference, partial, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(partial, out)
    r = forked_main(_train(out, resume=True), fault=FIRST_WRITE)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    _rerun_train(out, "resume killed at its first write")
    _assert_like(out, reference["trained"], "resume killed at its first write")


@pytest.mark.parametrize("draw", [0, 1])
def test_resume_killed_at_a_random_moment_then_resumed_equals_an_uninterrupted_run(reference, partial, tmp_path, draw):
    out = tmp_path / "run"
    shutil.copytree(partial, out)
    delay, why = _random_delay(reference["train_s"], "train --resume")
    _kill_after(_train(out, resume=True), delay)
    _rerun_train(out, why)
    _assert_like(out, reference["trained"], why)


def test_cosine_killed_at_its_first_write_then_rerun_equals_an_uninterrupted_run(reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference["trained"], run)
    r = forked_main(_cosine(run), fault=FIRST_WRITE)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    rerun = forked_main(_cosine(run))
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    _assert_like(run, reference["probed"], "cosine killed at its first write")


@pytest.mark.parametrize("draw", [0, 1])
def test_cosine_killed_at_a_random_moment_then_rerun_equals_an_uninterrupted_run(reference, tmp_path, draw):
    run = tmp_path / "run"
    shutil.copytree(reference["trained"], run)
    delay, why = _random_delay(reference["cosine_s"], "cosine --run")
    _kill_after(_cosine(run), delay)
    rerun = forked_main(_cosine(run))
    assert rerun.returncode == 0, (why, rerun.stderr[-2000:])
    _assert_like(run, reference["probed"], why)
