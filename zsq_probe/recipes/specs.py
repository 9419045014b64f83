"""What a recipe is made of: run specs, table cells, the tiny-scale rule, and how a paper run maps to its
digits stand-in.

A recipe is a ``RECIPE`` dict built with :func:`run`, :func:`cell` and :func:`tiny`.  Run ids name the
setting (``resnet20_cifar10-4w4a-gdfq``, ``resnet18-4w4a-ait-p0.0005``, ``resnet20_cifar10-fp-kd-with-cosine``),
so recipes pointed at the same output folder share the runs they have in common.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias, TypedDict

from zsq_probe.errors import UserError
from zsq_probe.executors.job import RunSpec as RunSpec  # a recipe run is a job's spec
from zsq_probe.presets import PRESETS, preset_overrides

PAPER_SCALE, TINY_SCALE, LAPTOP_SCALE = "paper", "tiny", "laptop"
SCALES = (PAPER_SCALE, TINY_SCALE, LAPTOP_SCALE)
TINY_TEACHER = "digits"
# --scale laptop: the recipe's ResNet-20 / CIFAR-10 runs at presets.LAPTOP_SCALE (real data on 2 CPU cores)
LAPTOP_TEACHERS = ("resnet20_cifar10",)

# Abbreviations of override keys in run ids.
_ID_KEYS = {"gi_p": "p", "lr": "lr", "label_smoothing": "ls", "kd_weight": "kd", "ce_weight": "ce"}

TINY_KEEPS = (
    "the same presets, losses, generators, gradient inundation, probes and seeds, and the shape of the "
    "paper's schedule (generator warm-up, frozen activation ranges, lr/p decay milestones) at "
    "config.py's digits scale: 12 epochs x 25 iterations, batch 64, warm-up 2 epochs, milestones "
    "6/9, lr 1e-3, p 1e-2"
)
TINY_LOSES = (
    "the real teachers and data sets (a 10-class 16x16 digits task and a small CIFAR-style ResNet "
    "teacher instead of CIFAR/ImageNet models), the 400-epoch schedule and hence the absolute "
    "accuracies: the paper's values are printed for layout, not for comparison"
)
TINY_BITS = "bit widths one lower (4w4a -> 3w3a, 5w5a -> 4w4a), since digits at 4w4a barely loses accuracy"

Recipe: TypeAlias = dict[str, Any]
"""A ``RECIPE`` dict: name, paper, title, runs (RunSpecs), seeds, tiny (a TinyRule), and a table or figures."""

Column: TypeAlias = str | dict[str, Any]
"""A table column: its name, or a dict with its "name" (and "delta_from": the column its differences are to)."""

PaperValue: TypeAlias = float | tuple[float, float] | list[float] | None
"""A paper's value in a table cell: a number, a (mean, std) pair, or None when the paper has none."""


class TableCell(TypedDict):
    """A table cell, as :func:`cell` makes it."""

    run: str | None  # the id of the run whose seeds give our value; None: we do not run it
    paper: PaperValue


class TinyRule(TypedDict):
    """The tiny-scale part of a recipe, as :func:`tiny` makes it."""

    only: list[str] | None  # fnmatch patterns on run ids; None: every run
    bits: str  # 'minus1' or 'keep'
    summary: str
    keeps: str
    loses: str
    seeds: list[int] | None  # None: the recipe's seeds


def format_value(v: object) -> str:
    """A config value as run ids and command lines show it.

    Args:
        v: The value.

    Returns:
        Its text: floats short (``%g``), lists and tuples joined by '+', anything else as str().
    """
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "+".join(format_value(x) for x in v)
    return str(v)


def bits_label(w: int | None, a: int | None) -> str:
    """'4w4a' for 4-bit weights and activations.

    Args:
        w: The weight bits.
        a: The activation bits.

    Returns:
        The label.
    """
    return f"{w}w{a}a"


