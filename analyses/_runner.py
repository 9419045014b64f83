"""Shared machinery of the recipes: run specs, the two scales, planning, training, figures and tables.

A recipe (one module per paper experiment) is data: a ``RECIPE`` dict built with :func:`run` and
:func:`cell`.  This module turns it into jobs (one per run and seed), trains them through
``zsq_probe.train.train`` (skipping finished runs, resuming partial ones), draws the recipe's figures
through ``zsq-probe figures`` and prints the recipe's table: mean ± std over seeds beside the paper's
value.

Output layout under ``--out OUT``::

    OUT/runs/<run-id>-s<seed>/         one zsq-probe run folder per run and seed
    OUT/figures/<recipe>/*.png         the recipe's figures
    OUT/tables/<recipe>.txt, .csv      the printed table and its long form (one line per cell)

Run ids name the setting (``resnet20_cifar10-4w4a-gdfq``, ``resnet18-4w4a-ait-p0.0005``,
``resnet20_cifar10-fp-kd-with-cosine``), so several recipes pointed at the same ``--out`` share the
runs they have in common (e.g. the GDFQ and AIT rows of Tabs. 1, 2, 3 and 9).
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import importlib
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from zsq_probe.errors import UserError

PAPER_SCALE, TINY_SCALE = "paper", "tiny"
TINY_TEACHER = "digits"

# Short names of the paper's settings (table blocks and figure titles).
MODEL_NAMES = {
    "resnet20_cifar10": "CIFAR-10 ResNet-20", "resnet20_cifar100": "CIFAR-100 ResNet-20",
    "resnet56_cifar10": "CIFAR-10 ResNet-56", "resnet56_cifar100": "CIFAR-100 ResNet-56",
    "resnext29_32x4d_cifar10": "CIFAR-10 ResNeXt-29 32x4d", "resnext29_32x4d_cifar100": "CIFAR-100 ResNeXt-29 32x4d",
    "wrn28_10_cifar10": "CIFAR-10 WRN-28-10", "wrn28_10_cifar100": "CIFAR-100 WRN-28-10",
    "wrn40_8_cifar10": "CIFAR-10 WRN-40-8", "wrn40_8_cifar100": "CIFAR-100 WRN-40-8",
    "resnet18": "ImageNet ResNet-18", "resnet50": "ImageNet ResNet-50", "mobilenetv2_w1": "ImageNet MobileNetV2",
    "digits": "digits (embedded)",
}

# Rough single-GPU hours per run at paper scale (400 epochs x 200 iterations, validation every epoch;
# an estimate for a current data-centre GPU such as an A100/H100, not a measurement).  Probes add the
# PROBE_FACTOR share.  Used by --dry-run and the docstrings' "expected time".
EST_HOURS = {
    "resnet20_cifar10": 1.2, "resnet20_cifar100": 1.2, "resnet56_cifar10": 2.5, "resnet56_cifar100": 2.5,
    "resnext29_32x4d_cifar10": 6.0, "resnext29_32x4d_cifar100": 6.0, "wrn28_10_cifar10": 5.0,
    "wrn28_10_cifar100": 5.0, "wrn40_8_cifar10": 4.0, "wrn40_8_cifar100": 4.0,
    "resnet18": 5.0, "resnet50": 9.0, "mobilenetv2_w1": 5.0,
}
EST_KD_FACTOR = 0.5  # real-data self-distillation: one pass over the training set per epoch, no generator
EST_ZEROQ_HOURS = 0.1  # distillation of the ZeroQ set + calibration, no fine-tuning
PROBE_FACTOR = {"cosine": 0.15, "inter_epoch": 0.1, "crossings": 0.05, "hessian": 0.6, "slice": 0.2}

# Abbreviations of override keys in run ids.
_ID_KEYS = {"gi_p": "p", "lr": "lr", "label_smoothing": "ls", "kd_weight": "kd", "ce_weight": "ce"}
# Figure options that name paper epochs: dropped at tiny scale (the digits scale has 12 epochs).
_EPOCH_OPTIONS = ("epoch", "epochs")
METRICS = {"best": "best_val_top1", "final": "final_val_top1"}


# ------------------------------------------------------------------------------------------- specs
def data_of(teacher: str) -> str:
    from zsq_probe.data import dataset_for_teacher

    return dataset_for_teacher(teacher)


def _fmt_value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "+".join(_fmt_value(x) for x in v)
    return str(v)


def run_id(preset: str, teacher: str, w_bits, a_bits, probes=(), tag: str | None = None) -> str:
    bits = "fp" if w_bits is None else f"{w_bits}w{a_bits}a"
    rid = f"{teacher}-{bits}-{preset}"
    if tag:
        rid += f"-{tag}"
    if probes:
        rid += "-with-" + "+".join(probes)
    return rid


def run(preset: str, teacher: str, w_bits: int | None = 4, a_bits: int | None = 4, probes=(), tag: str | None = None,
        **overrides) -> dict:
    """One run of a recipe: a preset on a teacher at w_bits/a_bits, probes switched on, config overrides.

    ``overrides`` are RunConfig fields applied last (after the preset and any global ``--set``): they are
    what defines the experiment (Tab. 5's learning rate, Tab. 4's p, ...).  ``tag`` names them in the run
    id; without one the id lists them (``-lr1e-05``).  Full-precision presets (KD) carry no bits.
    """
    from zsq_probe.config import PRESETS

    if preset not in PRESETS:
        raise UserError(f"recipe names unknown preset {preset!r}")
    if PRESETS[preset].get("full_precision_student"):
        w_bits = a_bits = None
    if tag is None and overrides:
        tag = "-".join(f"{_ID_KEYS.get(k, k)}{_fmt_value(v)}" for k, v in overrides.items())
    return {"id": run_id(preset, teacher, w_bits, a_bits, probes, tag), "preset": preset, "teacher": teacher,
            "data": data_of(teacher), "w_bits": w_bits, "a_bits": a_bits, "probes": list(probes), "tag": tag,
            "overrides": dict(overrides)}


def cell(spec: dict | None, paper=None) -> dict:
    """A table cell: the run whose seeds give our value (None: we do not run it) and the paper's value
    (a number, a (mean, std) pair, or None when the paper has none)."""
    return {"run": None if spec is None else spec["id"], "paper": paper}


def bits_label(w, a) -> str:
    return f"{w}w{a}a"


TINY_KEEPS = ("the same presets, losses, generators, gradient inundation, probes and seeds, and the shape of the "
              "paper's schedule (generator warm-up, frozen activation ranges, lr/p decay milestones) at "
              "config.py's digits scale: 12 epochs x 25 iterations, batch 64, warm-up 2 epochs, milestones "
              "6/9, lr 1e-3, p 1e-2")
TINY_LOSES = ("the real teachers and data sets (a 10-class 16x16 digits task and a small CIFAR-style ResNet "
              "teacher instead of CIFAR/ImageNet models), the 400-epoch schedule and hence the absolute "
              "accuracies: the paper's values are printed for layout, not for comparison")
TINY_BITS = "bit widths one lower (4w4a -> 3w3a, 5w5a -> 4w4a), since digits at 4w4a barely loses accuracy"


def tiny(only=None, bits: str = "minus1", keeps: str = "", loses: str = "", seeds=None) -> dict:
    """The tiny-scale part of a recipe: which paper runs keep a digits stand-in (fnmatch patterns on run
    ids; None = all), the bit rule ('minus1' or 'keep') and what the stand-in keeps and loses."""
    bit_text = TINY_BITS if bits == "minus1" else "the paper's bit widths unchanged"
    summary = "teacher digits, " + bit_text
    if only:
        summary += "; only " + ", ".join(only)
    return {"only": list(only) if only else None, "bits": bits, "summary": summary,
            "keeps": TINY_KEEPS + (f"; {keeps}" if keeps else ""),
            "loses": TINY_LOSES + f"; {bit_text if bits == 'minus1' else 'nothing on bits'}" +
            (f"; {loses}" if loses else ""), "seeds": seeds}


# ------------------------------------------------------------------------------------------- recipes
def load_recipe(name: str) -> dict:
    """RECIPE of `name` (a short name such as 'tab1' or a module name such as 'tab1_backbones')."""
    from analyses import RECIPES

    module = RECIPES.get(name) or (name if name in RECIPES.values() else None)
    if module is None:
        close = ", ".join(sorted(RECIPES))
        raise UserError(f"unknown analysis {name!r}; choose one of: {close} (or 'list')")
    recipe = importlib.import_module(f"analyses.{module}").RECIPE
    return recipe


def recipe_runs(recipe: dict) -> dict[str, dict]:
    return {spec["id"]: spec for spec in recipe["runs"]}


def tiny_spec(spec: dict, recipe: dict) -> dict:
    """The digits stand-in of a paper run: same preset, probes and overrides; teacher/data digits; bits
    lowered by one (4w4a -> 3w3a, 5w5a -> 4w4a; never below 2) unless the recipe keeps them."""
    rule = recipe.get("tiny", {}).get("bits", "minus1")
    w, a = spec["w_bits"], spec["a_bits"]
    if w is not None and rule == "minus1":
        w, a = max(2, w - 1), max(2, a - 1)
    new = dict(spec, teacher=TINY_TEACHER, data="digits", w_bits=w, a_bits=a)
    new["id"] = run_id(spec["preset"], TINY_TEACHER, w, a, spec["probes"], spec.get("tag"))
    return new


def scaled_specs(recipe: dict, scale: str) -> dict[str, dict]:
    """paper run id -> the spec trained for it at `scale` (at tiny scale only the recipe's `tiny.only`
    runs are kept, each mapped to its digits stand-in)."""
    specs = recipe_runs(recipe)
    if scale == PAPER_SCALE:
        return specs
    keep = recipe.get("tiny", {}).get("only")
    out, by_id = {}, {}
    for pid, spec in specs.items():
        if keep and not any(fnmatch.fnmatchcase(pid, pat) for pat in keep):
            continue
        t = tiny_spec(spec, recipe)
        other = by_id.get(t["id"])
        if other is not None and (other["overrides"] != t["overrides"] or other["probes"] != t["probes"]):
            raise UserError(f"recipe {recipe['name']}: tiny runs {pid} and another map to {t['id']} with "
                            f"different settings")
        by_id[t["id"]] = t
        out[pid] = t
    return out


# ------------------------------------------------------------------------------------------- jobs
@dataclass
class Job:
    paper_id: str  # the recipe's run id (what tables and figures refer to)
    spec: dict  # the spec trained at this scale
    seed: int
    path: Path
    flags: dict
    sets: list[str]  # --set assignments in order: global --set, then the run's own overrides

    @property
    def id(self) -> str:
        return self.spec["id"]

    def config(self):
        from zsq_probe.config import resolve_config

        return resolve_config(self.spec["preset"], teacher=self.spec["teacher"], data=self.spec["data"],
                              flags=self.flags, overrides=self.sets)

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
        """The equivalent `zsq-probe train` command line."""
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


def plan(recipe: dict, scale: str = PAPER_SCALE, out="runs", seeds=None, only=None, sets=(), device=None,
         data_root=None, weights_root=None, download=False) -> list[Job]:
    """Every (run, seed) of the recipe at `scale`, each with its folder OUT/runs/<id>-s<seed>.

    `only`: fnmatch patterns on run ids (the paper id or the trained stand-in's id).  Runs that two paper
    ids share at tiny scale are planned once."""
    if scale not in (PAPER_SCALE, TINY_SCALE):
        raise UserError(f"--scale must be {PAPER_SCALE} or {TINY_SCALE}, got {scale!r}")
    if seeds is None:
        seeds = (recipe.get("tiny", {}).get("seeds") if scale == TINY_SCALE else None) or recipe["seeds"]
    seeds = list(seeds)
    if not seeds:
        raise UserError("no seeds: --seeds must be >= 1")
    specs = scaled_specs(recipe, scale)
    if only:
        specs = {pid: s for pid, s in specs.items()
                 if any(fnmatch.fnmatchcase(pid, p) or fnmatch.fnmatchcase(s["id"], p) for p in only)}
        if not specs:
            raise UserError(f"--only {','.join(only)} matches none of {recipe['name']}'s runs; "
                            f"`--dry-run` lists their ids")
    out = Path(out)
    jobs, seen = [], {}
    for pid, spec in specs.items():
        for seed in seeds:
            key = (spec["id"], seed)
            if key in seen:
                jobs.append(Job(pid, spec, seed, seen[key].path, seen[key].flags, seen[key].sets))
                continue
            flags = {"w_bits": spec["w_bits"], "a_bits": spec["a_bits"], "seed": seed, "probes": list(spec["probes"]),
                     "device": device}
            if scale == PAPER_SCALE:  # digits is embedded: no data or weight folders at tiny scale
                flags.update(data_root=data_root, weights_root=weights_root, download=download or None)
            run_sets = list(sets) + [_assignment(k, v) for k, v in spec["overrides"].items()]
            job = Job(pid, spec, seed, out / "runs" / f"{spec['id']}-s{seed}", flags, run_sets)
            seen[key] = job
            jobs.append(job)
    return jobs


def unique_jobs(jobs: list[Job]) -> list[Job]:
    out, seen = [], set()
    for j in jobs:
        if j.path not in seen:
            seen.add(j.path)
            out.append(j)
    return out


# ------------------------------------------------------------------------------------------- training
_IGNORED = ("device", "data_root", "weights_root", "download", "weights")


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
        raise UserError(f"{bad[0]}{more}; use another --out, the same --set options as before, or remove "
                        f"those folders")


def train_job(job: Job, progress: bool = False, log=print) -> dict:
    """Train one job: skip it when finished (its config must match), resume it when partial."""
    from zsq_probe.probes import build_probes
    from zsq_probe.train import train

    cfg = job.config()
    status = job.status()
    conflict = config_conflict(job, cfg)
    if conflict:
        raise UserError(conflict)
    if status == "done":
        return job.summary()
    observers = build_probes(cfg) if cfg.probes else []
    return train(cfg, job.path, resume=status == "partial", force=status == "partial", observers=observers,
                 progress=progress, log=log)


def train_all(jobs: list[Job], progress: bool = False, quiet: bool = False) -> list[tuple[Job, str]]:
    """Train every job in order; returns the failures (job, message) - one failure does not stop the rest."""
    todo = unique_jobs(jobs)
    failures = []
    log = (lambda *a, **k: None) if quiet else print
    for i, job in enumerate(todo, 1):
        status = job.status()
        head = f"[{i}/{len(todo)}] {job.id} seed {job.seed}"
        if status == "done":
            try:
                train_job(job, progress, log)  # checks the config
                print(f"{head}: done already ({job.path})")
            except UserError as e:
                failures.append((job, str(e)))
                print(f"{head}: error: {e}", file=sys.stderr)
            continue
        print(f"{head}: {'resuming' if status == 'partial' else 'training'} -> {job.path}", flush=True)
        t0 = time.time()
        try:
            s = train_job(job, progress, log)
        except UserError as e:
            failures.append((job, str(e)))
            print(f"{head}: error: {e}", file=sys.stderr)
            continue
        top1 = s.get("best_val_top1")
        acc = ("no validation" if top1 is None
               else f"best top-1 {100 * top1:.2f}%, final {100 * s['final_val_top1']:.2f}%")
        print(f"{head}: finished in {time.time() - t0:.1f}s ({acc})", flush=True)
    return failures


# ------------------------------------------------------------------------------------------- estimates
def spec_hours(spec: dict) -> float:
    """Rough single-GPU hours of one run at paper scale (see EST_HOURS)."""
    base = EST_HOURS.get(spec["teacher"], 5.0)
    if spec["preset"] == "zeroq":
        h = EST_ZEROQ_HOURS
    elif spec["preset"] == "kd":
        h = base * EST_KD_FACTOR
    else:
        h = base
    return h * (1 + sum(PROBE_FACTOR.get(p, 0.2) for p in spec["probes"]))


def estimate_hours(recipe: dict, seeds: int | None = None) -> float:
    """Rough single-GPU hours of a whole recipe at paper scale (runs x seeds)."""
    n = len(recipe["seeds"]) if seeds is None else seeds
    return n * sum(spec_hours(s) for s in recipe["runs"])


def jobs_hours(jobs) -> float:
    return sum(spec_hours(j.spec) for j in unique_jobs(jobs))


# ------------------------------------------------------------------------------------------- figures
def figure_runs(entry: dict, jobs: list[Job]) -> list[Path]:
    """Folders of the first seed of each run the figure entry names (all runs when it names none) that
    hold a run (config.json: finished or partial)."""
    return [j.path for j in _first_seed_jobs(entry, jobs) if (j.path / "config.json").is_file()]


def figure_argv(entry: dict, paths, out_dir, scale: str, fmt: str = "png") -> list[str]:
    argv = ["figures", "--runs", *[str(p) for p in paths], "--out", str(out_dir), "--only", entry["name"],
            "--format", fmt]
    for key, value in entry.get("options", {}).items():
        if scale != PAPER_SCALE and key in _EPOCH_OPTIONS:
            continue  # paper epochs (200, 60/350) do not exist at tiny scale: the figure's default applies
        argv += [f"--{key}", _fmt_value(value).replace("+", ",")]
    return argv


def draw_figures(recipe: dict, jobs: list[Job], out, scale: str, fmt: str = "png") -> int:
    """Call `zsq-probe figures` once per figure entry; returns the number of failed figures."""
    from zsq_probe.cli import main as cli_main

    out_dir = Path(out) / "figures" / recipe["name"]
    failed = 0
    for entry in recipe.get("figures", []):
        paths = figure_runs(entry, jobs)
        if not paths:
            print(f"figure {entry['name']}: skipped (none of its runs were planned or trained)")
            continue
        argv = figure_argv(entry, paths, out_dir, scale, fmt)
        print("$ zsq-probe " + shlex.join(argv), flush=True)
        if cli_main(argv) != 0:
            failed += 1
    return failed


# ------------------------------------------------------------------------------------------- tables
def stats(values) -> tuple[float | None, float | None, int]:
    """(mean, sample std with ddof=1 or None when n < 2, n) of the finite values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n == 0:
        return None, None, 0
    mean = sum(vals) / n
    if n < 2:
        return mean, None, n
    var = sum((v - mean) ** 2 for v in vals) / (n - 1)
    return mean, math.sqrt(var), n


def format_stat(mean, std, n, expected_n: int | None = None, digits: int = 2) -> str:
    """'65.80 ± 0.20' (n seeds), '65.80 (n=1)' (one seed), '—' (none); '[n=2]' when seeds are missing."""
    if n == 0 or mean is None:
        return "—"
    if n == 1:
        return f"{mean:.{digits}f} (n=1)"
    text = f"{mean:.{digits}f} ± {std:.{digits}f}"
    if expected_n is not None and n < expected_n:
        text += f" [n={n}]"
    return text


def format_paper(value, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, (list, tuple)):
        return f"{value[0]:.{digits}f} ± {value[1]:.{digits}f}"
    return f"{value:.{digits}f}"


def paper_mean(value):
    if value is None:
        return None
    return value[0] if isinstance(value, (list, tuple)) else value


def _columns(table: dict) -> list[dict]:
    return [c if isinstance(c, dict) else {"name": c} for c in table["columns"]]


def collect(jobs: list[Job], metric: str = "best") -> tuple[dict, dict]:
    """paper run id -> list of top-1 values in percent (one per finished seed), and the teacher top-1s."""
    key = METRICS[metric]
    values: dict[str, list[float]] = {}
    teacher: dict[str, list[float]] = {}
    for j in jobs:
        values.setdefault(j.paper_id, [])
        s = j.summary()
        if s is None:
            continue
        if s.get(key) is not None:
            values[j.paper_id].append(100.0 * s[key])
        if s.get("teacher_top1") is not None:
            teacher.setdefault(j.paper_id, []).append(100.0 * s["teacher_top1"])
    return values, teacher


def table_cells(table: dict, values: dict, expected_n: int | None = None) -> list[dict]:
    """Long form of the table: one dict per (block, row, column) cell with our stats and the paper's value.
    `values`: paper run id -> values (runs absent from `values` were not planned)."""
    cols = _columns(table)
    out = []
    for b in table["blocks"]:
        for row in b["rows"]:
            for c in cols:
                cl = row["cells"].get(c["name"])
                if cl is None:
                    continue
                rid = cl["run"]
                planned = rid is not None and rid in values
                mean, std, n = stats(values.get(rid, [])) if planned else (None, None, 0)
                out.append({"block": b["title"], "row": row["label"], "column": c["name"], "run": rid,
                            "planned": planned, "n": n, "mean": mean, "std": std, "paper": paper_mean(cl["paper"]),
                            "paper_std": cl["paper"][1] if isinstance(cl["paper"], (list, tuple)) else None,
                            "text": format_stat(mean, std, n, expected_n) if planned
                            else ("not run" if rid is None else "·"),
                            "paper_text": format_paper(cl["paper"])})
    return out


def _delta(a, b) -> str:
    if a is None or b is None:
        return ""
    return f" ({a - b:+.2f})"


def render_table(table: dict, values: dict, teacher: dict | None = None, expected_n: int | None = None,
                 header_note: str = "", standins: dict | None = None) -> str:
    """The paper's table layout, each of our cells ('mean ± std' over seeds) beside the paper's value.

    Blocks and rows none of whose runs were planned are left out; '·' marks a cell whose run was not
    planned (--only, tiny scale), 'not run' a cell the paper has but zsq-probe cannot run, '—' a planned
    run without a finished seed; columns without a planned run are left out too.  `standins`: paper
    run id -> the label of the run trained for it (tiny scale), named in the block title."""
    cols = _columns(table)
    cells = {(c["block"], c["row"], c["column"]): c for c in table_cells(table, values, expected_n)}
    shown = [c for c in cols if any(v["planned"] for k, v in cells.items() if k[2] == c["name"])]
    if shown:  # columns none of whose runs were planned (--only, tiny scale) are left out
        cols = list(shown)
        names = {c["name"] for c in cols}
        cols = [dict(c, delta_from=None) if c.get("delta_from") not in names else c for c in cols]
    lines = [table["title"]]
    if header_note:
        lines.append(header_note)
    row_head = table.get("row_header", "")
    for b in table["blocks"]:
        def planned(r):
            return any(cells.get((b["title"], r["label"], c["name"]), {}).get("planned") for c in cols)

        if not any(planned(r) for r in b["rows"]):
            continue
        # rows with a planned run, and the paper-only rows (every cell 'not run', e.g. Tab. 3's LARS)
        rows = [r for r in b["rows"] if planned(r) or all(cl["run"] is None for cl in r["cells"].values())]
        title = b["title"]
        if standins:
            labels = sorted({standins[cl["run"]] for r in rows for cl in r["cells"].values()
                             if cl["run"] in standins})
            if labels:
                title += f"  [ours: {', '.join(labels)}]"
        if teacher is not None and b.get("fp32") is not None:
            t_vals = [v for r in rows for c in cols
                      for v in teacher.get((r["cells"].get(c["name"]) or {}).get("run"), [])]
            ours = stats(t_vals)[0]
            title += f"  (teacher top-1: ours {'—' if ours is None else f'{ours:.2f}'}, paper {b['fp32']:.2f})"
        grid = []
        for r in rows:
            line = [r["label"]]
            for c in cols:
                cl = cells.get((b["title"], r["label"], c["name"]))
                if cl is None:
                    line += ["", ""]
                    continue
                ours, paper = cl["text"], cl["paper_text"]
                base = c.get("delta_from")
                if base:
                    ref = cells.get((b["title"], r["label"], base))
                    if ref is not None:
                        ours += _delta(cl["mean"], ref["mean"])
                        paper += _delta(cl["paper"], ref["paper"])
                line += [ours, paper]
            grid.append(line)
        head1 = [""] + [x for c in cols for x in (c["name"], "")]
        head2 = [row_head] + [x for _ in cols for x in ("ours", "paper")]
        widths = [max(len(str(line[i])) for line in [head1, head2] + grid) for i in range(len(head2))]
        # a column name spans its ours/paper pair
        for k, c in enumerate(cols):
            i = 1 + 2 * k
            need = len(c["name"]) - (widths[i] + 3 + widths[i + 1])
            if need > 0:
                widths[i + 1] += need
            head1[i] = c["name"]

        def fmt(line, span=False):
            parts = [f"{line[0]:<{widths[0]}}"]
            for k in range(len(cols)):
                i = 1 + 2 * k
                if span:
                    parts.append(f"{line[i]:<{widths[i] + 3 + widths[i + 1]}}")
                else:
                    parts.append(f"{line[i]:<{widths[i]}} | {line[i + 1]:<{widths[i + 1]}}")
            return " || ".join(parts).rstrip()

        lines += ["", title, fmt(head1, span=True), fmt(head2), "-" * len(fmt(head2))]
        lines += [fmt(line) for line in grid]
    if table.get("notes"):
        lines += [""] + [f"note: {n}" for n in table["notes"]]
    return "\n".join(lines)


def write_table_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ["block", "row", "column", "run", "n", "mean", "std", "paper", "paper_std"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            if r["planned"] or r["run"] is None:
                w.writerow(r)


def report_table(recipe: dict, jobs: list[Job], out, scale: str, metric: str = "best", seeds: int | None = None) -> str:
    table = recipe["table"]
    values, teacher = collect(jobs, metric)
    n_seeds = len({j.seed for j in jobs}) if seeds is None else seeds
    note = (f"top-1 % ({METRICS[metric]}), ours = mean ± std over seeds (ddof=1; 'n=1': one seed), "
            f"scale {scale}")
    if scale == TINY_SCALE:
        note += ("\n" + "tiny scale: every run is its digits stand-in (" + recipe["tiny"]["summary"] +
                 "); the paper's values are those of the setting named in each block, shown for layout only")
    standins = None
    if scale == TINY_SCALE:
        standins = {j.paper_id: f"{j.spec['teacher']} " + ("fp" if j.spec["w_bits"] is None else
                                                           bits_label(j.spec["w_bits"], j.spec["a_bits"]))
                    for j in jobs}
    text = render_table(table, values, teacher, expected_n=n_seeds, header_note=note, standins=standins)
    out = Path(out) / "tables"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{recipe['name']}.txt").write_text(text + "\n")
    write_table_csv(out / f"{recipe['name']}.csv", table_cells(table, values, n_seeds))
    return text


# ------------------------------------------------------------------------------------------- the CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m analyses",
        description="Run one paper experiment (figure or table) from its recipe: train every run and seed "
                    "(finished runs are skipped, partial ones resumed), draw its figures, print its table "
                    "beside the paper's values.")
    p.add_argument("name", help="recipe: fig1 fig2 fig3 fig4 fig5 fig7 fig8 fig9 tab1 tab2 tab3 tab4 tab5 tab6 "
                                "tab8 tab9, or 'list'")
    p.add_argument("--scale", choices=(PAPER_SCALE, TINY_SCALE), default=PAPER_SCALE,
                   help="paper: the paper's teachers and schedule (GPU, data on disk); tiny: each run's stand-in "
                        "on the embedded digits teacher (2 CPU cores)")
    p.add_argument("--out", help="output folder (default runs/<name>, runs/<name>-tiny at tiny scale); point "
                                 "several recipes at one folder to share their common runs")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default cpu)")
    p.add_argument("--data-root", help="folder with CIFAR-10/100 (torchvision layout) / ImageNet (image folder)")
    p.add_argument("--weights-root", help="pytorchcv weight cache (default ~/.torch/models)")
    p.add_argument("--download", action="store_true", help="let zsq-probe download missing weights/data")
    p.add_argument("--seeds", type=int, help="use seeds 0..N-1 (default: the recipe's, 3 for tables)")
    p.add_argument("--only", help="comma-separated fnmatch patterns on run ids: train/report only these runs")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every run (applied before each run's own overrides)")
    p.add_argument("--metric", choices=tuple(METRICS), default="best",
                   help="top-1 reported in tables: best over epochs (as the reference code logs) or final")
    p.add_argument("--format", choices=("png", "pdf"), default="png", help="figure file format")
    p.add_argument("--dry-run", action="store_true", help="print the zsq-probe commands, run nothing")
    p.add_argument("--no-train", action="store_true", help="only draw figures / print the table from existing runs")
    p.add_argument("--progress", action="store_true", help="progress bars while training")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    return p


def list_recipes() -> str:
    from analyses import RECIPES

    lines = []
    for short in RECIPES:
        r = load_recipe(short)
        kind = "table" if r.get("table") else "figure"
        lines.append(f"{short:<6}{r['paper']:<34}{kind:<7}{len(r['runs']):>4} runs x {len(r['seeds'])} seed(s)  "
                     f"~{estimate_hours(r):.0f} GPU-h  {r['title']}")
    return "\n".join(lines)


def dry_run_text(recipe: dict, jobs: list[Job], args, out) -> str:
    lines = [f"# {recipe['name']}: {recipe['paper']} — {recipe['title']}  (scale {args.scale})"]
    todo = unique_jobs(jobs)
    done = sum(1 for j in todo if j.status() == "done")
    lines.append(f"# {len(todo)} run(s), {done} finished already")
    if args.scale == PAPER_SCALE:
        lines.append(f"# rough single-GPU estimate for these runs: ~{jobs_hours(jobs):.0f} h "
                     f"(analyses/_runner.py EST_HOURS; not a measurement)")
    for j in todo:
        if j.status() == "done":
            lines.append(f"# done, skipped: {j.command(args.progress)}")
        else:
            lines.append(j.command(args.progress))
    for entry in recipe.get("figures", []):
        paths = [j.path for j in _first_seed_jobs(entry, jobs)]  # (the runs need not exist yet)
        if paths:
            lines.append("zsq-probe " + shlex.join(figure_argv(entry, paths, Path(out) / "figures" / recipe["name"],
                                                              args.scale, args.format)))
    if recipe.get("table"):
        lines.append(f"# then: print {recipe['table']['title'].split('.')[0]} (mean ± std over seeds beside the "
                     f"paper) into {Path(out) / 'tables' / (recipe['name'] + '.txt')}")
    return "\n".join(lines)


def _first_seed_jobs(entry: dict, jobs: list[Job]) -> list[Job]:
    wanted = entry.get("runs")
    first: dict[str, Job] = {}
    for j in jobs:
        if (wanted is None or j.paper_id in wanted) and j.paper_id not in first:
            first[j.paper_id] = j
    order = wanted if wanted is not None else list(first)
    out, seen = [], set()
    for pid in order:
        j = first.get(pid)
        if j is not None and j.path not in seen:
            seen.add(j.path)
            out.append(j)
    return out


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _main(args)
    except UserError as e:
        print(f"analyses {args.name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"analyses {args.name}: interrupted (run it again to resume)", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head`
        return 0


def _main(args) -> int:
    if args.name == "list":
        print(list_recipes())
        return 0
    recipe = load_recipe(args.name)
    out = Path(args.out or (f"runs/{recipe['name']}" + ("-tiny" if args.scale == TINY_SCALE else ""))).expanduser()
    if args.seeds is not None and args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    seeds = None if args.seeds is None else list(range(args.seeds))
    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    jobs = plan(recipe, args.scale, out, seeds, only, args.set, args.device, args.data_root, args.weights_root,
                args.download)
    for j in unique_jobs(jobs):
        j.config()  # every config resolves and validates before anything runs
    check_existing(jobs)
    if args.dry_run:
        print(dry_run_text(recipe, jobs, args, out))
        return 0
    failures = [] if args.no_train else train_all(jobs, progress=args.progress, quiet=args.quiet)
    failed_figures = draw_figures(recipe, jobs, out, args.scale, args.format) if recipe.get("figures") else 0
    if recipe.get("table"):
        print()
        print(report_table(recipe, jobs, out, args.scale, args.metric))
        print(f"\n(written to {out / 'tables' / (recipe['name'] + '.txt')} and .csv)")
    if failures:
        print(f"\n{len(failures)} run(s) failed:", file=sys.stderr)
        for j, msg in failures:
            print(f"  {j.id} seed {j.seed}: {msg}", file=sys.stderr)
    if failures or failed_figures:
        return 1
    return 0
