"""Drawing a recipe's figures from its trained runs through the library's `write_figures`."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zsq_probe.errors import UserError
from zsq_probe.recipes.jobs import Job
from zsq_probe.recipes.specs import PAPER_SCALE, Recipe, format_value

if TYPE_CHECKING:
    from zsq_probe.rundir.store import PathArg

log = logging.getLogger(__name__)

# Figure options that name paper epochs: dropped at tiny scale (the digits scale has 12 epochs).
_EPOCH_OPTIONS = ("epoch", "epochs")


def first_seed_jobs(entry: Mapping[str, Any], jobs: Iterable[Job]) -> list[Job]:
    """The first-seed job of each run a figure entry names (every run when it names none), one per folder.

    Args:
        entry: The recipe's figure entry ("runs": paper run ids, or none).
        jobs: The recipe's jobs.

    Returns:
        The jobs, in the entry's order (else the jobs').
    """
    wanted = entry.get("runs")
    first: dict[str, Job] = {}
    for j in jobs:
        if (wanted is None or j.paper_id in wanted) and j.paper_id not in first:
            first[j.paper_id] = j
    order = wanted if wanted is not None else list(first)
    out: list[Job] = []
    seen: set[Path] = set()
    for pid in order:
        job = first.get(pid)
        if job is not None and job.path not in seen:
            seen.add(job.path)
            out.append(job)
    return out


def figure_runs(entry: Mapping[str, Any], jobs: Iterable[Job]) -> list[Path]:
    """Folders of the figure entry's first-seed runs that hold a run (config.json: finished or partial).

    Args:
        entry: The recipe's figure entry.
        jobs: The recipe's jobs.

    Returns:
        The folders.
    """
    return [j.path for j in first_seed_jobs(entry, jobs) if (j.path / "config.json").is_file()]


def figure_options(entry: Mapping[str, Any], scale: str) -> dict[str, Any]:
    """The entry's figure options at `scale`.

    Paper epochs (200, 60/350) do not exist at tiny scale, so there the figure's default applies.

    Args:
        entry: The recipe's figure entry ("options").
        scale: The scale.

    Returns:
        Option -> value.
    """
    return {k: v for k, v in entry.get("options", {}).items() if scale == PAPER_SCALE or k not in _EPOCH_OPTIONS}


def figure_command(
    entry: Mapping[str, Any], paths: Iterable[PathArg], out_dir: PathArg, scale: str, fmt: str = "png"
) -> str:
    """The equivalent `zsq-probe figures` command line.

    Args:
        entry: The recipe's figure entry.
        paths: The run folders.
        out_dir: Where the figure goes.
        scale: The scale.
        fmt: The file format.

    Returns:
        The command line, quoted for a shell.
    """
    argv = [
        "zsq-probe",
        "figures",
        "--runs",
        *[str(p) for p in paths],
        "--out",
        str(out_dir),
        "--only",
        entry["name"],
        "--format",
        fmt,
    ]
    for key, value in figure_options(entry, scale).items():
        argv += [f"--{key}", format_value(value).replace("+", ",")]
    return shlex.join(argv)


def draw_figures(recipe: Recipe, jobs: list[Job], out: PathArg, scale: str, fmt: str = "png") -> int:
    """Draw each figure entry of the recipe into OUT/figures/<recipe>.

    Args:
        recipe: The recipe.
        jobs: Its jobs.
        out: The output folder OUT.
        scale: The scale they ran at.
        fmt: The file format.

    Returns:
        The number that failed (an error, or no file written).
    """
    from zsq_probe.plots import write_figures  # torch: not on import (zsq_probe.recipes)

    out_dir = Path(out) / "figures" / recipe["name"]
    failed = 0
    for entry in recipe.get("figures", []):
        paths = figure_runs(entry, jobs)
        if not paths:
            log.info("figure %s: skipped (none of its runs were planned or trained)", entry["name"])
            continue
        log.info("$ %s", figure_command(entry, paths, out_dir, scale, fmt))
        try:
            written, n_failed = write_figures(
                paths, out_dir, only=entry["name"], fmt=fmt, **figure_options(entry, scale)
            )
        except UserError as e:
            log.error("figure %s: error: %s", entry["name"], e)
            failed += 1
            continue
        if not n_failed and not written and spans_one_setting(entry["name"], paths):
            log.info("figure %s: skipped (it compares settings and the runs span one)", entry["name"])
            continue
        if n_failed or not written:
            log.error(
                "figure %s: %s",
                entry["name"],
                "failed" if n_failed else "no file written: the runs hold none of the data it needs",
            )
            failed += 1
    return failed


CROSS_SETTING_FIGURES = ("fig7_8", "fig9")  # they compare (data set, model) settings (plots.runs.require_settings)


def spans_one_setting(figure: str, paths: Iterable[PathArg]) -> bool:
    """Whether `figure` compares settings and its runs span one (a tiny-scale recipe, say): a skip, not a failure.

    Args:
        figure: The figure's name.
        paths: Its run folders.

    Returns:
        True when it is one of CROSS_SETTING_FIGURES and the runs hold fewer than two settings.
    """
    from zsq_probe.plots import runs as R  # pandas: not on import (zsq_probe.recipes)

    return figure in CROSS_SETTING_FIGURES and len({R.setting(R.open_run(p)) for p in paths}) < 2
