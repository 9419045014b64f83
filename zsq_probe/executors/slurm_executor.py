"""The `slurm` executor (through submitit): one job array per recipe; preemption and time-outs requeue a job,
which resumes from its last checkpoint.

    python -m analyses tab2 --executor slurm --partition gpu --time 240 --gpus-per-job 1 --account myproj ...
    python -m analyses tab2 --executor slurm --slurm-config cluster.json ...   # the same from a file

A config file (JSON; TOML on Python >= 3.11) holds any of: partition, time (minutes), gpus_per_job,
cpus_per_job, mem_gb, account, array_parallelism, constraint, qos, setup (shell lines run before the job),
additional (extra sbatch options as a mapping); flags given on the command line win.  Submitit's files (job
scripts, logs, pickles) go to OUT/slurm/.

Preemption: SLURM sends the job's signal (submitit: $SUBMITIT_PREEMPT_SIGNAL, USR2 by default, `signal_delay_s`
before the time limit) or SIGTERM; the trainer also stops on SIGUSR1.  The trainer finishes the epoch under way,
writes its checkpoint and stops; the job then hands over to submitit, which requeues it (`scontrol requeue`), and
the requeued job resumes from that checkpoint.  The executor waits for the array unless told not to (--no-wait:
submit and return; run the recipe again with --no-train for the table once the jobs are done).
Needs the optional extra: ``pip install 'zsq-probe[slurm]'``.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zsq_probe.errors import UserError, one_line
from zsq_probe.executors.base import JobOutcome, as_job, execute_job, finished_line, log, outcome, require
from zsq_probe.executors.job import Job

if TYPE_CHECKING:
    from submitit.helpers import DelayedSubmission

    from zsq_probe.rundir.store import PathArg

# config-file keys -> submitit AutoExecutor parameters
_KEYS = {
    "partition": "slurm_partition",
    "time": "timeout_min",
    "gpus_per_job": "gpus_per_node",
    "cpus_per_job": "cpus_per_task",
    "mem_gb": "mem_gb",
    "account": "slurm_account",
    "array_parallelism": "slurm_array_parallelism",
    "constraint": "slurm_constraint",
    "qos": "slurm_qos",
    "setup": "slurm_setup",
    "additional": "slurm_additional_parameters",
    "signal_delay_s": "slurm_signal_delay_s",
}


def _preempt_signal() -> int:
    """The signal submitit's job environment requeues on (its SUBMITIT_PREEMPT_SIGNAL, USR2 by default)."""
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), signal.SIGUSR2)


class SubmititTask:
    """What each array element runs: one job (skip, resume or start it).  `checkpoint` is submitit's hook for
    preemption and time-outs: it resubmits the same job, which resumes from the run's last checkpoint.

    Args:
        tensorboard: Also log live curves (`zsq_probe.executors.base.train_job`).
        threads: torch's intra-op threads in the SLURM job.
    """

    def __init__(self, tensorboard: bool | PathArg = False, threads: int | None = None) -> None:
        self.tensorboard, self.threads = tensorboard, threads

    def __call__(self, job: dict[str, Any]) -> JobOutcome:
        """Run one job in this SLURM job; on preemption after a checkpoint, requeue it.

        Args:
            job: The job's `Job.to_dict`.

        Returns:
            Its outcome ('interrupted' when it was requeued).
        """
        # the trainer loads in the SLURM job, not in the process that submits it (see zsq_probe.executors)
        from zsq_probe.training import TrainingInterrupted, loop  # torch: not on import (zsq_probe.executors)

        preempt = _preempt_signal()
        old = loop.STOP_SIGNALS
        # the trainer also waits for the epoch's checkpoint on submitit's own preemption signal
        loop.STOP_SIGNALS = tuple(dict.fromkeys(old + (signal.Signals(preempt).name,)))
        try:
            return execute_job(
                job,
                threads=self.threads,
                tensorboard=self.tensorboard,
                catch_interrupt=False,
                where=f"{os.environ.get('SLURM_JOB_ID') or os.environ.get('SUBMITIT_LOCAL_JOB_ID', '')}",
            )
        except TrainingInterrupted as e:
            handler = signal.getsignal(preempt)
            if callable(handler):  # submitit's: calls self.checkpoint, requeues the job and exits
                os.kill(os.getpid(), preempt)
            return outcome(as_job(job), "interrupted", str(e))
        finally:
            loop.STOP_SIGNALS = old

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """On preemption or time-out (submitit's hook): the same job submitted again (it resumes).

        Args:
            *args: The arguments the task was called with (the job).
            **kwargs: Its keyword arguments.

        Returns:
            Submitit's resubmission of this task with the same arguments.
        """
        from submitit.helpers import DelayedSubmission  # the optional [slurm] extra

        return DelayedSubmission(self, *args, **kwargs)  # the same job again: it resumes


