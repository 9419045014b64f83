"""Training a recipe's jobs through the library: finished runs are skipped, partial ones resumed."""

from __future__ import annotations

import logging
import time

from zsq_probe.errors import UserError
from zsq_probe.recipes.jobs import Job, config_conflict, unique_jobs

log = logging.getLogger(__name__)


def train_job(job: Job, progress: bool = False, tensorboard=False) -> dict:
    """Train one job through `zsq_probe.training.train` (with the probes its config names) and return its
    summary: skip it when finished (its config must match), resume it when partial.  `tensorboard`: also log
    live curves (True: into RUN/tensorboard; a path: there; zsq_probe.training.tensorboard)."""
    from zsq_probe.training import train

    cfg = job.config()
    status = job.status()
    conflict = config_conflict(job, cfg)
    if conflict:
        raise UserError(conflict)
    if status == "done":
        return job.summary()
    observers = None
    if tensorboard:
        from zsq_probe.probes import build_probes
        from zsq_probe.training.tensorboard import TensorBoardObserver

        logdir = None if tensorboard is True else tensorboard
        observers = build_probes(cfg) + [TensorBoardObserver(logdir)]
    return train(
        cfg, job.path, resume=status == "partial", force=status == "partial", progress=progress, observers=observers
    )


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
