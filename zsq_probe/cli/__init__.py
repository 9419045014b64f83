"""The `zsq-probe` command line: one module of thin handlers per group of commands.

Each command module has `register(subparsers)`, which adds its commands and sets each one's handler
(`handler(args) -> exit status`); COMMAND_MODULES lists them in `--help` order.  A handler parses
flags, calls one library function and prints.  Here, and only here, library errors become one line
on stderr: `UserError` (bad input) exits 2, Ctrl-C 130.  The library logs through `logging`; while a
command runs, INFO lines of the `zsq_probe` loggers print as plain lines on stdout (warnings and errors
on stderr), so a command shows what the library reports.

Handlers import the library where they run: building the parser (`--help`, a mistyped flag) loads only
what the commands' flags need (figure names and formats), not the trainer, probes, data sets or demo.
"""

from __future__ import annotations

import argparse
import sys

from zsq_probe import __version__
from zsq_probe.cli import compare, demo, evaluate, figures, posthoc, presets, recipe, train
from zsq_probe.cli.common import console_logging
from zsq_probe.errors import UserError, one_line

COMMAND_MODULES = (evaluate, presets, train, demo, posthoc, figures, compare, recipe)


def build_parser() -> argparse.ArgumentParser:
    """The `zsq-probe` argument parser: every command module's commands, in COMMAND_MODULES order."""
    parser = argparse.ArgumentParser(
        prog="zsq-probe",
        description="Loss-surface diagnostics for zero-shot quantization (AIT / GDFQ): train, probe, plot.",
    )
    parser.add_argument("--version", action="version", version=f"zsq-probe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv=None) -> int:
    """Run one `zsq-probe` command; returns its exit status (0 ok, 2 bad input, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        with console_logging(quiet=bool(getattr(args, "json", False))):
            return args.handler(args) or 0
    except UserError as e:
        print(f"zsq-probe {args.command}: error: {one_line(e, None, with_type=False)}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only folder, a file where a folder belongs: the system's answer
        what = e.strerror or one_line(e, None, with_type=False) or type(e).__name__
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"zsq-probe {args.command}: error: {what}{where}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"zsq-probe {args.command}: error: out of memory (lower batch_size / probe sizes)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"zsq-probe {args.command}: interrupted", file=sys.stderr)
        return 130
