"""Running a recipe: plan its jobs, train them, draw its figures, build its table.

    plan = plan_recipe("tab2", "tiny", seeds=1)     # validates every config; raises UserError
    result = run_plan(plan)                         # or: run_recipe("tab2", "tiny", seeds=1)
    print(result.table)

Nothing here prints: progress goes to the ``zsq_probe.recipes`` loggers, the table is returned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from zsq_probe.errors import UserError
from zsq_probe.executors import failures, run_jobs
from zsq_probe.recipes.catalog import load_recipe
from zsq_probe.recipes.estimates import jobs_hours
from zsq_probe.recipes.figures import draw_figures, figure_command, first_seed_jobs
from zsq_probe.recipes.jobs import Job, check_existing, plan, unique_jobs
from zsq_probe.recipes.specs import PAPER_SCALE
from zsq_probe.recipes.tables import report_table
from zsq_probe.rundir.output import RECIPE_NAMES, check_output, record_output


@dataclass
class RecipePlan:
    """A recipe at one scale: its jobs and output folder, every config resolved and checked."""

    recipe: dict
    scale: str
    out: Path
    jobs: list[Job]

    @property
    def name(self) -> str:
        """The recipe's name."""
        return self.recipe["name"]


@dataclass
class RecipeResult:
    """What running a plan gave: the failed runs, the number of failed figures, the table (None when the
    recipe has none) and where it was written."""

    plan: RecipePlan
    failures: list[tuple[Job, str]] = field(default_factory=list)
    figures_failed: int = 0
    table: str | None = None
    table_path: Path | None = None
    outcomes: list[dict] = field(default_factory=list)  # one per distinct run: zsq_probe.executors states

    @property
    def ok(self) -> bool:
        """Whether every run and figure succeeded."""
        return not self.failures and not self.figures_failed


def default_out(recipe: dict, scale: str) -> Path:
    """runs/<name> (runs/<name>-tiny, runs/<name>-laptop at those scales)."""
    return Path(f"runs/{recipe['name']}" + ("" if scale == PAPER_SCALE else f"-{scale}"))


def plan_recipe(
    recipe,
    scale: str = PAPER_SCALE,
    out=None,
    *,
    seeds=None,
    only=None,
    sets=(),
    device=None,
    data_root=None,
    weights_root=None,
    download=False,
    weights=None,
) -> RecipePlan:
    """Plan `recipe` (a name such as 'tab2', or a RECIPE dict) at `scale` into `out` (default
    :func:`default_out`).  `seeds`: a count N (seeds 0..N-1) or a list (default: the recipe's); `only`:
    fnmatch patterns on run ids; `sets`: key=value overrides for every run.  Every config is resolved and
    validated, and folders holding a run of another config are refused, before anything runs."""
    recipe = load_recipe(recipe) if isinstance(recipe, str) else recipe
    if isinstance(seeds, int):
        if seeds < 1:
            raise UserError(f"--seeds must be >= 1, got {seeds}")
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
    executor_options: dict | None = None,
) -> RecipeResult:
    """Train the plan's runs (`train=False`: use what exists), draw its figures, build its table (top-1
    `metric`: 'best' or 'final'); a failed run or figure does not stop the rest.

    `executor`: 'local' (default; one worker trains in this process as always, more run side by side),
    'ray' or 'slurm', with `executor_options` (zsq_probe.executors.run_jobs).  Jobs submitted and not waited
    for (slurm, wait=False) leave the figures and table for a later `train=False` call."""
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
    recipe,
    scale: str = PAPER_SCALE,
    out=None,
    *,
    seeds=None,
    only=None,
    sets=(),
    device=None,
    data_root=None,
    weights_root=None,
    download=False,
    weights=None,
    metric: str = "best",
    fmt: str = "png",
    train: bool = True,
    progress: bool = False,
    executor: str = "local",
    executor_options: dict | None = None,
) -> RecipeResult:
    """:func:`plan_recipe` then :func:`run_plan`."""
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
