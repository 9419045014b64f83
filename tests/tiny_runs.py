"""The tiny digits runs that the end-to-end tests train: a few steps of batch 16, no warm-up epoch, one validation
batch (seconds on one core)."""

from __future__ import annotations

from collections.abc import Sequence


def tiny_train(
    preset: str, *, epochs: int | None = None, iters: int = 2, sets: Sequence[str] = (), extra: Sequence[str] = ()
) -> list[str]:
    """`zsq-probe train` flags of a tiny run: `--preset`, `--epochs` (left out when None), `--iters-per-epoch`,
    batch 16, no warm-up, one validation batch, then `--set S` for each of `sets` and the `extra` flags."""
    flags = ["--preset", preset]
    if epochs is not None:
        flags += ["--epochs", str(epochs)]
    flags += ["--iters-per-epoch", str(iters), "--batch-size", "16"]
    for setting in ("warmup_epochs=0", "val_max_batches=1", *sets):
        flags += ["--set", setting]
    return [*flags, *extra]


# `--teacher digits` and the tiny AIT flags, without --epochs (each test its own): the run of tests/conftest.py's
# three_epoch_run and the commands the tests run on it
TINY_AIT = ["--teacher", "digits", *tiny_train("ait", extra=["--no-progress"])]


# a run of 3 tiny epochs with the probes that write a part per epoch (about 2 s of work on one core, after the imports):
# the run of tests/conftest.py's `reference`, which the reliability tests interrupt, damage or resume
TINY_PROBED = tiny_train(
    "ait",
    epochs=3,
    iters=3,
    sets=["hessian_batch_size=16", "probe_every_steps=1"],  # the probes' batch: the comparisons hold at any size
    extra=["--probes", "cosine,crossings,inter_epoch", "--no-progress"],
)


# ------------------------------------------------------------------ tiny Tab. 2 jobs (executors' and signals' tests)
# FAST: the settings of every tiny job; ONLY: the Tab. 2 runs the tests train (a few of them each)
FAST = [
    "iters_per_epoch=2",
    "batch_size=16",
    "warmup_epochs=0",
    "act_range_epochs=1",
    "val_max_batches=1",
    "probes=cosine",
    "probe_every_steps=1",
    "hessian_batch_size=16",  # the probes' batch (200 by default): what the tests compare holds at any size
]
ONLY = ["resnet20_cifar10-4w4a-gdfq", "resnet20_cifar10-4w4a-ait", "resnet20_cifar10-4w4a-kl-only"]


def tiny_jobs(out, epochs=2, only=ONLY):
    """The Tab. 2 recipe's jobs at the tiny scale (FAST settings), seed 0, the runs `only` names."""
    from zsq_probe.recipes import load_recipe, plan

    return plan(load_recipe("tab2"), "tiny", out, seeds=[0], only=list(only), sets=FAST + [f"epochs={epochs}"])


def canonical(df):
    """A table without its run and clock columns, rows and columns in a fixed order (for equality)."""
    df = df.drop(columns=["run", "wall_time_s"], errors="ignore")
    return df.sort_values(sorted(df.columns), ignore_index=True)[sorted(df.columns)]


def reference_run(job, folder):
    """The same job trained once, uninterrupted, in this process, with the workers' one thread (float
    reductions, hence the cosine angles, depend on the thread count)."""
    import torch

    from zsq_probe.rundir.store import RunDir
    from zsq_probe.runs import train

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(job.config(), folder, progress=False)
    finally:
        torch.set_num_threads(old)
    return RunDir(folder)


def assert_same_tables(run_a, run_b):
    """Two RunDirs hold the same tables, row for row (the metrics too)."""
    import pandas as pd

    assert run_a.tables() == run_b.tables()
    for t in run_a.tables():
        pd.testing.assert_frame_equal(
            canonical(run_a.read_table(t)), canonical(run_b.read_table(t)), check_exact=True, obj=t
        )
    pd.testing.assert_frame_equal(canonical(run_a.read_table("metrics")), canonical(run_b.read_table("metrics")))
