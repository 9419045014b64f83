"""The `zsq-probe` command line.  Each subcommand parses its flags and calls one library function;
bad input (UserError) becomes one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import json
import sys

from zsq_probe.errors import UserError

_COMMAND_MODULES = ("zsq_probe.cli_train", "zsq_probe.cli_analysis", "zsq_probe.cli_figures")
COMMANDS: dict[str, tuple] = {}  # name -> (add_arguments, run, help)


def command(name: str, help: str):
    def register(fn):
        COMMANDS[name] = (getattr(fn, "arguments", lambda p: None), fn, help)
        return fn

    return register


def arguments(add):
    def attach(fn):
        fn.arguments = add
        return fn

    return attach


def _teacher_args(p, data=True):
    p.add_argument("--teacher", default="digits",
                   help="pytorchcv model name (resnet20_cifar10, resnet18, ...) or 'digits' (embedded default)")
    p.add_argument("--weights", help="explicit teacher weights file (.pth state dict)")
    p.add_argument("--weights-root", help="pytorchcv weight cache folder (default ~/.torch/models)")
    p.add_argument("--download", action="store_true", help="allow downloading missing weights / data")
    if data:
        p.add_argument("--data", help="data set: digits, cifar10, cifar100, imagenet (default: the teacher's)")
        p.add_argument("--data-root", help="folder holding the data set in its usual on-disk format")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")


# ---------------------------------------------------------------- eval
@command("eval", "FP and quantised top-1 of a teacher (activation ranges calibrated on real batches)")
@arguments(lambda p: (
    _teacher_args(p),
    p.add_argument("--w-bits", type=int, default=4),
    p.add_argument("--a-bits", type=int, default=4),
    p.add_argument("--calib-batches", type=int, default=4, help="train batches used to calibrate activation ranges"),
    p.add_argument("--batch-size", type=int, default=200),
    p.add_argument("--max-batches", type=int, default=0, help="evaluate only this many test batches (0 = all)"),
    p.add_argument("--json", action="store_true", help="print one JSON object"),
))
def cmd_eval(args) -> int:
    from zsq_probe.evaluate import evaluate_quantized
    for flag, bits in (("--w-bits", args.w_bits), ("--a-bits", args.a_bits)):
        if not 2 <= bits <= 8:
            raise UserError(f"{flag} must be 2..8, got {bits}")
    if args.calib_batches < 1:
        raise UserError(f"--calib-batches must be >= 1, got {args.calib_batches}")
    r = evaluate_quantized(args.teacher, weights=args.weights, weights_root=args.weights_root, data=args.data,
                           data_root=args.data_root, w_bits=args.w_bits, a_bits=args.a_bits,
                           calib_batches=args.calib_batches, batch_size=args.batch_size,
                           max_batches=args.max_batches, device=args.device, download=args.download)
    if r.get("warning"):
        print(f"warning: {r['warning']}", file=sys.stderr)
    if args.json:
        print(json.dumps(r, indent=None, sort_keys=True))
        return 0
    spec = r["quantization"]
    print(f"teacher   {r['teacher']}  ({r['weights_source']}: {r['weights_path'] or '-'})")
    print(f"data      {r['data']} test split")
    print(f"{'model':<22}{'top-1':>8}{'CE':>9}")
    print(f"{'full precision':<22}{100 * r['fp_top1']:>7.2f}%{r['fp_ce']:>9.4f}")
    label = "quantised {}w{}a".format(r["w_bits"], r["a_bits"])
    print(f"{label:<22}{100 * r['quant_top1']:>7.2f}%{r['quant_ce']:>9.4f}")
    not_q = [k.replace("_", " ") for k, v in spec["not_quantized"].items() if v and not k.startswith("other_")]
    print(f"quantisation: {spec['scheme']}; {spec['quantized_layer_count']} Conv/Linear layers "
          f"(first {spec['first_quantized_layer']}, last {spec['last_quantized_layer']}); "
          f"not quantised: {', '.join(not_q)}")
    return 0


# ---------------------------------------------------------------- presets
@command("presets", "list the training presets (the paper's rows) with their settings")
@arguments(lambda p: (
    p.add_argument("--data", default="cifar10", help="show the settings resolved for this data set"),
    p.add_argument("--json", action="store_true"),
))
def cmd_presets(args) -> int:
    from zsq_probe.config import PRESETS, preset_overrides

    table = {name: {"help": PRESETS[name].get("help", ""), **preset_overrides(name, args.data)} for name in PRESETS}
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    print(f"presets (settings resolved for --data {args.data}; override any field with --set key=value)")
    for name, spec in table.items():
        print(f"\n{name:<16}{spec.pop('help')}")
        print("    " + ", ".join(f"{k}={v}" for k, v in spec.items() if k != "method"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from zsq_probe import __version__

    parser = argparse.ArgumentParser(
        prog="zsq-probe",
        description="Loss-surface diagnostics for zero-shot quantization (AIT / GDFQ): train, probe, plot.")
    parser.add_argument("--version", action="version", version=f"zsq-probe {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (add, _, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        add(p)
    return parser


def main(argv=None) -> int:
    import importlib

    for module in _COMMAND_MODULES:  # subcommands living elsewhere register themselves on import
        importlib.import_module(module)

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command][1](args) or 0
    except UserError as e:
        print(f"zsq-probe {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"zsq-probe {args.command}: interrupted", file=sys.stderr)
        return 130
