"""Running a recipe: plan its jobs, train them, draw its figures, build its table.

    plan = plan_recipe("tab2", "tiny", seeds=1)     # validates every config; raises UserError
    result = run_plan(plan)                         # or: run_recipe("tab2", "tiny", seeds=1)
    print(result.table)

Nothing here prints: progress goes to the ``zsq_probe.recipes`` loggers, the table is returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zsq_probe.errors import UserError
from zsq_probe.executors import JobOutcome, failures, run_jobs
from zsq_probe.recipes.catalog import load_recipe
from zsq_probe.recipes.estimates import jobs_hours
from zsq_probe.recipes.figures import draw_figures, figure_command, first_seed_jobs
from zsq_probe.recipes.jobs import Job, check_existing, plan, unique_jobs
from zsq_probe.recipes.specs import PAPER_SCALE, Recipe
from zsq_probe.recipes.tables import report_table
from zsq_probe.rundir.output import RECIPE_NAMES, check_output, record_output

if TYPE_CHECKING:
    from zsq_probe.rundir.store import PathArg

MAX_SEEDS = 1000  # a count of seeds (0..N-1) every run of a recipe is planned with; the paper's tables use 3 or 5


@dataclass
class RecipePlan:
    """A recipe at one scale: its jobs and output folder, every config resolved and checked."""

    recipe: Recipe
    scale: str
    out: Path
    jobs: list[Job]

    @property
    def name(self) -> str:
        """The recipe's name."""
        name: str = self.recipe["name"]
        return name


@dataclass
class RecipeResult:
    """What running a plan gave: the failed runs, the number of failed figures, the table (None when the
    recipe has none) and where it was written."""

    plan: RecipePlan
    failures: list[tuple[Job, str]] = field(default_factory=list)
    figures_failed: int = 0
    table: str | None = None
    table_path: Path | None = None
    outcomes: list[JobOutcome] = field(default_factory=list)  # one per distinct run: zsq_probe.executors states

    @property
    def ok(self) -> bool:
        """Whether every run and figure succeeded."""
        return not self.failures and not self.figures_failed


def default_out(recipe: Recipe, scale: str) -> Path:
    """Where a recipe's output goes by default.

    Args:
        recipe: The recipe.
        scale: The scale it runs at.

    Returns:
        runs/<name> (runs/<name>-tiny, runs/<name>-laptop at those scales).
    """
    return Path(f"runs/{recipe['name']}" + ("" if scale == PAPER_SCALE else f"-{scale}"))


def plan_recipe(
    recipe: str | Recipe,
    scale: str = PAPER_SCALE,
    out: PathArg | None = None,
    *,
    seeds: int | Sequence[int] | None = None,
    only: Sequence[str] | None = None,
    sets: Sequence[str] = (),
    device: str | None = None,
    data_root: str | None = None,
    weights_root: str | None = None,
    download: bool = False,
    weights: str | None = None,
) -> RecipePlan:
    """Plan `recipe` at `scale`.

    Every config is resolved and validated, and folders holding a run of another config are refused, before
    anything runs.

    Args:
        recipe: A name such as 'tab2', or a RECIPE dict.
        scale: PAPER_SCALE, TINY_SCALE or LAPTOP_SCALE.
        out: The output folder (default :func:`default_out`).
        seeds: A count N (seeds 0..N-1) or a list (default: the recipe's).
        only: fnmatch patterns on run ids.
        sets: key=value overrides for every run.
        device: The device every run trains on.
        data_root: The data sets' folder.
        weights_root: The teachers' weights folder.
        download: Download missing data sets.
        weights: The teacher's weights file (laptop scale).

    Returns:
        The plan.

    Raises:
        UserError: An argument, a config or the output folder is refused.
    """
    recipe = load_recipe(recipe) if isinstance(recipe, str) else recipe
    if isinstance(seeds, int):
        if not 1 <= seeds <= MAX_SEEDS:
            raise UserError(f"--seeds must be in [1, {MAX_SEEDS}] (seeds 0..N-1 of every run), got {seeds}")
        seeds = list(range(seeds))
    out = Path(out or default_out(recipe, scale)).expanduser()
    check_output(out, "recipe", own=RECIPE_NAMES, resume=True)  # its own earlier output is resumed
    jobs = plan(recipe, scale, out, seeds, only, sets, device, data_root, weights_root, download, weights)
    for j in unique_jobs(jobs):
        j.config()
    check_existing(jobs)
    return RecipePlan(recipe, scale, out, jobs)


