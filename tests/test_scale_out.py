"""Past one machine (issue 15): executors for recipes (local workers, Ray, SLURM through submitit), the trainer's
graceful stop on SIGTERM/SIGUSR1, the Hessian split across processes (torchrun, gloo), real-data loader workers,
TensorBoard curves.  Everything on CPU with tiny digits runs; the Ray, submitit and TensorBoard tests need the
extras the `test` extra installs."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from forked_cli import Forked, wait_all
from tiny_runs import tiny_train

from zsq_probe.errors import UserError
from zsq_probe.recipes import load_recipe, plan
from zsq_probe.rundir.store import RunDir

ROOT = Path(__file__).resolve().parent.parent
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
    return plan(load_recipe("tab2"), "tiny", out, seeds=[0], only=list(only), sets=FAST + [f"epochs={epochs}"])


def canonical(df):
    df = df.drop(columns=["run", "wall_time_s"], errors="ignore")
    return df.sort_values(sorted(df.columns), ignore_index=True)[sorted(df.columns)]


def reference_run(job, folder):
    """The same job trained once, uninterrupted, in this process, with the workers' one thread (float
    reductions, hence the cosine angles, depend on the thread count)."""
    import torch

    from zsq_probe.runs import train

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(job.config(), folder, progress=False)
    finally:
        torch.set_num_threads(old)
    return RunDir(folder)


def assert_same_tables(run_a: RunDir, run_b: RunDir):
    assert run_a.tables() == run_b.tables()
    for t in run_a.tables():
        pd.testing.assert_frame_equal(
            canonical(run_a.read_table(t)), canonical(run_b.read_table(t)), check_exact=True, obj=t
        )
    pd.testing.assert_frame_equal(canonical(run_a.read_table("metrics")), canonical(run_b.read_table("metrics")))


# ------------------------------------------------------------------------------- the trainer on signals
@pytest.fixture
def one_thread():
    """Both runs of a bit-identity comparison with one intra-op thread, whatever earlier tests (Ray) left set."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_sigusr1_stops_after_the_epoch_checkpoint_and_the_resume_is_bit_identical(tmp_path, digits_teacher, one_thread):
    from zsq_probe.events import Observer
    from zsq_probe.runs import train
    from zsq_probe.training import TrainingInterrupted

    job = tiny_jobs(tmp_path / "a", epochs=3, only=ONLY[:1])[0]

    class Preempt(Observer):  # the signal arrives in the middle of epoch 2
        def on_step(self, ctx, event):
            if event.epoch == 2 and event.step == 0:
                os.kill(os.getpid(), signal.SIGUSR1)

    before = signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGTERM)
    from zsq_probe.probes import build_probes

    cfg = job.config()
    with pytest.raises(TrainingInterrupted) as info:
        train(cfg, job.path, observers=build_probes(cfg) + [Preempt()], progress=False)
    assert info.value.epoch == 2 and info.value.signame == "SIGUSR1"
    assert (signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGTERM)) == before  # handlers put back
    run = RunDir(job.path)
    assert sorted(run.checkpoints()) == [0, 1, 2]  # epoch 2 finished and checkpointed, never cut mid-epoch
    assert list(run.read_table("metrics")["epoch"]) == [1, 2]
    assert job.status() == "partial"

    train(cfg, job.path, resume=True, progress=False)
    assert_same_tables(run, reference_run(job, tmp_path / "ref"))


def test_signal_handlers_are_only_installed_in_the_main_thread():
    from zsq_probe.training.loop import stop_on_signals

    seen = {}

    def body():
        with stop_on_signals() as state:
            seen["handler"] = signal.getsignal(signal.SIGUSR1)
            seen["state"] = state

    before = signal.getsignal(signal.SIGUSR1)
    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen["handler"] == before and seen["state"]["signal"] is None


