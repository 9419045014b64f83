"""The `zsq-probe` command line: one module of thin handlers per group of commands.

Each command module has `register(subparsers)`, which adds its commands and sets each one's handler
(`handler(args) -> exit status`); COMMAND_MODULES lists them in `--help` order.  A handler parses
flags, calls one library function and prints its result.  Here, and only here, library errors become one
line on stderr, with the exit status (docs/cli.md, "Exit codes"): 0 success; 1 a run failed while computing
(`ComputeError`: a non-finite stop, a figure that could not be drawn; a recipe with a failed job); 2 bad
input (`UserError`, a system error such as a full disk); 130 SIGINT (Ctrl-C); 143 SIGTERM (128 + the
signal's number for another stop signal, SIGUSR1: 138).

Output: stdout carries the command's result alone (a table, JSON, a run summary), so `--json | jq .` and
`> table.txt` work; the library's log lines (INFO and above, WARNING and above with --quiet) and the progress
bars go to stderr.  Every command has --quiet, --progress / --no-progress (bars by default only when stderr
is a terminal) and --threads N (zsq_probe.cli.common; `presets` computes nothing and only checks it).

Handlers import the library where they run: building the parser (`--help`, a mistyped flag) loads no torch
(tests/cli/test_cli.py checks it), nor the trainer, probes, data sets or demo.
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Sequence

from zsq_probe.cli import compare, demo, evaluate, figures, posthoc, presets, recipe, train
from zsq_probe.cli.common import (
    check_device,
    check_flag_sense,
    check_no_empty_values,
    check_paths,
    check_threads,
    console_logging,
    interrupted_status,
    sigterm_raises,
)
from zsq_probe.errors import ComputeError, UserError, one_line
from zsq_probe.version import __version__

COMMAND_MODULES = (evaluate, presets, train, demo, posthoc, figures, compare, recipe)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr (`zsq-probe train: error: argument --threads: invalid int
    value: 'x'`) and exit status 2, like every other bad input; `--help` still prints the usage."""

    def error(self, message: str) -> typing.NoReturn:
        """Print `PROG: error: MESSAGE` and exit 2."""
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def build_parser() -> argparse.ArgumentParser:
    """The `zsq-probe` argument parser: every command module's commands, in COMMAND_MODULES order."""
    parser = OneLineParser(
        prog="zsq-probe",
        description="Loss-surface diagnostics for zero-shot quantization (AIT / GDFQ): train, probe, plot.",
    )
    parser.add_argument("--version", action="version", version=f"zsq-probe {__version__}")
    sub = parser.add_subparsers(
        parser_class=OneLineParser,
        dest="command",
        metavar="COMMAND",
        required=True,
        help="the command (zsq-probe COMMAND --help: its flags)",
    )
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `zsq-probe` command.

    Args:
        argv: the command line after `zsq-probe` (default sys.argv[1:]).

    Returns:
        The exit status: 0 ok, 1 failed while computing, 2 bad input, 130 SIGINT, 143 SIGTERM.
    """
    args = build_parser().parse_args(argv)
    try:
        with sigterm_raises(), console_logging(quiet=bool(getattr(args, "quiet", False))):
            check_no_empty_values(args)
            check_flag_sense(args)
            check_paths(args)
            check_threads(args)
            check_device(args)
            status: int = args.handler(args) or 0
            return status
    except ComputeError as e:
        print(f"zsq-probe {args.command}: error: {one_line(e, None, with_type=False)}", file=sys.stderr)
        return 1
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
    except KeyboardInterrupt as e:
        status, text = interrupted_status(e)
        print(f"zsq-probe {args.command}: {text}", file=sys.stderr)
        return status