def data_of(teacher: str) -> str:
    """The data set a teacher was trained on."""
    from zsq_probe.teachers.metadata import dataset_for_teacher  # torch: not on import (zsq_probe.recipes)

    return dataset_for_teacher(teacher)


def _full_precision(preset: str, data: str) -> bool:
    """Whether `preset` trains a full-precision student (KD); unknown presets are an error."""
    if preset not in PRESETS:
        raise UserError(f"recipe names unknown preset {preset!r}")
    return bool(preset_overrides(preset, data).get("full_precision_student"))


def run_id(
    preset: str,
    teacher: str,
    w_bits: int | None,
    a_bits: int | None,
    probes: Sequence[str] = (),
    tag: str | None = None,
) -> str:
    """A run's id from its preset, teacher, bits, probes and tag.

    Args:
        preset: The preset.
        teacher: The teacher.
        w_bits: The weight bits; None: a full-precision student ('fp').
        a_bits: The activation bits.
        probes: The probes switched on.
        tag: What names its overrides.

    Returns:
        The id, such as 'resnet20_cifar10-4w4a-ait-with-cosine'.
    """
    bits = "fp" if w_bits is None else bits_label(w_bits, a_bits)
    rid = f"{teacher}-{bits}-{preset}"
    if tag:
        rid += f"-{tag}"
    if probes:
        rid += "-with-" + "+".join(probes)
    return rid


def run(
    preset: str,
    teacher: str,
    w_bits: int | None = 4,
    a_bits: int | None = 4,
    probes: Sequence[str] = (),
    tag: str | None = None,
    **overrides: Any,
) -> RunSpec:
    """One run of a recipe: a preset on a teacher at w_bits/a_bits, probes switched on, config overrides.

    Full-precision presets (KD) carry no bits.

    Args:
        preset: The preset.
        teacher: The teacher (its data set follows from it).
        w_bits: The weight bits.
        a_bits: The activation bits.
        probes: The probes switched on.
        tag: What names the overrides in the run id; None: the id lists them (``-lr1e-05``).
        **overrides: RunConfig fields applied last (after the preset and any global ``--set``): what defines
            the experiment (Tab. 5's learning rate, Tab. 4's p, ...).

    Returns:
        The run's spec.

    Raises:
        UserError: The preset is unknown.
    """
    data = data_of(teacher)
    if _full_precision(preset, data):
        w_bits = a_bits = None
    if tag is None and overrides:
        tag = "-".join(f"{_ID_KEYS.get(k, k)}{format_value(v)}" for k, v in overrides.items())
    return {
        "id": run_id(preset, teacher, w_bits, a_bits, probes, tag),
        "preset": preset,
        "teacher": teacher,
        "data": data,
        "w_bits": w_bits,
        "a_bits": a_bits,
        "probes": list(probes),
        "tag": tag,
        "overrides": dict(overrides),
    }


def column_name(column: Column | Mapping[str, Any]) -> str:
    """A table column's name.

    Args:
        column: A name, or a dict with a "name".

    Returns:
        The name.
    """
    if isinstance(column, str):
        return column
    name: str = column["name"]
    return name


def cell(spec: RunSpec | None, paper: PaperValue = None) -> TableCell:
    """A table cell.

    Args:
        spec: The run whose seeds give our value; None: we do not run it.
        paper: The paper's value: a number, a (mean, std) pair, or None when the paper has none.

    Returns:
        The cell.
    """
    return {"run": None if spec is None else spec["id"], "paper": paper}


