"""`zsq-probe presets`: the training presets (the paper's rows) with their settings for a data set, and where
each value comes from (the paper table or the reference script; the data is `zsq_probe.presets`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from zsq_probe.cli.common import add_output_args
from zsq_probe.presets import PRESETS, preset_overrides

HELP = "list the training presets (the paper's rows) with their settings and where each comes from"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `presets` command."""
    p = subparsers.add_parser("presets", help=HELP, description=HELP)
    p.add_argument("--data", default="cifar10", help="show the settings resolved for this data set")
    p.add_argument(
        "--json",
        action="store_true",
        help="print {preset: {help, <flat key>: value, ..., sources: {key: source}, per_teacher}}",
    )
    # like every command; `presets` computes nothing, so only the bound is checked (zsq_probe.cli.common)
    add_output_args(p, threads=True, threads_help="accepted like every command's (presets computes nothing)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print the presets with the settings each resolves to for --data (a table, or JSON); exit status 0."""
    table: dict[str, dict[str, Any]] = {}
    for name, preset in PRESETS.items():
        entry: dict[str, Any] = {"help": preset.help, **preset_overrides(name, args.data)}  # JSON: values and more
        entry["sources"] = preset.resolve_sources(args.data)
        if preset.per_teacher:
            entry["per_teacher"] = {
                t: {"values": v, "sources": preset.teacher_sources()[t]} for t, v in preset.per_teacher.items()
            }
        table[name] = entry
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    print(
        f"presets (settings resolved for --data {args.data}; override any field with --set key=value;\n"
        f"[source] = the paper table or reference file each value comes from; docs/reference-parity.md)"
    )
    for name, spec in table.items():
        print(f"\n{name:<16}{spec['help']}")
        for k, v in spec.items():
            if k in ("help", "method", "sources", "per_teacher"):
                continue
            print(f"    {k}={v}  [{spec['sources'][k]}]")
        for teacher, tv in spec.get("per_teacher", {}).items():
            print(
                f"    teacher {teacher}: " + ", ".join(f"{k}={v} [{tv['sources'][k]}]" for k, v in tv["values"].items())
            )
    return 0
