"""`zsq-probe` commands (or any test code) run from the test process: forked from it, or in it.

`forked_main(argv)` is a real process running the command line's `main` (it can be SIGKILLed by the fault hook
``$ZSQ_PROBE_FAULT`` and exits with a status), without the ~3 s of imports (torch, pandas) a fresh
``python -m zsq_probe`` pays.  Use it where a test needs a process to die or exit, not where its point is
interpreter start-up or the ``python -m`` entry point.  `Forked(target)` is the process behind it, for code
other than `main` (several at once: gloo ranks).  Safe because torch runs one intra-op thread in the test
processes (conftest), so a child inherits no thread pool it could deadlock on.  `main_in_process(argv)` runs a
command that needs no process of its own (an uninterrupted reference run) in the test process itself.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from zsq_probe.rundir.atomic import FAULT_ENV


@dataclass
class Finished:
    """What `subprocess.run(..., capture_output=True, text=True)` returns, for a forked process."""

    args: list[str]
    returncode: int  # -N when signal N ended it, as subprocess reports it
    stdout: str
    stderr: str


class Forked:
    """`target()` in a forked child, started at once: stdout/stderr to files, `env` applied (None: unset), one
    intra-op torch thread; its exit status is `target`'s return value (0 for None), 1 for an uncaught exception
    (the traceback on its stderr), an uncaught SystemExit's code, or -N when signal N killed it."""

    def __init__(
        self,
        target: Callable[[], int | None],
        *,
        env: Mapping[str, str | None] | None = None,
        args: list[str] | None = None,
    ):
        self.args = args or []
        self._tmp = tempfile.TemporaryDirectory(prefix="zsq-forked-")
        self._out, self._err = Path(self._tmp.name, "stdout"), Path(self._tmp.name, "stderr")
        self._out.touch()
        self._err.touch()
        sys.stdout.flush()
        sys.stderr.flush()
        self.pid = os.fork()
        if self.pid == 0:
            self._child(target, env or {})
        self.status: int | None = None

    def _child(self, target: Callable[[], int | None], env: Mapping[str, str | None]) -> None:
        """Never returns (os._exit: no pytest teardown, no atexit handler of the parent runs twice)."""
        status = 70
        try:
            for fd, path in ((1, self._out), (2, self._err)):
                opened = os.open(path, os.O_WRONLY | os.O_TRUNC)
                os.dup2(opened, fd)
                os.close(opened)
            # pytest's capture replaced sys.stdout/sys.stderr: bind them to the files, as a fresh process has them
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", closefd=False)
            for name, value in env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            import torch

            torch.set_num_threads(1)  # as the subprocesses' OMP_NUM_THREADS=1, whatever an earlier test left set
            status = target() or 0
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, (int, type(None))):
                print(e.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - reported like an interpreter's uncaught exception
            traceback.print_exc()
            status = 1
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(status)

    def poll(self) -> int | None:
        """The exit status once the child has ended (-N for signal N), else None."""
        if self.status is None:
            done, status = os.waitpid(self.pid, os.WNOHANG)
            if done:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status

    def kill(self) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
            self.status = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])

    def result(self) -> Finished:
        """Its outcome (it must have ended); the temporary files go."""
        assert self.status is not None
        finished = Finished(self.args, self.status, self._out.read_text(), self._err.read_text())
        self._tmp.cleanup()
        return finished


def wait_all(children: list[Forked], timeout: float) -> list[Finished]:
    """Wait for every child; once one fails, or past `timeout` seconds (subprocess.TimeoutExpired), the others
    are killed (ranks waiting for a dead peer would wait for good)."""
    deadline = time.monotonic() + timeout
    while any(c.poll() is None for c in children):
        failed = any(c.poll() not in (None, 0) for c in children)
        if failed or time.monotonic() > deadline:
            for c in children:
                c.kill()
            if not failed:
                stderr = "\n".join(c.result().stderr for c in children)
                raise subprocess.TimeoutExpired(children[0].args, timeout, stderr)
        time.sleep(0.02)
    return [c.result() for c in children]


def forked_main(argv, *, fault: str | None = None, timeout: float = 240) -> Finished:
    """Run `zsq-probe <argv>` in a forked child; `fault`: its ``$ZSQ_PROBE_FAULT`` (unset when None).  Raises
    subprocess.TimeoutExpired (after killing the child) past `timeout` seconds."""
    from zsq_probe.cli import main

    argv = [str(a) for a in argv]
    (finished,) = wait_all([Forked(lambda: main(argv), env={FAULT_ENV: fault}, args=argv)], timeout)
    return finished


def main_in_process(argv) -> Finished:
    """Run `zsq-probe <argv>` in this process with one intra-op thread (what the forked and fresh processes
    run), its output captured; the thread count comes back afterwards."""
    import torch

    from zsq_probe.cli import main

    argv = [str(a) for a in argv]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
            status = main(argv)
    finally:
        torch.set_num_threads(threads)
    return Finished(argv, status, out.getvalue(), err.getvalue())
