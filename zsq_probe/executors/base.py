"""What every executor shares: running one job in whatever process an executor gives it, its outcome, the
final report, and the one-line error for a missing optional extra.

A job is a `zsq_probe.executors.job.Job` (a run folder and its config), shipped to workers as plain JSON
(`Job.to_dict`).  Running it is idempotent: a finished run is skipped (its config checked), a partial one
resumes from its last checkpoint (what a crash left past it is dropped), a new one starts.  So any executor
may run a job again — after a worker died, a node was lost, a SLURM job was preempted — and the run folder
ends the same as after one uninterrupted run.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypedDict

from zsq_probe.errors import UserError, one_line
from zsq_probe.executors.job import Job, config_conflict
from zsq_probe.rundir.atomic import FAULT_ENV

if TYPE_CHECKING:
    from zsq_probe.events import Observer
    from zsq_probe.rundir.store import PathArg

log = logging.getLogger("zsq_probe.executors")

# outcome states: done (trained now), skipped (finished before), failed, interrupted (a signal stopped it
# after a checkpoint: run the recipe again to resume), submitted (slurm --no-wait)
STATES = ("done", "skipped", "failed", "interrupted", "submitted")

# Test-only: "<marker file>=<fault pattern>" arms zsq_probe.rundir.store's ZSQ_PROBE_FAULT (SIGKILL at a site) in the
# first job that starts while the marker file does not exist (it is created then): "a worker dies once".
FAULT_ONCE_ENV = "ZSQ_PROBE_FAULT_ONCE"


class JobOutcome(TypedDict):
    """One job's report (plain data, so it crosses process boundaries): what `outcome` builds."""

    run: str  # the run folder's name
    id: str  # the run id of the spec trained
    seed: int
    path: str  # the run folder
    state: str  # one of STATES
    message: str  # why it failed or was interrupted ("" otherwise)
    seconds: float
    resumed: bool  # whether it went on from a partial run
    where: str  # the device, host or SLURM job it ran on
    best_val_top1: float | None  # from the run's summary
    final_val_top1: float | None


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency.

    Args:
        module: The module to import.
        extra: The package extra that installs it (``pip install 'zsq-probe[extra]'``).

    Returns:
        The module.

    Raises:
        UserError: It is not installed; the message names the extra.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(f"this executor needs {module}: pip install 'zsq-probe[{extra}]'") from None


def as_job(job: Job | Mapping[str, Any]) -> Job:
    """A Job, from itself or from the plain dict `Job.to_dict` made of it (what a worker receives).

    Args:
        job: A job or its `Job.to_dict`.

    Returns:
        The job.
    """
    return job if isinstance(job, Job) else Job.from_dict(job)


def outcome(
    job: Job,
    state: str,
    message: str = "",
    seconds: float = 0.0,
    summary: Mapping[str, Any] | None = None,
    resumed: bool = False,
    where: str = "",
) -> JobOutcome:
    """One job's report (plain data, so it crosses process boundaries).

    Args:
        job: The job.
        state: One of STATES.
        message: Why it failed or was interrupted.
        seconds: How long it ran.
        summary: The run's summary (its top-1 values are copied).
        resumed: Whether it went on from a partial run.
        where: The device, host or SLURM job it ran on.

    Returns:
        The report.
    """
    summary = summary or {}
    return {
        "run": job.name,
        "id": job.id,
        "seed": job.seed,
        "path": str(job.path),
        "state": state,
        "message": message,
        "seconds": round(float(seconds), 2),
        "resumed": resumed,
        "where": where,
        "best_val_top1": summary.get("best_val_top1"),
        "final_val_top1": summary.get("final_val_top1"),
    }


def _arm_fault_once() -> None:
    spec = os.environ.get(FAULT_ONCE_ENV)
    if not spec or "=" not in spec:
        return
    marker, pattern = spec.split("=", 1)
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # only the first job to get here arms it
    except FileExistsError:
        os.environ.pop(FAULT_ENV, None)
        return
    os.close(fd)
    os.environ[FAULT_ENV] = pattern


def execute_job(
    job: Job | Mapping[str, Any],
    *,
    device: str | None = None,
    threads: int | None = None,
    tensorboard: bool | PathArg = False,
    catch_interrupt: bool = True,
    where: str = "",
    progress: bool = False,
) -> JobOutcome:
    """Run one job here (skip, resume or start it) and return its outcome; errors become a 'failed' outcome.

    Args:
        job: The job or its `Job.to_dict`.
        device: Where it trains (overrides the job's --device).
        threads: torch's intra-op threads in this process.
        tensorboard: Also log live curves (`train_job`).
        catch_interrupt: A TrainingInterrupted (SIGTERM/SIGUSR1 after a checkpoint) becomes an 'interrupted'
            outcome instead of propagating.
        where: What the outcome names as the place it ran.
        progress: Show the trainer's progress bar.

    Returns:
        Its outcome.

    Raises:
        TrainingInterrupted: A signal stopped it after a checkpoint, with `catch_interrupt=False`.
    """
    # torch and the trainer load here, where a job trains: a parent that only dispatches jobs stays light
    import torch  # torch: not on import (zsq_probe.executors)

    from zsq_probe.training import TrainingInterrupted  # torch: not on import (zsq_probe.executors)

    job = as_job(job)
    if threads:
        torch.set_num_threads(int(threads))
    if device:
        job.flags = dict(job.flags, device=device)
    _arm_fault_once()
    status = job.status()
    t0 = time.time()
    try:
        summary = train_job(job, progress=progress, tensorboard=tensorboard)
    except TrainingInterrupted as e:
        if not catch_interrupt:
            raise
        return outcome(job, "interrupted", str(e), time.time() - t0, resumed=status == "partial", where=where)
    except UserError as e:
        message = one_line(e, None, with_type=False)
        return outcome(job, "failed", message, time.time() - t0, resumed=status == "partial", where=where)
    except Exception as e:  # noqa: BLE001 - one job's bug must not stop the others: reported, traceback logged
        log.error("%s: %s", job.name, traceback.format_exc())
        return outcome(job, "failed", one_line(e), time.time() - t0, resumed=status == "partial", where=where)
    state = "skipped" if status == "done" else "done"
    return outcome(job, state, "", time.time() - t0, summary, resumed=status == "partial", where=where)


