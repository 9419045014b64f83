"""`zsq-probe eval`: full-precision and quantised top-1 of a teacher."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from typing import Any

from zsq_probe.cli.common import DEFAULT_TEACHER, add_output_args, add_teacher_args
from zsq_probe.config import MAX_BATCH_SIZE
from zsq_probe.errors import UserError

HELP = "FP and quantised top-1 of a teacher (activation ranges calibrated on real batches)"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `eval` command."""
    p = subparsers.add_parser("eval", help=HELP, description=HELP)
    add_teacher_args(p)
    p.add_argument("--w-bits", type=int, default=4, help="weight bits, 2..8 (default 4)")
    p.add_argument("--a-bits", type=int, default=4, help="activation bits, 2..8 (default 4)")
    p.add_argument("--calib-batches", type=int, default=4, help="train batches used to calibrate activation ranges")
    p.add_argument("--batch-size", type=int, default=200, help="images per evaluation batch (default 200)")
    p.add_argument("--max-batches", type=int, default=0, help="evaluate only this many test batches (0 = all)")
    p.add_argument(
        "--normalization",
        default="reference",
        metavar="{reference,pytorchcv}",
        help="CIFAR normalisation: 'reference' (the AIT/GDFQ code's statistics, the paper's protocol; "
        "default) or 'pytorchcv' (imgclsmob's, under which pytorchcv publishes its accuracies)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_output_args(p, threads=True)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Check the flags, evaluate the teacher in full precision and quantised, print the result; exit status 0."""
    from zsq_probe.threads import torch_threads  # loads when the command runs (zsq_probe.cli)

    for flag, bits in (("--w-bits", args.w_bits), ("--a-bits", args.a_bits)):
        if not 2 <= bits <= 8:
            raise UserError(f"{flag} must be 2..8, got {bits}")
    if args.calib_batches < 1:
        raise UserError(f"--calib-batches must be >= 1, got {args.calib_batches}")
    if args.max_batches < 0:
        raise UserError(f"--max-batches must be >= 0 (0: every test batch), got {args.max_batches}")
    if not 1 <= args.batch_size <= MAX_BATCH_SIZE:
        raise UserError(f"--batch-size must be 1..{MAX_BATCH_SIZE}, got {args.batch_size}")
    with torch_threads(args.threads):
        r = _evaluate(args)
    if r.get("warning"):
        print(f"warning: {r['warning']}", file=sys.stderr)
    if args.json:
        print(json.dumps(r, indent=None, sort_keys=True))
        return 0
    print(report(r))
    return 0


def _evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """evaluate_quantized on the flags' teacher and settings."""
    from zsq_probe.teachers.accuracy import evaluate_quantized  # loads when the command runs (zsq_probe.cli)

    return evaluate_quantized(
        args.teacher or DEFAULT_TEACHER,
        weights=args.weights,
        weights_root=args.weights_root,
        data=args.data,
        data_root=args.data_root,
        w_bits=args.w_bits,
        a_bits=args.a_bits,
        calib_batches=args.calib_batches,
        batch_size=args.batch_size,
        max_batches=args.max_batches,
        device=args.device,
        download=args.download,
        normalization=args.normalization,
    )


def report(r: Mapping[str, Any]) -> str:
    """The human-readable table of an evaluate_quantized result.

    Args:
        r: what `zsq_probe.teachers.accuracy.evaluate_quantized` returns.

    Returns:
        The table, as lines of text.
    """
    spec = r["quantization"]
    label = "quantised {}w{}a".format(r["w_bits"], r["a_bits"])
    not_q = [k.replace("_", " ") for k, v in spec["not_quantized"].items() if v and not k.startswith("other_")]
    release = f", release {r['weights_release']}" if r.get("weights_release") else ""
    paper = r.get("paper_weights_file")
    paper_note = ""
    if paper:
        paper_note = "  (the AIT paper's file)" if paper == r.get("weights_file") else f"  (the AIT paper used {paper})"
    compared = ""
    if r.get("compared_top1") is not None:
        compared = f"; expected {r['compared_top1']:.2f}% {r['compared_with']}"
    fmt = ", ".join
    norm = r["normalization"] if r["data"] in ("cifar10", "cifar100") else "fixed (both options agree)"
    return "\n".join(
        [
            f"teacher   {r['teacher']}  ({r['weights_source']}: {r['weights_path'] or '-'}{release}){paper_note}",
            f"data      {r['data']} test split, normalisation {norm} (mean "
            f"{fmt(f'{v:g}' for v in r['normalization_mean'])}; std {fmt(f'{v:g}' for v in r['normalization_std'])})"
            f"{compared}",
            f"{'model':<22}{'top-1':>8}{'CE':>9}",
            f"{'full precision':<22}{100 * r['fp_top1']:>7.2f}%{r['fp_ce']:>9.4f}",
            f"{label:<22}{100 * r['quant_top1']:>7.2f}%{r['quant_ce']:>9.4f}",
            f"quantisation: {spec['scheme']}; {spec['quantized_layer_count']} Conv/Linear layers "
            f"(first {spec['first_quantized_layer']}, last {spec['last_quantized_layer']}); "
            f"not quantised: {', '.join(not_q)}",
        ]
    )
