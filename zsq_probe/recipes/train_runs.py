"""Training a recipe's jobs one after another in this process: finished runs are skipped, partial ones resumed
(`train_job`, zsq_probe.executors.base; the executors run them side by side)."""

from __future__ import annotations

import logging
import time

from zsq_probe.errors import UserError
from zsq_probe.executors.base import train_job
from zsq_probe.executors.job import Job, unique_jobs

log = logging.getLogger(__name__)


def train_all(jobs: list[Job], progress: bool = False) -> list[tuple[Job, str]]:
    """Train every distinct job in order; returns the failures (job, message): one does not stop the rest."""
    todo = unique_jobs(jobs)
    failures = []
    for i, job in enumerate(todo, 1):
        status = job.status()
        head = f"[{i}/{len(todo)}] {job.id} seed {job.seed}"
        if status != "done":
            log.info("%s: %s -> %s", head, "resuming" if status == "partial" else "training", job.path)
        t0 = time.time()
        try:
            summary = train_job(job, progress)  # a finished job: only its config is checked
        except UserError as e:
            failures.append((job, str(e)))
            log.error("%s: error: %s", head, e)
            continue
        if status == "done":
            log.info("%s: done already (%s)", head, job.path)
            continue
        top1 = summary.get("best_val_top1")
        acc = (
            "no validation"
            if top1 is None
            else f"best top-1 {100 * top1:.2f}%, final {100 * summary['final_val_top1']:.2f}%"
        )
        log.info("%s: finished in %.1fs (%s)", head, time.time() - t0, acc)
    return failures
