"""`zsq-probe recipe NAME` and the analyses/ scripts: run one paper experiment from its recipe.

``analyses/__main__.py`` (``python -m analyses NAME ...``) and each ``analyses/<recipe>.py`` script call
:func:`main`; ``zsq-probe recipe`` mounts :func:`add_arguments` and :func:`run_command`.  Progress
lines come from the ``zsq_probe`` loggers, shown on stderr while :func:`main` runs; the table, the
listing and the dry run are the command's output on stdout; errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any

from zsq_probe.cli.common import add_output_args, console_logging, interrupted_status, show_progress, sigterm_raises
from zsq_probe.config import max_workers, usable_cpus
from zsq_probe.errors import ComputeError, UserError, one_line
from zsq_probe.executors import EXECUTORS, report_text
from zsq_probe.recipes.catalog import RECIPES, recipe_listing
from zsq_probe.recipes.runner import dry_run_text, plan_recipe, run_plan
from zsq_probe.recipes.specs import PAPER_SCALE, SCALES
from zsq_probe.recipes.tables import METRICS

DESCRIPTION = (
    "Run one paper experiment (figure or table) from its recipe: train every run and seed (finished "
    "runs are skipped, partial ones resumed), draw its figures, print its table beside the paper's values."
)


def add_arguments(p: argparse.ArgumentParser, recipe: str | None = None) -> argparse.ArgumentParser:
    """The command's options; with `recipe` given (a script for one recipe) there is no NAME argument."""
    if recipe is None:
        p.add_argument("name", help=f"recipe: {' '.join(RECIPES)}, or 'list'")
    else:
        p.set_defaults(name=recipe)
    p.add_argument(
        "--scale",
        choices=SCALES,
        default=PAPER_SCALE,
        help="paper: the paper's teachers and schedule (GPU, data on disk); tiny: each run's stand-in "
        "on the embedded digits teacher (2 CPU cores); laptop: the ResNet-20 / CIFAR-10 runs on real data, "
        "scaled to 2 CPU cores (docs/real-data.md)",
    )
    p.add_argument(
        "--out",
        help="output folder (default runs/<name>, runs/<name>-tiny at tiny scale); point "
        "several recipes at one folder to share their common runs",
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default cpu)")
    p.add_argument("--data-root", help="folder with CIFAR-10/100 (torchvision layout) / ImageNet (image folder)")
    p.add_argument("--weights-root", help="pytorchcv weight cache (default ~/.torch/models)")
    p.add_argument("--weights", help="the teacher's weights file (--scale laptop: a state dict of resnet20_cifar10)")
    p.add_argument("--download", action="store_true", help="let zsq-probe download missing weights/data")
    p.add_argument("--seeds", type=int, help="use seeds 0..N-1 (default: the recipe's, 3 for tables)")
    p.add_argument("--only", help="comma-separated fnmatch patterns on run ids: train/report only these runs")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every run (applied before each run's own overrides)",
    )
    p.add_argument(
        "--metric",
        choices=tuple(METRICS),
        default="best",
        help="top-1 reported in tables: best over epochs (as the reference code logs) or final",
    )
    p.add_argument("--format", choices=("png", "pdf"), default="png", help="figure file format")
    p.add_argument("--dry-run", action="store_true", help="print the zsq-probe commands, run nothing")
    p.add_argument("--no-train", action="store_true", help="only draw figures / print the table from existing runs")
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="also log live curves of every run to RUN/tensorboard (extra [tensorboard])",
    )
    add_output_args(p)  # --threads: with the executors' flags
    add_executor_arguments(p)
    return p


