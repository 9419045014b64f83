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
from collections.abc import Iterable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from zsq_probe.errors import one_line
from zsq_probe.executors.base import JobOutcome, as_job, execute_job, finished_line, log, outcome, require
from zsq_probe.executors.job import Job

if TYPE_CHECKING:
    from zsq_probe.rundir.store import PathArg


class JobPreempted(Exception):
    """A job stopped by a signal after its checkpoint; Ray retries it (it resumes)."""


def ray_task(job: Mapping[str, Any], device: str | None, threads: int, tensorboard: bool | PathArg) -> JobOutcome:
    """The body of one Ray task (runs in a Ray worker process).

    Args:
        job: The job's `Job.to_dict`.
        device: Where it trains (None: the job's own --device).
        threads: torch's intra-op threads.
        tensorboard: Also log live curves (`zsq_probe.executors.base.train_job`).

    Returns:
        Its outcome.

    Raises:
        JobPreempted: A signal stopped it after a checkpoint (Ray runs the task again).
    """
    out = execute_job(
        job, device=device, threads=threads, tensorboard=tensorboard, where=f"{socket.gethostname()} pid {os.getpid()}"
    )
    if out["state"] == "interrupted":
        raise JobPreempted(out["message"])
    return out


def run_ray(
    jobs: Iterable[Job | Mapping[str, Any]],
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_job: float = 1,
    gpus_per_job: float = 0,
    memory_gb: float | None = None,
    max_retries: int = 3,
    threads: int | None = None,
    tensorboard: bool | PathArg = False,
) -> list[JobOutcome]:
    """Run `jobs` as Ray tasks.

    Args:
        jobs: The jobs (or their `Job.to_dict`).
        address: An existing cluster ('auto', 'ray://host:10001', ...); None: a local one, shut down after.
        num_cpus: The local cluster's CPUs (default: all).
        cpus_per_job: CPUs each task asks for.
        gpus_per_job: GPUs each task asks for.
        memory_gb: Memory each task asks for, in GiB.
        max_retries: How often Ray runs a task again after a worker or node loss or a preemption.
        threads: torch's intra-op threads per task (default: its CPUs).
        tensorboard: Also log live curves (`zsq_probe.executors.base.train_job`).

    Returns:
        One outcome per job, in order.

    Raises:
        UserError: Ray is not installed.
    """
    ray = require("ray", "ray")
    todo = [as_job(j) for j in jobs]
    started = False
    if not ray.is_initialized():
        kw = {"address": address} if address else {"num_cpus": num_cpus, "include_dashboard": False}
        ray.init(ignore_reinit_error=True, logging_level="WARNING", log_to_driver=False, **kw)
        started = True
    try:
        task = ray.remote(ray_task).options(**_task_options(cpus_per_job, gpus_per_job, memory_gb, max_retries))
        threads = int(threads or max(1, int(cpus_per_job)))
        refs: dict[Any, int] = {}  # Ray's ObjectRef -> index of its job
        for i, job in enumerate(todo):
            device = "cuda" if gpus_per_job else job.flags.get("device")  # Ray sets CUDA_VISIBLE_DEVICES
            if job.status() != "done":
                log.info(
                    "[%d/%d] %s seed %d: submitted as a Ray task -> %s", i + 1, len(todo), job.id, job.seed, job.path
                )
            refs[task.remote(job.to_dict(), device, threads, tensorboard)] = i
        return _collect(ray, refs, todo)
    finally:
        if started:
            ray.shutdown()


def _task_options(
    cpus_per_job: float, gpus_per_job: float, memory_gb: float | None, max_retries: int
) -> dict[str, Any]:
    """The Ray task options: its resources and retries (a JobPreempted is retried too)."""
    options: dict[str, Any] = {
        "num_cpus": cpus_per_job,
        "num_gpus": gpus_per_job,
        "max_retries": int(max_retries),
        "retry_exceptions": [JobPreempted],
    }
    if memory_gb:
        options["memory"] = int(memory_gb * 2**30)
    return options


def _collect(ray: ModuleType, refs: dict[Any, int], jobs: list[Job]) -> list[JobOutcome]:
    """Wait for every task (`refs`: task -> index of its job) and log each as it ends; the outcomes in job
    order (a task whose retries ran out: 'failed', or 'interrupted' when a signal stopped it every time)."""
    outs: dict[int, JobOutcome] = {}
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
