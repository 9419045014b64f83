"""What several commands share: the teacher flags, and the console logging a command runs under."""

from __future__ import annotations

import contextlib
import logging
import sys

DEFAULT_TEACHER = "digits"


def add_teacher_args(p, data: bool = True) -> None:
    """Add the teacher flags (--teacher, --weights, --weights-root, --download), with `data` --data and
    --data-root, and --device to the parser `p`."""
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


class ConsoleHandler(logging.Handler):
    """Log records as bare message lines: below WARNING on stdout, WARNING and above on stderr.

    The streams are looked up for every record (not kept), so redirected or captured output sees them.
    """

    def __init__(self, hide: str | None = None):
        super().__init__()
        self.hide = hide  # INFO lines of loggers under this name are not shown (e.g. the per-epoch lines)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record's message as one line on stdout (below WARNING) or stderr."""
        if self.hide and record.levelno < logging.WARNING and record.name.startswith(self.hide):
            return
        try:
            stream = sys.stdout if record.levelno < logging.WARNING else sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must not raise
            self.handleError(record)


@contextlib.contextmanager
def console_logging(quiet: bool = False, hide: str | None = None):
    """While inside: the `zsq_probe` loggers print INFO and above (WARNING and above when `quiet`, e.g.
    for --json output; without the INFO lines of loggers under `hide`) through a ConsoleHandler.  The
    previous level and handlers come back afterwards."""
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
