"""The `local` executor: a recipe's jobs on this machine, N at a time, each worker pinned to a device.

    python -m analyses tab2 --workers 2 --threads 1                       # 2 CPU workers, 1 thread each
    python -m analyses tab2 --devices cuda:0,cuda:1,cuda:2,cuda:3 ...      # one worker per GPU

One worker (the default, without --devices) trains the jobs one after another in this process, as the
runner always did.  Otherwise every job runs in a process of its own (`python -m zsq_probe.executors.worker`)
on the device of its worker slot — `--devices` lists them, a worker count larger than the list cycles through
it, no list means CPU — with `threads` intra-op threads (default: the CPUs shared among the workers).  A job
that fails or whose process dies is reported and the others go on; its output is in OUT/logs/<run>.log.
SIGTERM or Ctrl-C here is passed on to the running jobs, which stop after their epoch's checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from zsq_probe.errors import UserError
from zsq_probe.executors.base import JobOutcome, execute_job, finished_line, log, outcome, python_path_env
from zsq_probe.executors.job import Job

if TYPE_CHECKING:
    from zsq_probe.rundir.store import PathArg


def parse_devices(devices: str | Iterable[str] | None) -> list[str]:
    """The devices of `--devices`.

    Args:
        devices: 'cpu,cuda:0', a list of names, or None.

    Returns:
        The device names ([] for None).

    Raises:
        UserError: A name is not a device (cpu, cuda, cuda:N, mps).
    """
    if devices is None:
        return []
    items = devices.split(",") if isinstance(devices, str) else list(devices)
    out = [d.strip() for d in items if str(d).strip()]
    for d in out:
        if not (d == "cpu" or d == "cuda" or d.startswith("cuda:") or d == "mps"):
            raise UserError(f"--devices: {d!r} is not a device (cpu, cuda, cuda:0, ...)")
    return out


def default_threads(workers: int) -> int:
    """Threads per worker when not given: the machine's cores shared out among `workers`.

    Args:
        workers: The number of workers.

    Returns:
        The CPU count divided among them, at least 1.
    """
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def run_local(
    jobs: Sequence[Job],
    *,
    workers: int | None = None,
    devices: str | Iterable[str] | None = None,
    threads: int | None = None,
    tensorboard: bool | PathArg = False,
    log_dir: PathArg | None = None,
    poll_s: float = 0.2,
    progress: bool = False,
) -> list[JobOutcome]:
    """Run `jobs` (distinct run folders) with `workers` worker slots.

    Args:
        jobs: The jobs.
        workers: How many run at once (default: one per device, else 1).
        devices: The devices of the worker slots, cycled through (`parse_devices`); none: CPU.
        threads: torch's intra-op threads per worker (default: the CPUs shared among the workers).
        tensorboard: Also log live curves (`zsq_probe.executors.base.train_job`).
        log_dir: Where each job's log goes (default: OUT/logs next to OUT/runs).
        poll_s: How often running jobs are checked, in seconds.
        progress: Show the trainer's progress bar (one worker in this process only).

    Returns:
        One outcome per job, in order.

    Raises:
        UserError: `workers`, `devices` or `threads` is out of its range.
    """
    devices = parse_devices(devices)
    workers = int(workers or len(devices) or 1)
    if workers < 1:
        raise UserError(f"--workers must be >= 1, got {workers}")
    threads = int(threads) if threads else None
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    if workers == 1 and not devices:
        return _in_process(jobs, threads, tensorboard, progress)
    slots = [devices[i % len(devices)] if devices else "cpu" for i in range(workers)]
    return _processes(jobs, slots, threads or default_threads(workers), tensorboard, log_dir, poll_s)


def _in_process(
    jobs: Sequence[Job], threads: int | None, tensorboard: bool | PathArg, progress: bool
) -> list[JobOutcome]:
    """Today's sequential runner: every job in this process; a signal stops the whole run (resume later)."""
    outs = []
    for i, job in enumerate(jobs, 1):
        status = job.status()
        if status != "done":
            log.info(
                "[%d/%d] %s seed %d: %s -> %s",
                i,
                len(jobs),
                job.id,
                job.seed,
                "resuming" if status == "partial" else "training",
                job.path,
            )
        out = execute_job(job, threads=threads, tensorboard=tensorboard, catch_interrupt=False, progress=progress)
        (log.error if out["state"] == "failed" else log.info)("[%d/%d] %s", i, len(jobs), finished_line(out))
        outs.append(out)
    return outs