def read_config(path: PathArg | None) -> dict[str, Any]:
    """The settings of a --slurm-config file (JSON, or TOML from Python 3.11 on).

    Args:
        path: The file (.toml: TOML, else JSON), or None.

    Returns:
        Its settings ({} without a file).

    Raises:
        UserError: It cannot be read or parsed, is not a mapping, or holds an unknown setting.
    """
    if path is None:
        return {}
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise UserError(f"--slurm-config {path}: cannot read it ({e.__class__.__name__})") from None
    try:
        if path.suffix == ".toml":
            import tomllib  # the standard library from Python 3.11 on (an ImportError below on 3.10)

            doc = tomllib.loads(text)
        else:
            doc = json.loads(text)
    except (ValueError, ImportError) as e:
        raise UserError(f"--slurm-config {path}: not valid {path.suffix[1:] or 'JSON'} ({one_line(e, 120)})") from None
    if not isinstance(doc, dict):
        raise UserError(f"--slurm-config {path}: expected a mapping of settings")
    unknown = sorted(set(doc) - set(_KEYS))
    if unknown:
        raise UserError(f"--slurm-config {path}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(_KEYS)})")
    return doc


def executor_parameters(settings: Mapping[str, Any], name: str) -> dict[str, object]:
    """Submitit AutoExecutor parameters from our settings (None values dropped).

    Args:
        settings: Our settings (keys of the module's config files).
        name: The job name.

    Returns:
        The AutoExecutor parameters, with a 60-minute time limit and one task on one node unless set.
    """
    params: dict[str, object] = {"name": name}
    for key, value in settings.items():
        if value is not None:
            params[_KEYS[key]] = value
    params.setdefault("timeout_min", 60)
    params.setdefault("nodes", 1)
    params.setdefault("tasks_per_node", 1)
    return params


def run_slurm(
    jobs: Iterable[Job | Mapping[str, Any]],
    *,
    folder: PathArg,
    name: str = "zsq-probe",
    config_file: PathArg | None = None,
    cluster: str | None = "slurm",
    wait: bool = True,
    tensorboard: bool | PathArg = False,
    threads: int | None = None,
    **settings: Any,
) -> list[JobOutcome]:
    """Submit `jobs` as one array and (by default) wait for it.

    Args:
        jobs: The jobs (or their `Job.to_dict`).
        folder: Where submitit's files go.
        name: The SLURM job name.
        config_file: A --slurm-config file (`read_config`).
        cluster: 'slurm'; 'local' or 'debug' run the same code path through submitit's local executors
            (tests, a machine without SLURM).
        wait: Wait for the array; False: return 'submitted' outcomes.
        tensorboard: Also log live curves (`zsq_probe.executors.base.train_job`).
        threads: torch's intra-op threads per job (default: cpus_per_job).
        **settings: partition, time, gpus_per_job, cpus_per_job, mem_gb, account, array_parallelism, ... (see
            the module docstring), over those of `config_file`.

    Returns:
        One outcome per job, in order.

    Raises:
        UserError: submitit is not installed, or a setting is unknown.
    """
    submitit = require("submitit", "slurm")
    planned = [as_job(j) for j in jobs]
    merged = {**read_config(config_file), **{k: v for k, v in settings.items() if v is not None}}
    unknown = sorted(set(merged) - set(_KEYS))
    if unknown:
        raise UserError(f"unknown SLURM setting(s): {', '.join(unknown)}")
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    params = executor_parameters(merged, name)
    if cluster != "slurm":
        params = {k: v for k, v in params.items() if not k.startswith("slurm_")}
    executor.update_parameters(**params)
    threads = threads or merged.get("cpus_per_job")
    todo = [j for j in planned if j.status() != "done"]
    outs = {str(j.path): outcome(j, "skipped", "", summary=j.summary() or {}) for j in planned if j.status() == "done"}
    submitted = executor.map_array(SubmititTask(tensorboard, threads), [j.to_dict() for j in todo]) if todo else []
    for j, sj in zip(todo, submitted):
        what = "SLURM job" if cluster == "slurm" else f"submitit {cluster} job"
        log.info("%s seed %d: submitted as %s %s -> %s", j.id, j.seed, what, sj.job_id, j.path)
    if not wait:
        for j, sj in zip(todo, submitted):
            outs[str(j.path)] = outcome(j, "submitted", f"job {sj.job_id}")
        return [outs[str(j.path)] for j in planned]
    _wait(todo, submitted, outs)
    return [outs[str(j.path)] for j in planned]


def _wait(todo: list[Job], submitted: list[Any], outs: dict[str, JobOutcome]) -> None:
    """Wait for each submitted job (submitit's Job) in turn: its outcome into `outs` by run folder, logged."""
    for j, sj in zip(todo, submitted):
        try:
            out = sj.result()
        except Exception as e:  # noqa: BLE001 - the job failed, was cancelled or ran out of requeues
            out = outcome(j, "failed", one_line(e, 300), resumed=j.status() == "partial", where=str(sj.job_id))
        outs[str(j.path)] = out
        (log.error if out["state"] == "failed" else log.info)("%s", finished_line(out))