def run_plan(
    plan: RecipePlan,
    *,
    metric: str = "best",
    fmt: str = "png",
    train: bool = True,
    progress: bool = False,
    executor: str = "local",
    executor_options: dict[str, Any] | None = None,
) -> RecipeResult:
    """Train the plan's runs, draw its figures, build its table; a failed run or figure does not stop the rest.

    Jobs submitted and not waited for (slurm, wait=False) leave the figures and table for a later
    `train=False` call.

    Args:
        plan: The plan.
        metric: The table's top-1: 'best' or 'final'.
        fmt: The figures' file format.
        train: Train the runs; False: use what exists.
        progress: Show the trainer's progress bar.
        executor: 'local' (default; one worker trains in this process as always, more run side by side),
            'ray' or 'slurm'.
        executor_options: Options of the executor (zsq_probe.executors.run_jobs).

    Returns:
        What it gave: failures, figures failed, the table.

    Raises:
        UserError: The executor or its options are refused.
    """
    recipe = plan.recipe
    result = RecipeResult(plan)
    record_output(plan.out, "recipe", RECIPE_NAMES)
    if train:
        options = dict(executor_options or {})
        if executor == "local":
            options.setdefault("progress", progress)
        result.outcomes = run_jobs(plan.jobs, executor, **options)
        result.failures = failures(plan.jobs, result.outcomes)
        if any(o["state"] == "submitted" for o in result.outcomes):
            return result
    if recipe.get("figures"):
        result.figures_failed = draw_figures(recipe, plan.jobs, plan.out, plan.scale, fmt)
    if recipe.get("table"):
        result.table = report_table(recipe, plan.jobs, plan.out, plan.scale, metric)
        result.table_path = plan.out / "tables" / f"{recipe['name']}.txt"
    return result


def run_recipe(
    recipe: str | Recipe,
    scale: str = PAPER_SCALE,
    out: PathArg | None = None,
    *,
    seeds: int | Sequence[int] | None = None,
    only: Sequence[str] | None = None,
    sets: Sequence[str] = (),
    device: str | None = None,
    data_root: str | None = None,
    weights_root: str | None = None,
    download: bool = False,
    weights: str | None = None,
    metric: str = "best",
    fmt: str = "png",
    train: bool = True,
    progress: bool = False,
    executor: str = "local",
    executor_options: dict[str, Any] | None = None,
) -> RecipeResult:
    """:func:`plan_recipe` then :func:`run_plan`, each with its own arguments (documented there).

    Returns:
        What :func:`run_plan` gave.

    Raises:
        UserError: Planning or running refused an argument.
    """
    planned = plan_recipe(
        recipe,
        scale,
        out,
        seeds=seeds,
        only=only,
        sets=sets,
        device=device,
        data_root=data_root,
        weights_root=weights_root,
        download=download,
        weights=weights,
    )
    return run_plan(
        planned,
        metric=metric,
        fmt=fmt,
        train=train,
        progress=progress,
        executor=executor,
        executor_options=executor_options,
    )


def dry_run_text(plan: RecipePlan, fmt: str = "png", progress: bool = False) -> str:
    """The `zsq-probe` commands equivalent to running the plan (finished runs commented out)."""
    recipe, jobs = plan.recipe, plan.jobs
    lines = [f"# {recipe['name']}: {recipe['paper']} — {recipe['title']}  (scale {plan.scale})"]
    todo = unique_jobs(jobs)
    done = sum(1 for j in todo if j.status() == "done")
    lines.append(f"# {len(todo)} run(s), {done} finished already")
    if plan.scale == PAPER_SCALE:
        lines.append(
            f"# rough single-GPU estimate for these runs: ~{jobs_hours(jobs):.0f} h "
            f"(zsq_probe/recipes/estimates.py; not a measurement)"
        )
    for j in todo:
        lines.append(f"# done, skipped: {j.command(progress)}" if j.status() == "done" else j.command(progress))
    for entry in recipe.get("figures", []):
        paths = [j.path for j in first_seed_jobs(entry, jobs)]  # (the runs need not exist yet)
        if paths:
            lines.append(figure_command(entry, paths, plan.out / "figures" / recipe["name"], plan.scale, fmt))
    if recipe.get("table"):
        lines.append(
            f"# then: print {recipe['table']['title'].split('.')[0]} (mean ± std over seeds beside the "
            f"paper) into {plan.out / 'tables' / (recipe['name'] + '.txt')}"
        )
    return "\n".join(lines)
