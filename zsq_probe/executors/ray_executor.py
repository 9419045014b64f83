"""The `ray` executor: every job a Ray task with its resource request, retried on worker or node loss.

    python -m analyses tab2 --executor ray --gpus-per-job 1 --ray-address auto ...   # join a running cluster
    python -m analyses tab2 --scale tiny --executor ray --cpus-per-job 1             # a local cluster

Without --ray-address a local cluster is started for the recipe (and shut down after).  On a cluster the run
folders (--out) must be on a file system every node sees, and every node needs zsq-probe installed.  A task
whose worker process or node dies is run again by Ray (`max_retries`); so is one stopped by SIGTERM after its
checkpoint (a node being drained).  A run again resumes from the last checkpoint, so no row is lost or doubled.
Needs the optional extra: ``pip install 'zsq-probe[ray]'``.
"""

from __future__ import annotations

import os
import socket

from zsq_probe.errors import one_line
from zsq_probe.executors.base import as_job, execute_job, finished_line, log, outcome, require


class JobPreempted(Exception):
    """A job stopped by a signal after its checkpoint; Ray retries it (it resumes)."""


def ray_task(job: dict, device: str | None, threads: int, tensorboard) -> dict:
    """The body of one Ray task (runs in a Ray worker process)."""
    out = execute_job(
        job, device=device, threads=threads, tensorboard=tensorboard, where=f"{socket.gethostname()} pid {os.getpid()}"
    )
    if out["state"] == "interrupted":
        raise JobPreempted(out["message"])
    return out


def run_ray(
    jobs,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_job: float = 1,
    gpus_per_job: float = 0,
    memory_gb: float | None = None,
    max_retries: int = 3,
    threads: int | None = None,
    tensorboard=False,
) -> list[dict]:
    """Run `jobs` as Ray tasks; returns one outcome per job, in order.  `address`: an existing cluster ('auto',
    'ray://host:10001', ...); else a local one with `num_cpus` CPUs (default: all)."""
    ray = require("ray", "ray")
    jobs = [as_job(j) for j in jobs]
    started = False
    if not ray.is_initialized():
        kw = {"address": address} if address else {"num_cpus": num_cpus, "include_dashboard": False}
        ray.init(ignore_reinit_error=True, logging_level="WARNING", log_to_driver=False, **kw)
        started = True
    try:
        options = {
            "num_cpus": cpus_per_job,
            "num_gpus": gpus_per_job,
            "max_retries": int(max_retries),
            "retry_exceptions": [JobPreempted],
        }
        if memory_gb:
            options["memory"] = int(memory_gb * 2**30)
        task = ray.remote(ray_task).options(**options)
        threads = int(threads or max(1, int(cpus_per_job)))
        refs = {}
        for i, job in enumerate(jobs):
            device = "cuda" if gpus_per_job else job.flags.get("device")  # Ray sets CUDA_VISIBLE_DEVICES
            if job.status() != "done":
                log.info(
                    "[%d/%d] %s seed %d: submitted as a Ray task -> %s", i + 1, len(jobs), job.id, job.seed, job.path
                )
            refs[task.remote(job.to_dict(), device, threads, tensorboard)] = i
        return _collect(ray, refs, jobs)
    finally:
        if started:
            ray.shutdown()


def _collect(ray, refs: dict, jobs: list) -> list[dict]:
    """Wait for every task (`refs`: task -> index of its job) and log each as it ends; the outcomes in job
    order (a task whose retries ran out: 'failed', or 'interrupted' when a signal stopped it every time)."""
    outs: dict[int, dict] = {}
    pending = list(refs)
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        for ref in ready:
            i = refs[ref]
            try:
                outs[i] = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - retries exhausted, or the task could not run
                cause = getattr(e, "cause", None)
                msg = one_line(cause if isinstance(cause, JobPreempted) else e, 300, with_type=False)
                state = "interrupted" if isinstance(cause, JobPreempted) else "failed"
                outs[i] = outcome(jobs[i], state, msg, resumed=jobs[i].status() == "partial")
            out = outs[i]
            (log.error if out["state"] == "failed" else log.info)("[%d/%d] %s", i + 1, len(jobs), finished_line(out))
    return [outs[i] for i in range(len(jobs))]
