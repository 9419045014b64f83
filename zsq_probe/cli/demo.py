"""`zsq-probe demo`: the paper's story end to end on the embedded digits default (`zsq_probe.runs.demo`)."""

from __future__ import annotations

import argparse

from zsq_probe.cli.common import add_output_args, show_progress
from zsq_probe.errors import UserError

HELP = (
    "the whole story on the embedded digits default: teacher, KD/GDFQ/KL-only/AIT runs with every "
    "probe, every figure, the four findings as measured"
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `demo` command."""
    p = subparsers.add_parser("demo", help=HELP, description=HELP)
    p.add_argument(
        "--out",
        default="zsq-probe-demo",
        help="output folder (runs/, figures/, FINDINGS.md); an interrupted demo resumes there",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of every demo run (default 0)")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field of every demo run"
    )
    p.add_argument(
        "--scale",
        default="digits",
        choices=["digits", "laptop"],
        help="digits: the embedded default (nothing downloaded); laptop: real CIFAR-10 from --data-root with a "
        "trained resnet20_cifar10 (--weights FILE or pytorchcv's cache), presets.LAPTOP_SCALE_SETTINGS "
        "(docs/real-data.md)",
    )
    p.add_argument("--data-root", help="--scale laptop: the folder holding cifar-10-batches-py/")
    p.add_argument("--weights", help="--scale laptop: the teacher's weights file (a state dict)")
    p.add_argument("--weights-root", help="--scale laptop: pytorchcv's weight cache (default ~/.torch/models)")
    p.add_argument(
        "--width",
        default="text",
        choices=["column", "text"],
        help="figure width: column (3.3 in) or text (7 in, default)",
    )
    add_output_args(p, threads=True)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo into --out; exit status 0."""
    from zsq_probe.runs.demo import DIGITS, laptop_scale, run_demo  # loads when the command runs (zsq_probe.cli)
    from zsq_probe.threads import torch_threads  # loads when the command runs (zsq_probe.cli)

    if args.scale == "digits" and (args.data_root or args.weights or args.weights_root):
        raise UserError("--data-root, --weights and --weights-root are for --scale laptop (digits is embedded)")
    scale = laptop_scale(args.data_root, args.weights, args.weights_root) if args.scale == "laptop" else DIGITS

    with torch_threads(args.threads):  # every run records the count in its config.json
        run_demo(
            args.out,
            device=args.device,
            seed=args.seed,
            overrides=args.set,
            progress=show_progress(args),
            width=args.width,
            scale=scale,
        )
    return 0
