"""`zsq-probe figures` (every paper figure the runs have data for), and the command line of the
stand-alone figure scripts (`python figures/fig1_cosine.py --runs RUN ... --out DIR`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from zsq_probe.cli.common import add_output_args, console_logging
from zsq_probe.errors import ComputeError, UserError, one_line

HELP = "draw every paper figure the given runs have data for (PNG/PDF)"

# zsq_probe.plots.style's FORMATS (and both) and WIDTHS, spelled here so that the parser (`--help`) loads no
# torch (importing zsq_probe.plots loads the run store); tests/cli/test_cli.py checks that they agree
FORMAT_CHOICES = ("png", "pdf", "png,pdf")
WIDTH_CHOICES = ("column", "text")
THREADS_HELP = "torch CPU threads while it draws (default: torch's own choice; fig6 runs the generators)"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `figures` command."""
    p = subparsers.add_parser("figures", help=HELP, description=HELP)
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN", help="run folders (KD and ZQ runs)")
    p.add_argument("--out", required=True, help="output folder for the figure files")
    p.add_argument(
        "--only", help="comma-separated figure names (fig1,fig2b,fig2c,fig2d,fig3a,fig3bc,fig4,fig5,fig6,fig7_8,fig9)"
    )
    p.add_argument(
        "--format",
        default="png",
        choices=FORMAT_CHOICES,
        metavar="FORMAT",
        help="png (default), pdf (vector) or png,pdf (both); each figure also gets a caption STEM.txt",
    )
    p.add_argument(
        "--width",
        default="text",
        choices=WIDTH_CHOICES,
        help="figure width: column (3.3 in) or text (7 in); fonts are >= 7 pt at that size",
    )
    p.add_argument(
        "--epoch",
        type=int,
        help="snapshot epoch for fig1 (default: the middle epoch all runs share), fig2d and fig6 (default: last)",
    )
    p.add_argument("--epochs", help="epochs for fig3bc/fig4, e.g. 60,350 or 3-12 (default: an early and the last)")
    add_output_args(p, threads=True, threads_help=THREADS_HELP)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the figures an earlier `figures` call wrote into --out, and write beside files it did not "
        "write (never replacing one)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Write the figures asked for from the runs given; exit status 0.  A figure that could not be drawn does not
    stop the others: ComputeError (exit status 1) naming the files written; none to draw: UserError.  Bad
    options (an epoch outside the runs', an unknown figure) are refused before anything is written."""
    from zsq_probe.plots import write_figures  # loads when the command runs (zsq_probe.cli)
    from zsq_probe.plots.catalog import figure_options, planned_files  # loads when the command runs (zsq_probe.cli)
    from zsq_probe.plots.runs import open_runs  # loads when the command runs (zsq_probe.cli)
    from zsq_probe.plots.style import announce_writes, protect  # loads when the command runs (zsq_probe.cli)
    from zsq_probe.rundir.output import (  # loads when the command runs (zsq_probe.cli)
        check_output,
        foreign_entries,
        writing_output,
    )
    from zsq_probe.threads import torch_threads  # loads when the command runs (zsq_probe.cli)

    out = Path(args.out)
    check_output(out, "figures", overwrite=args.overwrite)  # the output policy (zsq_probe.rundir.output)
    parent = next((p for p in [out, *out.parents] if p.exists()), None)
    if parent is not None and not os.access(parent, os.W_OK):
        raise UserError(f"--out {out}: {parent} is not writable")
    runs = open_runs(args.runs)
    figure_options(runs, args.epoch, args.epochs)
    for r in runs:  # a part that is not what its place says: refused before anything is written
        r.check_parts("read")
    planned = planned_files(args.only, args.format)
    foreign = [out / name for name in foreign_entries(out, "figures")]
    with torch_threads(args.threads), protect(foreign), writing_output(out, "figures", planned) as claim:
        with announce_writes(claim):
            written, failed = write_figures(
                runs, out, only=args.only, fmt=args.format, epoch=args.epoch, epochs=args.epochs, width=args.width
            )
    if failed:
        names = ", ".join(Path(p).name for p in written) or "none"
        raise ComputeError(f"{failed} figure(s) failed (see above); written to {args.out}: {names}")
    if not written:
        raise UserError(
            f"no figure written: the runs ({', '.join(args.runs)}) hold none of the data "
            f"the chosen figures need (see the skips above)"
        )
    return 0


def written_names(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """The names of the figure files written and of their caption files.

    Args:
        paths: the figure files written.

    Returns:
        Their names, then the names of those of their caption files (STEM.txt) that exist.
    """
    names = [Path(p).name for p in paths]
    return names + [Path(p).with_suffix(".txt").name for p in paths if Path(p).with_suffix(".txt").is_file()]


def figure_script(name: str, argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """`python figures/<script>.py --runs RUN [RUN ...] --out DIR [--format png|pdf] [--epoch E | --epochs A,B]`
    for figure `name`: prints the files written; a skip or an error is one line on stderr.

    Args:
        name: the figure's name (`zsq_probe.plots.FIGURES`).
        argv: the script's command line (default sys.argv[1:]).
        prog: the program name in usage and messages (default argparse's).

    Returns:
        The exit status: 0, or 2 for a skip or an error.
    """
    from zsq_probe.plots import FIGURES, SkipFigure  # torch: not with zsq_probe.cli (its docstring)
    from zsq_probe.plots.style import FORMATS  # loads when the command runs (zsq_probe.cli)

    figure = FIGURES[name]
    p = argparse.ArgumentParser(prog=prog, description=f"{figure.name}: {figure.description}")
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN", help="run folders")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", default="png", choices=FORMATS)
    p.add_argument("--width", default="text", choices=["column", "text"], help="3.3 in or 7 in wide")
    if "epoch" in figure.options:
        p.add_argument("--epoch", type=int, help="epoch of the snapshot (default: see the description)")
    if "epochs" in figure.options:
        p.add_argument("--epochs", help="epochs to compare, e.g. 60,350 or 3-12")
    args = p.parse_args(argv)
    options = {k: getattr(args, k) for k in figure.options}
    from zsq_probe.plots.catalog import figure_options  # loads when the command runs (zsq_probe.cli)
    from zsq_probe.plots.runs import open_runs  # loads when the command runs (zsq_probe.cli)
    from zsq_probe.plots.style import announce_writes, protect  # loads when the command runs (zsq_probe.cli)
    from zsq_probe.rundir.output import (  # loads when the command runs (zsq_probe.cli)
        check_output,
        foreign_entries,
        writing_output,
    )

    try:
        # one figure per script, several into one folder: the scripts replace their own figures, never a file
        # they did not write (zsq_probe.rundir.output)
        check_output(args.out, "figures", overwrite=True)
        figure_options(args.runs, options.get("epoch"), options.get("epochs"))
        for r in open_runs(args.runs):  # a part that is not what its place says: refused before anything is written
            r.check_parts("read")
        foreign = [Path(args.out) / n for n in foreign_entries(args.out, "figures")]
        planned = [f"{figure.filename}.{args.format}", f"{figure.filename}.txt"]
        with console_logging(), protect(foreign), writing_output(args.out, "figures", planned) as claim:
            with announce_writes(claim):
                paths = figure.plot(args.runs, args.out, args.format, args.width, **options)
    except SkipFigure as e:
        print(f"skipped {name}: {e.reason}", file=sys.stderr)
        return 2
    except UserError as e:
        print(f"{name}: error: {one_line(e, None, with_type=False)}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0