def train_job(job: Job, progress: bool = False, tensorboard: bool | PathArg = False) -> dict[str, Any]:
    """Train one job through `zsq_probe.runs.train` (with the probes its config names).

    Skips it when finished (its config must match), resumes it when partial.

    Args:
        job: The job.
        progress: Show the trainer's progress bar.
        tensorboard: Also log live curves (True: into RUN/tensorboard; a path: there;
            zsq_probe.training.tensorboard).

    Returns:
        The run's summary (summary.json).

    Raises:
        UserError: The folder holds a run of another config, or training failed on bad input.
    """
    # the trainer and probes load where a job trains (a dispatching parent stays light: see the package)
    from zsq_probe.probes import build_probes  # torch: not on import (zsq_probe.executors)
    from zsq_probe.runs import train  # torch: not on import (zsq_probe.executors)
    from zsq_probe.training.tensorboard import TensorBoardObserver  # [tensorboard] extra, torch (zsq_probe.executors)

    cfg = job.config()
    status = job.status()
    conflict = config_conflict(job, cfg)
    if conflict:
        raise UserError(conflict)
    if status == "done":
        return job.summary() or {}
    observers: list[Observer] | None = None
    if tensorboard:
        logdir = None if tensorboard is True else tensorboard
        # typed as what it is here (training.tensorboard may leave its constructor unannotated)
        tensorboard_observer: Callable[[PathArg | None], Observer] = TensorBoardObserver
        observers = [*build_probes(cfg), tensorboard_observer(logdir)]
    summary = train(
        cfg, job.path, resume=status == "partial", force=status == "partial", progress=progress, observers=observers
    )
    return summary.to_dict()


def finished_line(out: JobOutcome) -> str:
    """The progress line of a job that ended.

    Args:
        out: Its outcome.

    Returns:
        One line: the run, its state and, when it trained, its time and top-1.
    """
    head = f"{out['id']} seed {out['seed']}"
    if out["state"] == "skipped":
        return f"{head}: done already ({out['path']})"
    if out["state"] != "done":
        return f"{head}: {out['state']}: {out['message']}"
    top1 = out.get("best_val_top1")
    acc = (
        "no validation"
        if top1 is None
        else f"best top-1 {100 * top1:.2f}%, final {100 * (out.get('final_val_top1') or 0):.2f}%"
    )
    where = f" on {out['where']}" if out.get("where") else ""
    return f"{head}: finished{where} in {out['seconds']:.1f}s{' (resumed)' if out['resumed'] else ''} ({acc})"


def report_text(outcomes: Sequence[JobOutcome]) -> str:
    """The final report: one line per job (state, seconds, run folder, message) and the counts.

    Args:
        outcomes: The jobs' outcomes.

    Returns:
        The report's lines ("no jobs" without outcomes).
    """
    if not outcomes:
        return "no jobs"
    width = max(len(o["run"]) for o in outcomes)
    lines = [f"{'state':<12}{'seconds':>9}  {'run':<{width}}  note"]
    for o in outcomes:
        note = o["message"] or ("resumed" if o["resumed"] else "")
        lines.append(f"{o['state']:<12}{o['seconds']:>9.1f}  {o['run']:<{width}}  {note}")
    counts = {s: sum(o["state"] == s for o in outcomes) for s in STATES}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return "\n".join(lines)


def failures(jobs: Iterable[Job], outcomes: Iterable[JobOutcome]) -> list[tuple[Job, str]]:
    """The jobs that did not end done or skipped (what RecipeResult.failures holds).

    Args:
        jobs: The jobs.
        outcomes: Their outcomes (matched by run folder).

    Returns:
        (job, message) for each.
    """
    by_path = {str(j.path): j for j in jobs}
    return [
        (by_path[o["path"]], f"{o['state']}: {o['message']}" if o["state"] == "interrupted" else o["message"])
        for o in outcomes
        if o["state"] not in ("done", "skipped") and o["path"] in by_path
    ]


def python_path_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """An environment with this zsq_probe's folder first on PYTHONPATH.

    So a worker process imports the same code even when it is not installed.

    Args:
        env: The environment to start from (default: os.environ).

    Returns:
        A copy of it with PYTHONPATH set.
    """
    env = dict(os.environ if env is None else env)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