def tiny(
    only: Sequence[str] | None = None,
    bits: str = "minus1",
    keeps: str = "",
    loses: str = "",
    seeds: list[int] | None = None,
) -> TinyRule:
    """The tiny-scale part of a recipe.

    Args:
        only: Which paper runs keep a digits stand-in (fnmatch patterns on run ids); None: all.
        bits: The bit rule: 'minus1' (one bit fewer) or 'keep'.
        keeps: What the stand-in keeps, beyond what every stand-in keeps.
        loses: What it loses, beyond what every stand-in loses.
        seeds: The seeds at tiny scale; None: the recipe's.

    Returns:
        The tiny rule.
    """
    bit_text = TINY_BITS if bits == "minus1" else "the paper's bit widths unchanged"
    summary = "teacher digits, " + bit_text
    if only:
        summary += "; only " + ", ".join(only)
    return {
        "only": list(only) if only else None,
        "bits": bits,
        "summary": summary,
        "keeps": TINY_KEEPS + (f"; {keeps}" if keeps else ""),
        "loses": TINY_LOSES
        + f"; {bit_text if bits == 'minus1' else 'nothing on bits'}"
        + (f"; {loses}" if loses else ""),
        "seeds": seeds,
    }


def recipe_runs(recipe: Recipe) -> dict[str, RunSpec]:
    """Every run of the recipe.

    Args:
        recipe: The recipe.

    Returns:
        Run id -> spec.
    """
    return {spec["id"]: spec for spec in recipe["runs"]}


def tiny_spec(spec: RunSpec, recipe: Recipe) -> RunSpec:
    """The digits stand-in of a paper run.

    Same preset, probes and overrides; teacher/data digits; bits lowered by one (4w4a -> 3w3a, 5w5a -> 4w4a;
    never below 2) unless the recipe keeps them.

    Args:
        spec: The paper run.
        recipe: Its recipe (its tiny rule).

    Returns:
        The stand-in's spec (a new dict).
    """
    rule = recipe.get("tiny", {}).get("bits", "minus1")
    w, a = spec["w_bits"], spec["a_bits"]
    if w is not None and rule == "minus1":
        assert a is not None, "a spec's bits are both set or both None (run)"
        w, a = max(2, w - 1), max(2, a - 1)
    new: RunSpec = {**spec, "teacher": TINY_TEACHER, "data": "digits", "w_bits": w, "a_bits": a}
    new["id"] = run_id(spec["preset"], TINY_TEACHER, w, a, spec["probes"], spec.get("tag"))
    return new


def scaled_specs(recipe: Recipe, scale: str) -> dict[str, RunSpec]:
    """The specs trained at `scale`.

    Args:
        recipe: The recipe.
        scale: PAPER_SCALE, LAPTOP_SCALE (its ResNet-20 / CIFAR-10 runs) or TINY_SCALE (the recipe's
            `tiny.only` runs, each mapped to its digits stand-in).

    Returns:
        Paper run id -> the spec trained for it.

    Raises:
        UserError: The recipe has no run at laptop scale, or two tiny stand-ins share an id with different
            settings.
    """
    specs = recipe_runs(recipe)
    if scale == PAPER_SCALE:
        return specs
    if scale == LAPTOP_SCALE:
        kept = {pid: s for pid, s in specs.items() if s["teacher"] in LAPTOP_TEACHERS}
        if not kept:
            raise UserError(
                f"recipe {recipe['name']} has no {' or '.join(LAPTOP_TEACHERS)} run: --scale laptop covers "
                f"ResNet-20 on CIFAR-10 only (use --scale tiny)"
            )
        return kept
    keep = recipe.get("tiny", {}).get("only")
    out: dict[str, RunSpec] = {}
    by_id: dict[str, RunSpec] = {}
    for pid, spec in specs.items():
        if keep and not any(fnmatch.fnmatchcase(pid, pat) for pat in keep):
            continue
        t = tiny_spec(spec, recipe)
        other = by_id.get(t["id"])
        if other is not None and (other["overrides"] != t["overrides"] or other["probes"] != t["probes"]):
            raise UserError(
                f"recipe {recipe['name']}: tiny runs {pid} and another map to {t['id']} with different settings"
            )
        by_id[t["id"]] = t
        out[pid] = t
    return out
