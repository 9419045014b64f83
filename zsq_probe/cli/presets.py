"""`zsq-probe presets`: the training presets (the paper's rows) with their settings for a data set."""

from __future__ import annotations

import json

HELP = "list the training presets (the paper's rows) with their settings"


def register(subparsers) -> None:
    p = subparsers.add_parser("presets", help=HELP, description=HELP)
    p.add_argument("--data", default="cifar10", help="show the settings resolved for this data set")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=run)


def run(args) -> int:
    from zsq_probe.presets import PRESETS, preset_overrides

    table = {name: {"help": PRESETS[name].help, **preset_overrides(name, args.data)} for name in PRESETS}
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    print(f"presets (settings resolved for --data {args.data}; override any field with --set key=value)")
    for name, spec in table.items():
        print(f"\n{name:<16}{spec.pop('help')}")
        print("    " + ", ".join(f"{k}={v}" for k, v in spec.items() if k != "method"))
    return 0