# ------------------------------------------------------------------------------- local executor
@pytest.mark.slow
def test_local_executor_two_workers_isolates_a_failure_and_reports_every_job(tmp_path, digits_teacher, capsys):
    from zsq_probe.cli.recipe import main

    out = tmp_path / "tab2"
    jobs = tiny_jobs(out, epochs=1)
    bad = jobs[2]
    bad.path.mkdir(parents=True)
    (bad.path / "stray.txt").write_text("not a run")  # this job fails: its folder is not empty
    argv = [
        "tab2",
        "--scale",
        "tiny",
        "--seeds",
        "1",
        "--out",
        str(out),
        "--only",
        ",".join(ONLY),
        "--quiet",
        "--workers",
        "2",
        "--threads",
        "1",
    ]
    for s in FAST + ["epochs=1"]:
        argv += ["--set", s]
    assert main(argv) == 1
    text = capsys.readouterr()
    assert all(j.status() == "done" for j in jobs[:2]) and bad.status() == "new"
    report = text.out[text.out.index("state") :]
    assert "2 done, 1 failed" in report and "not empty" in report
    workers = {json.loads((out / "logs" / f"{j.name}.job.json").read_text())["where"] for j in jobs}
    assert workers == {"cpu (worker 0)", "cpu (worker 1)"}
    assert "1 run(s) failed" in text.err

    (bad.path / "stray.txt").unlink()  # fixed: a second call (one worker, in process) trains only that job
    assert main(argv[: argv.index("--workers")] + argv[argv.index("--threads") + 2 :]) == 0
    report = capsys.readouterr().out
    assert "1 done, 2 skipped" in report
    assert bad.status() == "done"


