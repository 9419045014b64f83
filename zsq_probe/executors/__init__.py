"""Executors: where a recipe's jobs run.  One job description (`Job`, zsq_probe.executors.job: a run folder and
its config), three engines, chosen by `--executor`:

* ``local`` (default): N workers on this machine, each pinned to a device (`--devices cuda:0,cuda:1`, or CPU
  with `--threads` per worker); one failing job does not stop the others; a final report of every job.
* ``ray``: each job a Ray task with its resources (`--cpus-per-job`, `--gpus-per-job`, `--mem-per-job`),
  retried on worker or node loss; `--ray-address` joins a cluster, else a local one.  Extra ``[ray]``.
* ``slurm``: one submitit job array (`--partition`, `--time`, `--gpus-per-job`, `--account` or
  `--slurm-config FILE`); preemption and time-outs requeue a job, which resumes.  Extra ``[slurm]``.

Jobs are idempotent (finished runs skipped, partial ones resumed from their last checkpoint), so any engine may
run one again.  `run_jobs` returns one outcome dict per job (state done / skipped / failed / interrupted /
submitted); `report_text` prints them.

Dispatching stays light: these modules import torch, the trainer and the probes only where a job runs
(`execute_job`, in a worker, a Ray task or a SLURM job), never in the process that plans and hands out jobs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from zsq_probe.errors import UserError
from zsq_probe.executors.base import FAULT_ONCE_ENV, STATES, JobOutcome, execute_job, failures, report_text, require
from zsq_probe.executors.job import Job, unique_jobs
from zsq_probe.executors.local import run_local
from zsq_probe.executors.ray_executor import run_ray
from zsq_probe.executors.slurm_executor import run_slurm

EXECUTORS = ("local", "ray", "slurm")

__all__ = [
    "EXECUTORS",
    "STATES",
    "FAULT_ONCE_ENV",
    "Job",
    "JobOutcome",
    "execute_job",
    "failures",
    "report_text",
    "require",
    "run_jobs",
]


def run_jobs(jobs: Iterable[Job], executor: str = "local", **options: Any) -> list[JobOutcome]:
    """Run the distinct jobs of `jobs` with `executor`.

    Args:
        jobs: The jobs (two sharing a run folder run once).
        executor: 'local', 'ray' or 'slurm'.
        **options: Keyword arguments of `run_local`, `run_ray` or `run_slurm` (None values mean: the default).

    Returns:
        One outcome per distinct job, in order.

    Raises:
        UserError: `executor` is unknown, an option is out of its range, or its extra is not installed.
    """
    todo = unique_jobs(list(jobs))
    options = {k: v for k, v in options.items() if v is not None}
    if executor == "local":
        return run_local(todo, **options)
    if executor == "ray":
        return run_ray(todo, **options)
    if executor == "slurm":
        if "folder" not in options:
            if not todo:
                return []
            options["folder"] = todo[0].path.parent.parent / "slurm"
        return run_slurm(todo, **options)
    raise UserError(f"--executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