def add_executor_arguments(p: argparse.ArgumentParser) -> None:
    """Where the jobs run: zsq_probe.executors (docs/recipes.md: "Run a recipe on a cluster")."""
    g = p.add_argument_group("executors", "where the runs train (finished runs are skipped, partial ones resumed)")
    g.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local: workers on this machine (default); ray: Ray tasks (extra [ray]); slurm: a submitit "
        "job array (extra [slurm])",
    )
    g.add_argument(
        "--workers",
        type=int,
        help="local: jobs side by side (default: one per --devices entry, else 1 in this process)",
    )
    g.add_argument("--devices", help="local: comma-separated devices the workers are pinned to (cuda:0,cuda:1,...)")
    g.add_argument("--threads", type=int, help="torch threads per job (local default: the CPUs shared among workers)")
    g.add_argument("--ray-address", help="ray: join this cluster ('auto', 'ray://host:10001'); default a local one")
    g.add_argument("--cpus-per-job", type=float, help="ray/slurm: CPUs each job requests (default 1)")
    g.add_argument("--gpus-per-job", type=float, help="ray/slurm: GPUs each job requests (default 0)")
    g.add_argument("--mem-per-job", type=float, metavar="GB", help="ray/slurm: memory each job requests (GB)")
    g.add_argument("--max-retries", type=int, default=3, help="ray: runs of a job after worker/node loss (default 3)")
    g.add_argument("--partition", help="slurm: partition")
    g.add_argument(
        "--time",
        type=int,
        metavar="MINUTES",
        help="slurm: time limit of each job (default 60); a job that runs out is requeued and resumes",
    )
    g.add_argument("--account", help="slurm: account to charge")
    g.add_argument("--array-parallelism", type=int, help="slurm: array elements running at once")
    g.add_argument("--slurm-config", help="slurm: JSON (or TOML) file of these settings; flags win")
    g.add_argument("--no-wait", action="store_true", help="slurm: submit and return (then --no-train for the table)")


# numeric flags: (attribute, flag, smallest value, largest value or None for max_workers(), why that bound); None
# (unset) takes the executor's default.  The largest values are past any machine or cluster job there is.
_NUMERIC_FLAGS = (
    ("workers", "--workers", 1, None, ""),
    ("threads", "--threads", 1, None, ""),
    ("cpus_per_job", "--cpus-per-job", 1, 4096, " (no machine has more CPUs)"),
    ("gpus_per_job", "--gpus-per-job", 0, 64, " (no machine has more GPUs)"),
    ("mem_per_job", "--mem-per-job", 0.001, 65536, " GB (64 TB: no machine has more memory)"),
    ("max_retries", "--max-retries", 0, 1000, ""),
    ("time", "--time", 1, 525_600, " minutes (a year)"),
    ("array_parallelism", "--array-parallelism", 1, 100_000, ""),
)


def check_numeric_flags(args: argparse.Namespace) -> None:
    """Refuse (one line) a numeric flag outside its range, or not finite, before anything is planned.

    Args:
        args: the parsed flags.

    Raises:
        UserError: naming the flag, its range and the value given.
    """
    for attr, flag, least, most, why in _NUMERIC_FLAGS:
        value = getattr(args, attr, None)
        if most is None:
            most, why = max_workers(), f" (4 x the {usable_cpus()} CPU(s) this process may use)"
        if value is not None and (not math.isfinite(value) or not least <= value <= most):
            raise UserError(f"{flag} must be in [{least}, {most}]{why}, got {value}")


def executor_options(args: argparse.Namespace) -> dict[str, Any]:
    """run_jobs options from the flags.

    Args:
        args: the parsed flags (--executor picks which options).

    Returns:
        The options of that executor (None for an unset flag: the executor's default).
    """
    tb = True if args.tensorboard else None
    if args.executor == "local":
        return {"workers": args.workers, "devices": args.devices, "threads": args.threads, "tensorboard": tb}
    if args.executor == "ray":
        return {
            "address": args.ray_address,
            "cpus_per_job": args.cpus_per_job,
            "gpus_per_job": args.gpus_per_job,
            "memory_gb": args.mem_per_job,
            "max_retries": args.max_retries,
            "threads": args.threads,
            "tensorboard": tb,
        }
    gpus = args.gpus_per_job
    return {
        "partition": args.partition,
        "time": args.time,
        "account": args.account,
        "gpus_per_job": None if gpus is None else int(gpus),
        "cpus_per_job": None if args.cpus_per_job is None else int(args.cpus_per_job),
        "mem_gb": args.mem_per_job,
        "array_parallelism": args.array_parallelism,
        "config_file": args.slurm_config,
        "wait": not args.no_wait,
        "threads": args.threads,
        "tensorboard": tb,
        "name": f"zsq-{args.name}",
    }