class _Running:
    def __init__(
        self,
        index: int,
        job: Job,
        slot: int,
        device: str,
        proc: subprocess.Popen[bytes],
        result: Path,
        logfile: Path,
        t0: float,
    ) -> None:
        self.index, self.job, self.slot, self.device, self.proc = index, job, slot, device, proc
        self.result, self.logfile, self.t0 = result, logfile, t0


def _last_line(path: Path) -> str:
    try:
        lines = [s for s in path.read_text(errors="replace").splitlines() if s.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:300] if lines else ""


def _processes(
    jobs: Sequence[Job],
    slots: list[str],
    threads: int,
    tensorboard: bool | PathArg,
    log_dir: PathArg | None,
    poll_s: float,
) -> list[JobOutcome]:
    if not jobs:
        return []
    log_dir = Path(log_dir) if log_dir else jobs[0].path.parent.parent / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    queue = list(enumerate(jobs))
    free = list(range(len(slots)))
    running: list[_Running] = []
    outs: dict[int, JobOutcome] = {}
    stop: dict[str, str | None] = {"signal": None}
    forwarded = False
    main = threading.current_thread() is threading.main_thread()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop["signal"] = signal.Signals(signum).name

    previous = signal.signal(signal.SIGTERM, on_signal) if main else None
    env0 = python_path_env()
    try:
        while queue or running:
            while queue and free and stop["signal"] is None:
                i, job = queue.pop(0)
                slot = free.pop(0)
                running.append(_start(i, job, slot, slots[slot], threads, tensorboard, log_dir, env0, len(jobs)))
            _reap(running, free, outs, len(jobs))
            if stop["signal"] is not None and not forwarded:
                forwarded = True
                _forward(running)  # each running job stops after its epoch's checkpoint
                for i, job in queue:
                    outs[i] = outcome(job, "interrupted", f"not started ({stop['signal']})")
                queue = []
            time.sleep(poll_s)
    finally:
        if running:  # an exception here (Ctrl-C): pass it on as SIGTERM and wait for the checkpoints
            _forward(running)
            for r in running:
                try:
                    r.proc.wait(timeout=600)
                except subprocess.TimeoutExpired:
                    r.proc.kill()
        if main and previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if stop["signal"] == "SIGTERM":
        log.warning("SIGTERM: the running jobs stopped after their checkpoints; run again to resume")
    return [outs[i] for i in range(len(jobs))]


def _reap(running: list[_Running], free: list[int], outs: dict[int, JobOutcome], total: int) -> None:
    """Take the jobs whose process ended out of `running`: their outcome into `outs` (logged), their slot free."""
    for r in list(running):
        code = r.proc.poll()
        if code is None:
            continue
        running.remove(r)
        free.append(r.slot)
        outs[r.index] = _collect(r, code)
        out = outs[r.index]
        (log.error if out["state"] == "failed" else log.info)("[%d/%d] %s", r.index + 1, total, finished_line(out))


def _forward(running: Iterable[_Running]) -> None:
    for r in running:
        try:
            r.proc.send_signal(signal.SIGTERM)
        except OSError:
            pass


def _start(
    i: int,
    job: Job,
    slot: int,
    device: str,
    threads: int,
    tensorboard: bool | PathArg,
    log_dir: Path,
    env0: dict[str, str],
    total: int,
) -> _Running:
    name = job.name
    spec = log_dir / f"{name}.job.json"
    result = log_dir / f"{name}.result.json"
    result.unlink(missing_ok=True)
    spec.write_text(
        json.dumps(
            {
                "job": job.to_dict(),
                "device": device,
                "threads": threads,
                "tensorboard": tensorboard if not isinstance(tensorboard, Path) else str(tensorboard),
                "where": f"{device} (worker {slot})",
            }
        )
    )
    env = dict(env0, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    logfile = log_dir / f"{name}.log"
    status = job.status()
    if status != "done":
        log.info(
            "[%d/%d] %s seed %d: %s on %s (worker %d, %d thread%s) -> %s",
            i + 1,
            total,
            job.id,
            job.seed,
            "resuming" if status == "partial" else "training",
            device,
            slot,
            threads,
            "s" * (threads > 1),
            job.path,
        )
    with open(logfile, "ab") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "zsq_probe.executors.worker", str(spec), str(result)],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    return _Running(i, job, slot, device, proc, result, logfile, time.time())


def _collect(r: _Running, code: int | None) -> JobOutcome:
    try:
        out: JobOutcome = json.loads(r.result.read_text())
        return out
    except (OSError, ValueError):
        how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit status {code}"
        last = _last_line(r.logfile)
        msg = f"worker process ended ({how}) without a result; see {r.logfile}" + (f": {last}" if last else "")
        return outcome(r.job, "failed", msg, time.time() - r.t0, resumed=r.job.status() == "partial", where=r.device)
