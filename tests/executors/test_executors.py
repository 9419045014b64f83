"""Executors for recipes past one machine (zsq_probe.executors, issue 15): local workers, Ray, SLURM through submitit,
their settings and the one-line error for a missing extra.  Everything on CPU with tiny digits runs (tiny_runs.py);
the Ray and submitit tests need the extras the `test` extra installs."""

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from tiny_runs import FAST, ONLY, assert_same_tables, reference_run, tiny_jobs

from zsq_probe.errors import UserError
from zsq_probe.rundir.store import RunDir


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