def build_parser(recipe: str | None = None, prog: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of one recipe's command.

    Args:
        recipe: the recipe of a script for one recipe (no NAME argument); None for `python -m analyses`.
        prog: the program name (default 'python -m analyses').

    Returns:
        The parser.
    """
    return add_arguments(argparse.ArgumentParser(prog=prog or "python -m analyses", description=DESCRIPTION), recipe)


def run_command(args: argparse.Namespace) -> int:
    """Run parsed arguments and print the table (or listing, or dry run).  Progress is logged: run it under
    :func:`console_logging`.

    Args:
        args: the parsed flags (`add_arguments`).

    Returns:
        0 when everything ran (or was submitted), 1 when a run or figure failed.

    Raises:
        UserError: bad flags, an unknown recipe, a run that cannot be planned.
    """
    if args.name == "list":
        print(recipe_listing())
        return 0
    check_numeric_flags(args)
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    plan = plan_recipe(
        args.name,
        args.scale,
        args.out,
        seeds=args.seeds,
        only=only,
        sets=args.set,
        device=args.device,
        data_root=args.data_root,
        weights_root=args.weights_root,
        download=args.download,
        weights=args.weights,
    )
    if args.dry_run:
        print(dry_run_text(plan, args.format, show_progress(args)))
        return 0
    result = run_plan(
        plan,
        metric=args.metric,
        fmt=args.format,
        train=not args.no_train,
        progress=show_progress(args),
        executor=args.executor,
        executor_options=executor_options(args),
    )
    if result.outcomes:  # the final report: every run's state
        print()
        print(report_text(result.outcomes))
    if any(o["state"] == "submitted" for o in result.outcomes):
        print("\nsubmitted; once the jobs are done: the same command with --no-train for the figures and table")
        return 0
    if result.table is not None:
        print()
        print(result.table)
        print(f"\n(written to {result.table_path} and .csv)")
    if result.failures:
        print(f"\n{len(result.failures)} run(s) failed:", file=sys.stderr)
        for job, msg in result.failures:
            print(f"  {job.id} seed {job.seed}: {msg}", file=sys.stderr)
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None, recipe: str | None = None, prog: str | None = None) -> int:
    """Parse `argv` and run; errors become one line on stderr.

    Args:
        argv: the command line (default sys.argv[1:]).
        recipe: the recipe of a script for one recipe (`build_parser`).
        prog: the program name (`build_parser`).

    Returns:
        The exit status: 0 ok, 1 a run failed, 2 bad input, 128 + the signal's number when stopped.
    """
    args = build_parser(recipe, prog).parse_args(argv)
    try:
        with sigterm_raises(), console_logging(quiet=args.quiet):
            return run_command(args)
    except ComputeError as e:  # a failed job is reported by run_command (exit status 1) and never reaches here
        print(f"analyses {args.name}: error: {one_line(e, None, with_type=False)}", file=sys.stderr)
        return 1
    except UserError as e:
        print(f"analyses {args.name}: error: {one_line(e, None, with_type=False)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        status, text = interrupted_status(e)
        print(f"analyses {args.name}: {text} (run it again to resume)", file=sys.stderr)
        return status
    except BrokenPipeError:  # output piped into `head`
        return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `recipe` command."""
    p = subparsers.add_parser(
        "recipe", help="run one paper experiment (figure or table) from its recipe", description=DESCRIPTION
    )
    add_arguments(p)
    p.set_defaults(handler=run_command)