# ------------------------------------------------------------------------------- ray
@pytest.mark.slow
def test_ray_local_cluster_retries_a_killed_worker_and_the_job_resumes(tmp_path, digits_teacher, monkeypatch):
    pytest.importorskip("ray")
    from zsq_probe.executors import FAULT_ONCE_ENV, run_jobs

    jobs = tiny_jobs(tmp_path / "tab2", epochs=2, only=ONLY[:2])
    # one worker process dies (SIGKILL) in the middle of epoch 2 of the first job that gets there
    monkeypatch.setenv(FAULT_ONCE_ENV, f"{tmp_path / 'killed-once'}=step:2:1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    outs = run_jobs(jobs, "ray", num_cpus=2, cpus_per_job=1, max_retries=2)
    assert (tmp_path / "killed-once").exists()
    assert [o["state"] for o in outs] == ["done", "done"]
    assert sum(o["resumed"] for o in outs) == 1  # the killed job ran again and resumed from its checkpoint
    killed = next(j for j, o in zip(jobs, outs) if o["resumed"])
    run = RunDir(killed.path)
    assert list(run.read_table("metrics")["epoch"]) == [1, 2]
    assert_same_tables(run, reference_run(killed, tmp_path / "ref"))  # no row lost or doubled


# ------------------------------------------------------------------------------- slurm through submitit
def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the job's process through /proc")
def test_submitit_local_executor_preempted_by_sigusr1_requeues_and_resumes(tmp_path, digits_teacher, monkeypatch):
    submitit = pytest.importorskip("submitit")
    from zsq_probe.executors.slurm_executor import run_slurm

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    job = tiny_jobs(tmp_path / "tab2", epochs=4, only=ONLY[:1])[0]
    folder = tmp_path / "slurm"
    result = {}
    thread = threading.Thread(
        target=lambda: result.update(outs=run_slurm([job], folder=folder, cluster="local", time=10, threads=1))
    )
    thread.start()
    run = RunDir(job.path)
    deadline = time.time() + 120
    while time.time() < deadline and 1 not in run.checkpoints():
        time.sleep(0.05)
    assert 1 in run.checkpoints(), "the job did not start"
    controllers = list(_children(os.getpid()))
    tasks = [c for p in controllers for c in _children(p)]
    assert tasks, "no submitit task process found"
    for pid in tasks:
        os.kill(pid, signal.SIGUSR1)  # preemption: stop after this epoch's checkpoint, then requeue
    thread.join(timeout=240)
    assert not thread.is_alive()
    (out,) = result["outs"]
    assert out["state"] == "done" and out["resumed"], out
    logs = "".join(p.read_text() for p in folder.glob("*.err")) + "".join(p.read_text() for p in folder.glob("*.out"))
    assert "Requeued job" in logs or "requeue" in logs.lower()
    assert list(run.read_table("metrics")["epoch"]) == [1, 2, 3, 4]
    assert_same_tables(run, reference_run(job, tmp_path / "ref"))
    del submitit


def test_slurm_settings_from_a_file_and_flags(tmp_path):
    from zsq_probe.executors.slurm_executor import executor_parameters, read_config

    cfg = tmp_path / "cluster.json"
    cfg.write_text(json.dumps({"partition": "gpu", "time": 240, "gpus_per_job": 1, "account": "proj"}))
    merged = {**read_config(cfg), "time": 30}
    params = executor_parameters(merged, "zsq-tab2")
    assert params["slurm_partition"] == "gpu" and params["timeout_min"] == 30 and params["gpus_per_node"] == 1
    assert params["slurm_account"] == "proj" and params["name"] == "zsq-tab2"
    cfg.write_text(json.dumps({"partitoin": "gpu"}))
    with pytest.raises(UserError, match="unknown setting"):
        read_config(cfg)


def test_a_missing_extra_is_one_line_naming_it(monkeypatch, tmp_path):
    from zsq_probe.executors import run_jobs

    jobs = tiny_jobs(tmp_path, epochs=1, only=ONLY[:1])
    for module, executor, extra in (("ray", "ray", "ray"), ("submitit", "slurm", "slurm")):
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
        with pytest.raises(UserError, match=rf"pip install 'zsq-probe\[{extra}\]'"):
            run_jobs(jobs, executor)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    from zsq_probe.training.tensorboard import TensorBoardObserver

    with pytest.raises(UserError, match=r"zsq-probe\[tensorboard\]"):
        TensorBoardObserver()


# ------------------------------------------------------------------------------- distributed Hessian
# the smallest Hessian probe the checks need (Hutch++ needs top_k + 16 products): the torchrun comparison and the
# TensorBoard tags hold at any size, and a product's cost grows with the batch
SMALL_HESSIAN = ["hessian_batch_size=16", "trace_max_products=18", "slq_runs=2", "slq_steps=4", "hessian_top_k=2"]


def _torchrun(*args, timeout=240):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    # --standalone: a rendezvous on a free local port
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.slow
def test_torchrun_hessian_equals_one_process_and_writes_once(tmp_path, digits_teacher):
    import shutil

    from zsq_probe.cli import main
    from zsq_probe.runs.posthoc import probe_run

    base = tmp_path / "run"
    flags = tiny_train("gdfq", epochs=1, sets=["act_range_epochs=1", *SMALL_HESSIAN], extra=["--no-progress"])
    assert main(["train", *flags, "--out", str(base)]) == 0
    one, two = tmp_path / "one", tmp_path / "two"
    shutil.copytree(base, one)
    shutil.copytree(base, two)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probe_run(one, "hessian", epochs=[1])
    proc = _torchrun("-m", "zsq_probe", "--", "hessian", "--run", str(two), "--epochs", "1", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(json.loads(proc.stdout.strip().splitlines()[-1])) >= 1  # rank 0 printed the table, once
    for table in ("hessian_trace", "hessian_eigenvalues", "hessian_density"):
        a, b = RunDir(one).read_table(table), RunDir(two).read_table(table)
        assert len(a) == len(b) and set(a["world_size"]) == {1} and set(b["world_size"]) == {2}, table
        assert len(list(RunDir(two).table_dir(table).glob("part-*.parquet"))) == 1  # written once, by rank 0
        a, b = canonical(a.drop(columns="world_size")), canonical(b.drop(columns="world_size"))
        for col in a.columns:
            if a[col].dtype.kind == "f":
                np.testing.assert_allclose(b[col], a[col], rtol=1e-4, atol=1e-6, err_msg=f"{table}.{col}")
            else:
                assert list(a[col]) == list(b[col]), f"{table}.{col}"


API_SCRIPT = r"""
import torch, torch.nn as nn, torch.nn.functional as F
from zsq_probe.hessian import HessianOperator, estimate_trace
from zsq_probe.hessian.distributed import split_across_ranks, world_size, is_writer

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
x, y = torch.randn(13, 6), torch.randint(0, 3, (13,))
full = HessianOperator(model, F.cross_entropy, [(x, y)], process_group=None)   # the whole batch, no split
with split_across_ranks() as group:
    assert group is not None and world_size() == 2
    split = HessianOperator(model, F.cross_entropy, [(x[:7], y[:7]), (x[7:], y[7:])])  # micro-batches per rank
    assert split.world_size == 2 and sum(split.local_batch_sizes) in (6, 7)
    v = torch.randn(full.dim, generator=torch.Generator().manual_seed(1 + group.rank))  # differs per rank
    ref = full.matvec(torch.randn(full.dim, generator=torch.Generator().manual_seed(1)))  # rank 0's vector
    got = split.matvec(v)
    assert torch.allclose(got, ref, rtol=1e-5, atol=1e-6), (got - ref).abs().max()
    assert torch.allclose(split.gradient(), full.gradient(), rtol=1e-5, atol=1e-7)
    t_full = estimate_trace(full, "hutchinson", rtol=None, max_products=8, min_samples=8, seed=3)
    t_split = estimate_trace(split, "hutchinson", rtol=None, max_products=8, min_samples=8, seed=3)
    assert abs(t_full.estimate - t_split.estimate) <= 1e-4 * max(1.0, abs(t_full.estimate))
    if is_writer():
        print("API OK", t_split.estimate)
"""


@pytest.mark.slow
def test_python_api_splits_products_across_gloo_ranks():
    """Two gloo ranks forked from this process, with the environment torchrun gives its ranks (the test above
    runs torchrun itself): fresh interpreters would add ~10 s of imports and test nothing more here."""
    import socket

    with socket.socket() as s:  # a free local port for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    ranks = [
        Forked(
            lambda: exec(compile(API_SCRIPT, "api.py", "exec"), {"__name__": "__main__"}),
            env={
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": port,
                "WORLD_SIZE": "2",
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "LOCAL_WORLD_SIZE": "2",
            },
        )
        for rank in range(2)
    ]
    finished = wait_all(ranks, timeout=240)
    assert [f.returncode for f in finished] == [0, 0], [f.stderr[-3000:] for f in finished]
    assert "".join(f.stdout for f in finished).count("API OK") == 1


def test_shards_cover_the_batch():
    from zsq_probe.hessian.distributed import shard

    for n in (1, 2, 7, 200):
        for size in (1, 2, 3, 8):
            spans = [shard(n, r, size) for r in range(size)]
            assert spans[0][0] == 0 and spans[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
            assert max(b - a for a, b in spans) - min(b - a for a, b in spans) <= 1


# ------------------------------------------------------------------------------- data loading, live curves
def test_loader_workers_give_the_same_validation_batches():
    from zsq_probe.data.datasets import load_dataset, make_loader

    val = load_dataset("digits", split="test")
    a = [x for x, _ in make_loader(val, 200, shuffle=False, seed=0)]
    b = [
        x
        for x, _ in make_loader(
            val, 200, shuffle=False, seed=0, num_workers=1, pin_memory=True, persistent_workers=True
        )
    ]
    assert len(a) == len(b) and all(torch.equal(x, z) for x, z in zip(a, b))


def test_num_workers_and_pin_memory_are_config_fields_and_flags():
    from zsq_probe.cli import build_parser
    from zsq_probe.cli.train import build_config

    args = build_parser().parse_args(["train", "--out", "x", "--num-workers", "4", "--pin-memory"])
    cfg = build_config(args)
    assert cfg.dataset.num_workers == 4 and cfg.dataset.pin_memory is True and cfg.get("num_workers") == 4
    with pytest.raises(UserError, match="num_workers"):
        cfg.set("num_workers", -1)
        cfg.validate()


def test_tensorboard_observer_logs_metrics_and_probe_scalars(tmp_path, digits_teacher):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from zsq_probe.cli import main

    out = tmp_path / "run"
    sets = [
        "act_range_epochs=1",
        "probe_every_steps=1",
        *SMALL_HESSIAN,
        "hessian_every_epochs=2",  # the curvature probes at the last epoch only: their tags are what counts
    ]
    flags = tiny_train("ait", epochs=2, sets=sets, extra=["--probes", "cosine,hessian", "--no-progress"])
    assert main(["train", *flags, "--out", str(out), "--tensorboard"]) == 0
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {
        "metrics/loss_kl_scaled",
        "metrics/val_top1",
        "cosine/model/all",
        "hessian_trace/ce/exact",  # trace_estimators auto: the exact trace on the digits student
        "hessian_eigenvalue/kl/top1",
    } <= tags
    assert [e.step for e in acc.Scalars("metrics/loss_kl_scaled")] == [1, 2]
    metrics = RunDir(out).read_table("metrics")
    assert [e.value for e in acc.Scalars("metrics/loss_kl_scaled")] == pytest.approx(list(metrics["loss_kl_scaled"]))
