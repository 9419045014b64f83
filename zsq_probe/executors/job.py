"""A job: one run and seed to train in its own folder — the unit every executor runs and a recipe plans.

A job is idempotent: a finished run is skipped (its config checked against the job's), a partial one resumed,
a new one started; `Job.to_dict` is what executors ship to their workers.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from zsq_probe.config import RunConfig, config_diff, config_from_dict
from zsq_probe.errors import UserError
from zsq_probe.presets import resolve_config

# Config fields that may differ between a finished run and the job asking for it (where it ran, not what).
_IGNORED = ("device", "data_root", "weights_root", "download", "weights", "num_workers", "pin_memory")


class RunSpec(TypedDict):
    """One run of a recipe, as :func:`run` makes it."""

    id: str  # the run id (:func:`run_id`)
    preset: str
    teacher: str
    data: str
    w_bits: int | None  # None (and a_bits None) for a full-precision student
    a_bits: int | None
    probes: list[str]
    tag: str | None
    overrides: dict[str, Any]  # RunConfig fields applied last


@dataclass
class Job:
    """One run and seed of a recipe: what to train and where."""

    paper_id: str  # the recipe's run id (what tables and figures refer to)
    spec: RunSpec  # the spec trained at this scale
    seed: int
    path: Path
    flags: dict[str, Any]  # RunConfig fields set like command-line flags (bits, seed, probes, device, data folders)
    sets: list[str]  # key=value assignments in order: the global ones, then the run's own overrides

    @property
    def id(self) -> str:
        """The run id of the spec trained (a tiny stand-in's own id at tiny scale)."""
        return self.spec["id"]

    @property
    def name(self) -> str:
        """The run folder's name, <run-id>-s<seed> (log and report names)."""
        return self.path.name

    def to_dict(self) -> dict[str, Any]:
        """The job as plain JSON data: what every executor ships to its worker (zsq_probe.executors).

        Returns:
            {"paper_id", "spec", "seed", "path", "flags", "sets"}; `from_dict` makes the job again.
        """
        return {
            "paper_id": self.paper_id,
            "spec": self.spec,
            "seed": self.seed,
            "path": str(self.path),
            "flags": dict(self.flags),
            "sets": list(self.sets),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Job:
        """The job `to_dict` described (what a worker receives).

        Args:
            d: What `to_dict` returned (after a JSON round trip, say).

        Returns:
            The job.
        """
        return cls(d["paper_id"], d["spec"], int(d["seed"]), Path(d["path"]), dict(d["flags"]), list(d["sets"]))

    def config(self) -> RunConfig:
        """The job's resolved and validated RunConfig.

        Returns:
            The config: the spec's preset, teacher and data, then the job's flags, then its --set assignments.

        Raises:
            UserError: The config is not valid.
        """
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

    def summary(self) -> dict[str, Any] | None:
        """The finished run's summary.json, or None (not finished, or unreadable)."""
        p = self.path / "summary.json"
        if not p.is_file():
            return None
        try:
            summary: dict[str, Any] = json.loads(p.read_text())
        except (OSError, ValueError):
            return None
        return summary

    def command(self, progress: bool = True) -> str:
        """The equivalent `zsq-probe train` command line (printed by the dry run, never executed)."""
        f, s = self.flags, self.spec
        argv = ["zsq-probe", "train", "--preset", s["preset"], "--teacher", s["teacher"], "--data", s["data"]]
        if s["w_bits"] is not None:
            argv += ["--w-bits", str(s["w_bits"]), "--a-bits", str(s["a_bits"])]
        argv += ["--seed", str(self.seed)]
        if s["probes"]:
            argv += ["--probes", ",".join(s["probes"])]
        for key, flag in (
            ("device", "--device"),
            ("data_root", "--data-root"),
            ("weights_root", "--weights-root"),
            ("weights", "--weights"),
        ):
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


def unique_jobs(jobs: list[Job]) -> list[Job]:
    """The jobs with distinct run folders, in order (two paper ids may share one trained run)."""
    out: list[Job] = []
    seen: set[Path] = set()
    for j in jobs:
        if j.path not in seen:
            seen.add(j.path)
            out.append(j)
    return out


def config_conflict(job: Job, cfg: RunConfig | None = None) -> str | None:
    """Why the run already in the job's folder cannot serve it (another config), or None.

    Args:
        job: The job.
        cfg: The job's config, when resolved already (default: `job.config()`).

    Returns:
        A one-line reason naming the folder and up to three differing fields, or None when the folder holds
        no run or a run of the same config (where it runs may differ).
    """
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
