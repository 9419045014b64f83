"""Planning: a recipe at one scale becomes jobs, one per (run, seed), each with its run folder and config.

Output layout under ``OUT``::

    OUT/runs/<run-id>-s<seed>/         one zsq-probe run folder per run and seed
    OUT/figures/<recipe>/*.png         the recipe's figures
    OUT/tables/<recipe>.txt, .csv      the printed table and its long form (one line per cell)
"""

from __future__ import annotations

import fnmatch
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from zsq_probe.errors import UserError
from zsq_probe.recipes.specs import PAPER_SCALE, SCALES, TINY_SCALE, scaled_specs

# Config fields that may differ between a finished run and the job asking for it (where it ran, not what).
_IGNORED = ("device", "data_root", "weights_root", "download", "weights", "num_workers", "pin_memory")


@dataclass
class Job:
    """One run and seed of a recipe: what to train and where."""

    paper_id: str  # the recipe's run id (what tables and figures refer to)
    spec: dict  # the spec trained at this scale
    seed: int
    path: Path
    flags: dict  # RunConfig fields set like command-line flags (bits, seed, probes, device, data folders)
    sets: list[str]  # key=value assignments in order: the global ones, then the run's own overrides

    @property
    def id(self) -> str:
        return self.spec["id"]

    @property
    def name(self) -> str:
        """The run folder's name, <run-id>-s<seed> (log and report names)."""
        return self.path.name

    def to_dict(self) -> dict:
        """The job as plain JSON data: what every executor ships to its worker (zsq_probe.executors)."""
        return {
            "paper_id": self.paper_id,
            "spec": self.spec,
            "seed": self.seed,
            "path": str(self.path),
            "flags": dict(self.flags),
            "sets": list(self.sets),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Job:
        return cls(d["paper_id"], d["spec"], int(d["seed"]), Path(d["path"]), dict(d["flags"]), list(d["sets"]))

    def config(self):
        """The job's resolved and validated RunConfig."""
        from zsq_probe.presets import resolve_config

        return resolve_config(
            self.spec["preset"],
            teacher=self.spec["teacher"],
            data=self.spec["data"],
            flags=self.flags,
            overrides=self.sets,
        )

    def status(self) -> str:
        """'done' (summary.json), 'partial' (config.json, no summary: resume) or 'new'."""
        if (self.path / "summary.json").is_file():
            return "done"
        if (self.path / "config.json").is_file():
            return "partial"
        return "new"

    def summary(self) -> dict | None:
        p = self.path / "summary.json"
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())
        except (OSError, ValueError):
            return None

    def command(self, progress: bool = True) -> str:
        """The equivalent `zsq-probe train` command line (printed by the dry run, never executed)."""
        f, s = self.flags, self.spec
        argv = ["zsq-probe", "train", "--preset", s["preset"], "--teacher", s["teacher"], "--data", s["data"]]
        if s["w_bits"] is not None:
            argv += ["--w-bits", str(s["w_bits"]), "--a-bits", str(s["a_bits"])]
        argv += ["--seed", str(self.seed)]
        if s["probes"]:
            argv += ["--probes", ",".join(s["probes"])]
        for key, flag in (("device", "--device"), ("data_root", "--data-root"), ("weights_root", "--weights-root")):
            if f.get(key):
                argv += [flag, str(f[key])]
        if f.get("download"):
            argv.append("--download")
        argv += ["--out", str(self.path)]
        for a in self.sets:
            argv += ["--set", a]
        if self.status() == "partial":
            argv.append("--resume")
        if not progress:
            argv.append("--no-progress")
        return shlex.join(argv)


def _assignment(key: str, value) -> str:
    if isinstance(value, (list, tuple)):
        return f"{key}={','.join(str(v) for v in value)}"
    return f"{key}={value}"


def plan(
    recipe: dict,
    scale: str = PAPER_SCALE,
    out="runs",
    seeds=None,
    only=None,
    sets=(),
    device=None,
    data_root=None,
    weights_root=None,
    download=False,
) -> list[Job]:
    """Every (run, seed) of the recipe at `scale`, each with its folder OUT/runs/<id>-s<seed>.

    `seeds`: the seeds (default: the recipe's, or its tiny seeds at tiny scale); `only`: fnmatch patterns
    on run ids (the paper id or the trained stand-in's id); `sets`: key=value config overrides for every
    run, applied before each run's own.  Runs that two paper ids share at tiny scale are planned once."""
    if scale not in SCALES:
        raise UserError(f"--scale must be {PAPER_SCALE} or {TINY_SCALE}, got {scale!r}")
    if seeds is None:
        seeds = (recipe.get("tiny", {}).get("seeds") if scale == TINY_SCALE else None) or recipe["seeds"]
    seeds = list(seeds)
    if not seeds:
        raise UserError("no seeds: --seeds must be >= 1")
    specs = scaled_specs(recipe, scale)
    if only:
        specs = {
            pid: s
            for pid, s in specs.items()
            if any(fnmatch.fnmatchcase(pid, p) or fnmatch.fnmatchcase(s["id"], p) for p in only)
        }
        if not specs:
            raise UserError(
                f"--only {','.join(only)} matches none of {recipe['name']}'s runs; `--dry-run` lists their ids"
            )
    out = Path(out)
    jobs, seen = [], {}
    for pid, spec in specs.items():
        for seed in seeds:
            key = (spec["id"], seed)
            if key in seen:
                jobs.append(Job(pid, spec, seed, seen[key].path, seen[key].flags, seen[key].sets))
                continue
            flags = {
                "w_bits": spec["w_bits"],
                "a_bits": spec["a_bits"],
                "seed": seed,
                "probes": list(spec["probes"]),
                "device": device,
            }
            if scale == PAPER_SCALE:  # digits is embedded: no data or weight folders at tiny scale
                flags.update(data_root=data_root, weights_root=weights_root, download=download or None)
            run_sets = list(sets) + [_assignment(k, v) for k, v in spec["overrides"].items()]
            job = Job(pid, spec, seed, out / "runs" / f"{spec['id']}-s{seed}", flags, run_sets)
            seen[key] = job
            jobs.append(job)
    return jobs


def unique_jobs(jobs: list[Job]) -> list[Job]:
    """The jobs with distinct run folders, in order (two paper ids may share one trained run)."""
    out, seen = [], set()
    for j in jobs:
        if j.path not in seen:
            seen.add(j.path)
            out.append(j)
    return out


def config_conflict(job: Job, cfg=None) -> str | None:
    """Why the run already in the job's folder cannot serve it (another config), or None."""
    from zsq_probe.config import config_diff, config_from_dict

    if job.status() == "new":
        return None
    cfg = cfg or job.config()
    try:
        doc = json.loads((job.path / "config.json").read_text())
        old = config_from_dict(doc["config"])
    except (OSError, ValueError, KeyError, UserError) as e:
        return f"{job.path}/config.json is unreadable ({e.__class__.__name__})"
    changed = config_diff(old, cfg, ignore=_IGNORED)
    if not changed:
        return None
    first = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(changed.items())[:3])
    return f"{job.path} holds a run with another config ({first})"


def check_existing(jobs: list[Job]) -> None:
    """Refuse, before anything runs, folders that hold runs of another config (another --set, an edited
    recipe): their results would be reported as this recipe's."""
    bad = [m for m in (config_conflict(j) for j in unique_jobs(jobs)) if m]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise UserError(f"{bad[0]}{more}; use another --out, the same --set options as before, or remove those folders")
