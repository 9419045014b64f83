"""What several commands share: the teacher flags, the output and thread flags every command has, the console
logging a command runs under (log lines on stderr; stdout carries only the command's result), and how SIGTERM
and Ctrl-C become exit statuses (143, 130)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import NoReturn

from zsq_probe.config import device_available, max_workers, usable_cpus
from zsq_probe.errors import UserError, one_line

DEFAULT_TEACHER = "digits"


def add_teacher_args(p: argparse.ArgumentParser, data: bool = True) -> None:
    """Add the teacher flags (--teacher, --weights, --weights-root, --download), with `data` --data and
    --data-root, and --device to the parser `p`.

    Args:
        p: the command's parser.
        data: also add --data and --data-root.
    """
    # default None, resolved to DEFAULT_TEACHER where a fresh run / evaluation is built: an explicit --teacher
    # can then be told apart (e.g. refused on --resume when it differs from the run's own)
    p.add_argument(
        "--teacher",
        default=None,
        help="pytorchcv model name (resnet20_cifar10, resnet18, ...) or 'digits' (embedded default)",
    )
    p.add_argument("--weights", help="explicit teacher weights file (.pth state dict)")
    p.add_argument("--weights-root", help="pytorchcv weight cache folder (default ~/.torch/models)")
    p.add_argument("--download", action="store_true", help="allow downloading missing weights / data")
    if data:
        p.add_argument("--data", help="data set: digits, cifar10, cifar100, imagenet (default: the teacher's)")
        p.add_argument("--data-root", help="folder holding the data set in its usual on-disk format")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")


def add_output_args(p: argparse.ArgumentParser, threads: bool = False, threads_help: str | None = None) -> None:
    """Add the flags every command has to the parser `p`: --quiet, --progress / --no-progress and, with
    `threads` (a command that computes), --threads N.

    Args:
        p: the command's parser.
        threads: also add --threads N.
        threads_help: the help text of --threads, when not the default one.
    """
    g = p.add_argument_group("output and threads" if threads else "output")
    g.add_argument("--quiet", action="store_true", help="warnings and errors only: no progress lines, no bars")
    g.add_argument(
        "--progress",
        dest="progress",
        action="store_const",
        const=True,
        default=None,
        help="progress bars on stderr even when it is not a terminal (default: bars only on a terminal)",
    )
    g.add_argument(
        "--no-progress", dest="progress", action="store_const", const=False, help="no progress bars, even on a terminal"
    )
    if threads:
        g.add_argument(
            "--threads",
            type=int,
            metavar="N",
            help=threads_help
            or "torch CPU threads (default: torch's own choice); recorded in a run's config.json, results "
            "differ slightly with it (docs/cli.md: Threads)",
        )


def show_progress(args: argparse.Namespace) -> bool:
    """Whether a command draws progress bars: never with --quiet; else --progress / --no-progress, and without
    either only when stderr is a terminal (so logs piped to a file hold no carriage-return frames).

    Args:
        args: the parsed flags (a flag the command lacks counts as not given).

    Returns:
        True when progress bars are drawn.
    """
    if getattr(args, "quiet", False):
        return False
    forced = getattr(args, "progress", None)
    if forced is not None:
        return bool(forced)
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def check_threads(args: argparse.Namespace) -> None:
    """--threads in [1, 4 x the CPUs this process may use] (config.max_workers), checked before anything runs:
    torch segfaults on a huge count.

    Args:
        args: the parsed flags.

    Raises:
        UserError: --threads is outside that range.
    """
    threads = getattr(args, "threads", None)
    if threads is not None and not 1 <= threads <= max_workers():
        raise UserError(
            f"--threads must be in [1, {max_workers()}] (4 x the {usable_cpus()} CPU(s) this process may use), "
            f"got {threads}"
        )


def check_no_empty_values(args: argparse.Namespace) -> None:
    """No flag is an empty string, a list with an empty item or a comma list with an empty item (`--preset ""`,
    `--out ""`, `--probes cosine,,crossings`), checked before anything runs.

    Args:
        args: the parsed flags.

    Raises:
        UserError: naming the first flag with an empty value.
    """
    for key, value in vars(args).items():
        if key in ("handler", "command") or value is None:
            continue
        items = value if isinstance(value, list) else [value]
        for item in items:
            if not isinstance(item, str):
                continue
            parts = item.split(",") if key in COMMA_LISTS else [item]
            if any(not part.strip() for part in parts):
                flag = "--" + key.replace("_", "-")
                raise UserError(f"{flag}: empty value{' or list item' if key in COMMA_LISTS else ''} in {item!r}")


def check_flag_sense(args: argparse.Namespace) -> None:
    """Flags that cannot do what they say: `--force` without `--resume` (it only lets a resume change settings),
    and a `--data-root` for the embedded digits default, which reads none (a mistyped or missing `--teacher`,
    most likely).  A data root of a real data set is checked by its loader, which says what it expected.

    Args:
        args: the parsed flags.

    Raises:
        UserError: one of those flags is given where it does nothing.
    """
    if getattr(args, "force", False) and not getattr(args, "resume", False):
        raise UserError("--force only goes with --resume (it lets a resume change the run's settings)")
    root = getattr(args, "data_root", None)
    teacher, data = getattr(args, "teacher", None), getattr(args, "data", None)
    digits = data == "digits" or (data is None and teacher in (None, DEFAULT_TEACHER) and hasattr(args, "teacher"))
    if root is not None and digits and not getattr(args, "resume", False):
        raise UserError(
            f"--data-root {root}: the embedded digits default reads no data folder (name the teacher with --teacher, "
            f"e.g. resnet20_cifar10)"
        )


COMMA_LISTS = ("probes", "only", "epochs", "format", "kd_seeds", "zq_seeds", "devices")

# folders a command reads: (dest, what the folder holds)
READ_FOLDERS = (("data_root", "the data set"), ("weights_root", "pytorchcv's weight files"))


def check_paths(args: argparse.Namespace) -> None:
    """The folders and files a command reads, checked before anything runs: --data-root and --weights-root are
    folders (a missing one only with --download, which fetches into it), --slurm-config a file.  A fresh `train`
    or `eval` leaves a missing --data-root to its data set's loader, whose message says what it expected there.

    Args:
        args: the parsed flags.

    Raises:
        UserError: naming the flag and what is wrong with its path.
    """
    download = bool(getattr(args, "download", False))
    loader_says = hasattr(args, "teacher") and not getattr(args, "resume", False)  # train / eval: the loader's line
    for dest, holds in READ_FOLDERS:
        value = getattr(args, dest, None)
        if value is None:
            continue
        flag, path = "--" + dest.replace("_", "-"), Path(value).expanduser()
        if path.exists() and not path.is_dir():
            raise UserError(f"{flag} {value}: a file, not a folder (the folder holding {holds})")
        if not path.exists() and not download and not (dest == "data_root" and loader_says):
            fetch = "; --download fetches into a new one" if hasattr(args, "download") else ""
            raise UserError(f"{flag} {value}: no such folder (the folder holding {holds}{fetch})")
    config = getattr(args, "slurm_config", None)
    if config is not None and not Path(config).expanduser().is_file():
        what = "a folder, not a file" if Path(config).expanduser().is_dir() else "no such file"
        raise UserError(f"--slurm-config {config}: {what} (a JSON or TOML file of slurm settings)")


def check_device(args: argparse.Namespace) -> None:
    """--device (and each of `recipe`'s --devices) names a device this torch has; checked before anything runs.

    Args:
        args: the parsed flags.

    Raises:
        UserError: this torch lacks the device ('mps' on a torch without MPS, a CUDA index past the last GPU, ...).
    """
    device = getattr(args, "device", None)
    if device:
        device_available(device)
    for item in (getattr(args, "devices", None) or "").split(","):
        if item.strip():
            try:
                device_available(item.strip())
            except UserError as e:
                raise UserError(f"--devices {args.devices}: {str(e).removeprefix('--device ')}") from None


class ConsoleHandler(logging.Handler):
    """Log records as bare message lines on stderr (stdout is kept for a command's result: a table, JSON).

    The streams are looked up for every record (not kept), so redirected or captured output sees them.
    """

    def __init__(self, hide: str | None = None) -> None:
        super().__init__()
        self.hide = hide  # INFO lines of loggers under this name are not shown (e.g. the per-epoch lines)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record's message as one line on stderr."""
        if self.hide and record.levelno < logging.WARNING and record.name.startswith(self.hide):
            return
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must not raise
            self.handleError(record)


@contextlib.contextmanager
def console_logging(quiet: bool = False, hide: str | None = None) -> Iterator[None]:
    """While inside: the `zsq_probe` loggers print INFO and above on stderr through a ConsoleHandler.  The previous
    level and handlers come back afterwards.

    Args:
        quiet: WARNING and above only (--quiet).
        hide: the INFO lines of loggers under this name are not shown.

    Yields:
        None, while the logging is on.
    """
    logger = logging.getLogger("zsq_probe")
    handler = ConsoleHandler(hide)
    old_level = logger.level
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived outside training (where the trainer stops after the epoch's checkpoint instead)."""

    signame = "SIGTERM"


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While inside (main thread only): SIGTERM raises Terminated, so a command ends with its message and exit
    status 143 and `finally` blocks (locks, temporary files) run; the previous handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> NoReturn:
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def interrupted_status(e: KeyboardInterrupt) -> tuple[int, str]:
    """The exit status and message of a stop.

    Args:
        e: the KeyboardInterrupt (Ctrl-C) or its subclass for a stop signal (a `signame` attribute).

    Returns:
        (exit status, message): 130 for Ctrl-C, 128 + the signal's number for a stop signal (SIGTERM: 143); the
        message is the trainer's "stopped by ... resume to continue" when training stopped.
    """
    name = getattr(e, "signame", None) or "SIGINT"
    number = getattr(signal, name, signal.SIGINT)
    default = "interrupted" if name == "SIGINT" else f"stopped by {name}"
    text = one_line(e, None, with_type=False) if str(e) else default
    return 128 + int(number), text
