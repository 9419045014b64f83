"""`python -m zsq_probe.executors.worker JOB.json RESULT.json`: one job of the local executor, in a process of
its own (JOB.json: {"job": Job.to_dict(), "device", "threads", "tensorboard", "where"}); writes its outcome to
RESULT.json.  SIGTERM/SIGUSR1 stop the job after its epoch's checkpoint (outcome 'interrupted')."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from zsq_probe.executors.base import execute_job
from zsq_probe.rundir.atomic import atomic_write_bytes


def main(argv: Sequence[str] | None = None) -> int:
    """Run the job JOB.json describes and write its outcome to RESULT.json.

    Args:
        argv: [JOB.json, RESULT.json] (default: the command line's).

    Returns:
        The exit status: 0 when the job ended done or skipped, 1 otherwise, 2 on bad arguments.
    """
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m zsq_probe.executors.worker JOB.json RESULT.json", file=sys.stderr)
        return 2
    # the job's log goes to this process's stderr (the executor sends it to OUT/logs/); matplotlib picks a
    # headless backend by itself in a process without a display
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("zsq_probe")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    spec = json.loads(Path(argv[0]).read_text())
    out = execute_job(
        spec["job"],
        device=spec.get("device"),
        threads=spec.get("threads"),
        tensorboard=spec.get("tensorboard") or False,
        where=spec.get("where", ""),
    )
    atomic_write_bytes(Path(argv[1]), json.dumps(out).encode())
    return 0 if out["state"] in ("done", "skipped") else 1


if __name__ == "__main__":
    sys.exit(main())
