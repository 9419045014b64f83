"""Planning: a recipe at one scale becomes jobs (zsq_probe.executors.job), one per (run, seed), each with its
run folder and config.

Output layout under ``OUT``::

    OUT/runs/<run-id>-s<seed>/         one zsq-probe run folder per run and seed
    OUT/figures/<recipe>/*.png         the recipe's figures
    OUT/tables/<recipe>.txt, .csv      the printed table and its long form (one line per cell)
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zsq_probe.errors import UserError
from zsq_probe.executors.job import Job, config_conflict, unique_jobs
from zsq_probe.presets import LAPTOP_SCALE_SETTINGS
from zsq_probe.recipes.specs import LAPTOP_SCALE, PAPER_SCALE, SCALES, TINY_SCALE, Recipe, RunSpec, scaled_specs

if TYPE_CHECKING:
    from zsq_probe.rundir.store import PathArg

__all__ = ["Job", "check_existing", "config_conflict", "plan", "unique_jobs"]


def _assignment(key: str, value: object) -> str:
    if isinstance(value, (list, tuple)):
        return f"{key}={','.join(str(v) for v in value)}"
    return f"{key}={value}"


def scale_sets(scale: str) -> list[str]:
    """The `--set` assignments a scale puts before every run's own (laptop: presets.LAPTOP_SCALE_SETTINGS)."""
    return [_assignment(k, v) for k, v in LAPTOP_SCALE_SETTINGS.items()] if scale == LAPTOP_SCALE else []


def plan(
    recipe: Recipe,
    scale: str = PAPER_SCALE,
    out: PathArg = "runs",
    seeds: Sequence[int] | None = None,
    only: Sequence[str] | None = None,
    sets: Sequence[str] = (),
    device: str | None = None,
    data_root: str | None = None,
    weights_root: str | None = None,
    download: bool = False,
    weights: str | None = None,
) -> list[Job]:
    """Every (run, seed) of the recipe at `scale`, each with its folder OUT/runs/<id>-s<seed>.

    Runs that two paper ids share at tiny scale are planned once.

    Args:
        recipe: The recipe.
        scale: PAPER_SCALE, TINY_SCALE or LAPTOP_SCALE.
        out: The output folder OUT.
        seeds: The seeds (default: the recipe's, or its tiny seeds at tiny scale).
        only: fnmatch patterns on run ids (the paper id or the trained stand-in's id).
        sets: key=value config overrides for every run, applied before each run's own (at laptop scale after
            presets.LAPTOP_SCALE_SETTINGS).
        device: The device every run trains on.
        data_root: The data sets' folder (not at tiny scale).
        weights_root: The teachers' weights folder (not at tiny scale).
        download: Download missing data sets (not at tiny scale).
        weights: The teacher's weights file (laptop scale: its one teacher).

    Returns:
        The jobs, by run and seed.

    Raises:
        UserError: A bad scale, no seeds, `weights` at a scale with several teachers, or `only` matching no run.
    """
    seeds = _checked_seeds(recipe, scale, seeds, weights)
    specs = scaled_specs(recipe, scale)
    if only:
        specs = _only_specs(recipe, specs, only)
    shared = {"device": device, **_folder_flags(scale, data_root, weights_root, download, weights)}
    out = Path(out)
    jobs: list[Job] = []
    seen: dict[tuple[str, int], Job] = {}
    for pid, spec in specs.items():
        for seed in seeds:
            key = (spec["id"], seed)
            if key in seen:
                jobs.append(Job(pid, spec, seed, seen[key].path, seen[key].flags, seen[key].sets))
                continue
            seen[key] = _new_job(pid, spec, seed, out / "runs", scale_sets(scale) + list(sets), shared)
            jobs.append(seen[key])
    return jobs


def _new_job(pid: str, spec: RunSpec, seed: int, runs: Path, sets: list[str], shared: dict[str, Any]) -> Job:
    """A job in a folder of its own, runs/<id>-s<seed>: the spec's bits and probes, the seed, the `shared` flags
    (device, data and weight folders); `sets`, then the spec's own overrides, as --set assignments."""
    flags: dict[str, Any] = {
        "w_bits": spec["w_bits"],
        "a_bits": spec["a_bits"],
        "seed": seed,
        "probes": list(spec["probes"]),
        **shared,
    }
    run_sets = sets + [_assignment(k, v) for k, v in spec["overrides"].items()]
    return Job(pid, spec, seed, runs / f"{spec['id']}-s{seed}", flags, run_sets)


def _only_specs(recipe: Recipe, specs: dict[str, RunSpec], only: Sequence[str]) -> dict[str, RunSpec]:
    """The specs whose paper id or trained id matches an fnmatch pattern of `only`; UserError when none does."""
    kept = {
        pid: s
        for pid, s in specs.items()
        if any(fnmatch.fnmatchcase(pid, p) or fnmatch.fnmatchcase(s["id"], p) for p in only)
    }
    if not kept:
        raise UserError(f"--only {','.join(only)} matches none of {recipe['name']}'s runs; `--dry-run` lists their ids")
    return kept


def _folder_flags(
    scale: str, data_root: str | None, weights_root: str | None, download: bool, weights: str | None
) -> dict[str, Any]:
    """The data and weight flags of every job at `scale`."""
    flags: dict[str, Any] = {}
    if scale != TINY_SCALE:  # digits is embedded: no data or weight folders at tiny scale
        flags.update(data_root=data_root, weights_root=weights_root, download=download or None)
    if scale == LAPTOP_SCALE:
        flags.update(weights=weights)
    return flags


def _checked_seeds(recipe: Recipe, scale: str, seeds: Sequence[int] | None, weights: str | None) -> list[int]:
    """The seeds to plan (the recipe's, or its tiny ones, when None); UserError for a bad scale, no seeds or
    `weights` at a scale with several teachers."""
    if scale not in SCALES:
        raise UserError(f"--scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if weights is not None and scale != LAPTOP_SCALE:
        raise UserError("--weights names one teacher's file: only --scale laptop has one teacher")
    if seeds is None:
        seeds = (recipe.get("tiny", {}).get("seeds") if scale == TINY_SCALE else None) or recipe["seeds"]
    if not list(seeds):
        raise UserError("no seeds: --seeds must be >= 1")
    return list(seeds)


def check_existing(jobs: list[Job]) -> None:
    """Refuse, before anything runs, folders that hold runs of another config (another --set, an edited
    recipe): their results would be reported as this recipe's."""
    bad = [m for m in (config_conflict(j) for j in unique_jobs(jobs)) if m]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise UserError(f"{bad[0]}{more}; use another --out, the same --set options as before, or remove those folders")
